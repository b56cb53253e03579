"""What changed between two versions of a notebook, cell by cell, for the history routes: nbdime's
alignment of the cell lists, corrected by cell id (which the shared document keeps stable), so
that a removal and an addition of one id are one moved cell. nbdime (heavy) is imported lazily.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["added", "removed", "moved", "modified", "unchanged"]


@dataclass
class _Pair:
    old: int | None
    new: int | None
    moved: bool = False


def _text(value: Any) -> str:
    """A source or text field as one string (nbformat allows a list of lines)."""
    if isinstance(value, list):
        return "".join(str(part) for part in value)
    return value if isinstance(value, str) else ""


def _cell_id(cell: Any) -> str | None:
    value = cell.get("id") if isinstance(cell, dict) else None
    return value if isinstance(value, str) and value else None


def _normalised(notebook: dict[str, Any]) -> Any:
    """The notebook as nbdime reads it: a ``NotebookNode`` with every multiline string joined."""
    import nbformat
    from nbformat.v4.rwbase import rejoin_lines

    return rejoin_lines(nbformat.from_dict(notebook))


def _aligned(old: Any, new: Any) -> list[_Pair]:
    """nbdime's alignment of the two cell lists, in order: pairs (matched), removals, additions."""
    from nbdime import diff_notebooks

    ops: list[Any] = []
    for entry in diff_notebooks(old, new):
        if entry["op"] == "patch" and entry["key"] == "cells":
            ops = list(entry["diff"])
    pairs: list[_Pair] = []
    a = b = 0
    for op in ops:
        while a < op["key"]:
            pairs.append(_Pair(a, b))
            a, b = a + 1, b + 1
        if op["op"] == "addrange":
            for _ in op["valuelist"]:
                pairs.append(_Pair(None, b))
                b += 1
        elif op["op"] == "removerange":
            for _ in range(op["length"]):
                pairs.append(_Pair(a, None))
                a += 1
        else:  # patch: the same cell, changed
            pairs.append(_Pair(a, b))
            a, b = a + 1, b + 1
    while a < len(old.cells):
        pairs.append(_Pair(a, b))
        a, b = a + 1, b + 1
    return pairs


def _by_id(pairs: list[_Pair], old: list[Any], new: list[Any]) -> list[_Pair]:
    """Correct an alignment by cell id: split pairs of different ids, join a removal and an
    addition of one id into a moved cell (where it is now)."""
    split: list[_Pair] = []
    for pair in pairs:
        if (pair.old is not None and pair.new is not None
                and _cell_id(old[pair.old]) != _cell_id(new[pair.new])):  # fmt: skip
            split += [_Pair(pair.old, None), _Pair(None, pair.new)]
        else:
            split.append(pair)
    removed: dict[str | None, _Pair] = {}
    for pair in split:
        if pair.new is None and pair.old is not None:
            removed.setdefault(_cell_id(old[pair.old]), pair)
    removed.pop(None, None)  # a cell without an id is never one moved
    joined: list[_Pair] = []
    gone: set[int] = set()
    for pair in split:
        if pair.old is None and pair.new is not None:
            match = removed.pop(_cell_id(new[pair.new]), None)
            if match is not None:
                gone.add(id(match))
                joined.append(_Pair(match.old, pair.new, moved=True))
                continue
        joined.append(pair)
    return [pair for pair in joined if id(pair) not in gone]


def _source_diff(old: str, new: str) -> str:
    """A unified diff of two sources, without its file header."""
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=3)
    return "\n".join(line for i, line in enumerate(lines) if i >= 2)


def summarise(
    old_notebook: dict[str, Any], new_notebook: dict[str, Any], *, compare_outputs: bool = True
) -> list[dict[str, Any]]:
    """Each cell of either version, in the new version's order (removed cells where they
    were): ``{id, status, source_changed, outputs_changed, old_index, new_index,
    source_diff?}``. ``compare_outputs`` false (a version whose outputs were not kept): no
    cell's outputs count as changed."""
    from nbdime.diffing.notebooks import diff_item_at_path

    old, new = _normalised(old_notebook), _normalised(new_notebook)
    old_cells, new_cells = list(old.cells), list(new.cells)
    summary: list[dict[str, Any]] = []
    for pair in _by_id(_aligned(old, new), old_cells, new_cells):
        before = old_cells[pair.old] if pair.old is not None else None
        after = new_cells[pair.new] if pair.new is not None else None
        old_source = _text(before.get("source")) if before is not None else ""
        new_source = _text(after.get("source")) if after is not None else ""
        source_changed = old_source != new_source
        outputs_changed = False
        other_changed = False
        if before is not None and after is not None:
            keys = {entry["key"] for entry in diff_item_at_path(before, after, "/cells/*")}
            outputs_changed = compare_outputs and "outputs" in keys
            other_changed = bool(keys & {"cell_type", "attachments"})
        status: Status
        if before is None:
            status = "added"
        elif after is None:
            status = "removed"
        elif pair.moved:
            status = "moved"
        elif source_changed or outputs_changed or other_changed:
            status = "modified"
        else:
            status = "unchanged"
        entry: dict[str, Any] = {
            "id": _cell_id(after if after is not None else before),
            "status": status,
            "source_changed": source_changed,
            "outputs_changed": outputs_changed,
            "old_index": pair.old,
            "new_index": pair.new,
        }
        if source_changed:
            entry["source_diff"] = _source_diff(old_source, new_source)
        summary.append(entry)
    return summary
