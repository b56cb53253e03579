"""Make a live :class:`jupyter_ydoc.YNotebook` equal to a notebook dict with minimal Y edits.

Remote cursors and concurrent typing survive because nothing unchanged is recreated:
cells are matched by id; an unchanged cell is not touched; a changed source gets minimal
text edits (line diff, refined to characters, at UTF-8 byte offsets as pycrdt's Text
wants); metadata maps are updated per key; outputs are replaced only from the first output
that differs. Cells that changed type, and moved cells (those off a longest run of cells
kept in order), are deleted and recreated: yjs 13 in the browser cannot read pycrdt's move.
The ``state`` map is never touched.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from jupyter_ydoc import YNotebook
from pycrdt import Array, Map, Text

from .merge import increasing_subsequence

Cell = dict[str, Any]

_REFINE_LIMIT: Final = 2000
"""Changed line blocks up to this many characters (both sides) are diffed by character."""

_OWN_KEYS: Final = frozenset({"id", "source", "metadata", "outputs", "execution_state"})
"""Cell keys handled specifically; ``execution_state`` belongs to the kernel side."""


@dataclass(frozen=True, slots=True)
class ApplyStats:
    """What :func:`apply_notebook` did."""

    inserted: int = 0
    """New cells created."""
    deleted: int = 0
    """Cells removed."""
    moved: int = 0
    """Cells deleted and recreated at another position."""
    recreated: int = 0
    """Cells recreated in place because their type changed."""
    updated: int = 0
    """Cells edited in place."""
    notebook_changed: bool = False
    """Whether nbformat, nbformat_minor or notebook metadata changed."""

    @property
    def changed(self) -> bool:
        """Whether the document was edited at all."""
        return (
            bool(self.inserted or self.deleted or self.moved or self.recreated or self.updated)
            or self.notebook_changed
        )


def apply_notebook(ynb: YNotebook, target: Mapping[str, Any]) -> ApplyStats:
    """Edit ``ynb`` in one transaction so that ``ynb.get()`` equals ``target``."""
    with ynb.ydoc.transaction():
        notebook_changed = _apply_meta(ynb.ydoc.get("meta", type=Map), target)
        cells = [_prepare(cell) for cell in target.get("cells") or []]
        return _apply_cells(ynb, cells, notebook_changed)


# --- notebook metadata ------------------------------------------------------------------


def _apply_meta(ymeta: Map[Any], target: Mapping[str, Any]) -> bool:
    changed = False
    for key in ("nbformat", "nbformat_minor"):
        if key in target and ymeta.get(key) != target[key]:
            ymeta[key] = target[key]
            changed = True
    metadata = dict(target.get("metadata") or {})
    ymetadata = ymeta.get("metadata")
    if isinstance(ymetadata, Map):
        return _update_map(ymetadata, metadata) or changed
    ymeta["metadata"] = Map(metadata)
    return True


def _update_map(
    ymap: Map[Any], target: Mapping[str, Any], current: Mapping[str, Any] | None = None
) -> bool:
    """Set the keys whose value differs and delete the keys not in ``target``."""
    if current is None:
        current = ymap.to_py() or {}
    changed = False
    for key in [key for key in current if key not in target]:
        del ymap[key]
        changed = True
    for key, value in target.items():
        if key not in current or not same_json(current[key], value):
            ymap[key] = value
            changed = True
    return changed


def same_json(a: Any, b: Any) -> bool:
    """JSON equality: numbers compare by value (Yjs stores them as floats), but a bool is
    not a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# --- cells ------------------------------------------------------------------------------


def _prepare(cell: Mapping[str, Any]) -> Cell:
    """A copy with a str source and the fields ``YNotebook.get()`` would show."""
    out = dict(cell)
    source = out.get("source", "")
    out["source"] = "".join(source) if isinstance(source, list) else str(source)
    out["metadata"] = dict(out.get("metadata") or {})
    if out.get("cell_type") == "code":
        out["outputs"] = [_prepare_output(o) for o in out.get("outputs") or []]
        out.setdefault("execution_count", None)
    elif "attachments" in out and not out["attachments"]:
        del out["attachments"]
    return out


def _prepare_output(output: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(output)
    if out.get("output_type") == "stream" and isinstance(out.get("text"), list):
        out["text"] = "".join(out["text"])
    return out


@dataclass(frozen=True, slots=True)
class _Plan:
    """Which live cells stay where they are (by live index), and the counts of the rest."""

    kept: frozenset[int]
    moved: int
    recreated: int


def _apply_cells(ynb: YNotebook, cells: list[Cell], notebook_changed: bool) -> ApplyStats:
    ycells: Array[Map[Any]] = ynb.ycells
    target_index = _index_by_id(cells)
    ylist = list(ycells)
    live = [(ycell.get("id"), ycell.get("cell_type")) for ycell in ylist]
    plan = _plan(live, cells, target_index)
    _delete_except(ycells, plan.kept)
    kept = {live[i][0]: ylist[i] for i in plan.kept}
    inserted = updated = 0
    for index, cell in enumerate(cells):
        ycell = kept.get(cell.get("id"))
        if ycell is not None:
            updated += _update_cell(ycell, cell)
        else:
            ycells.insert(index, ynb.create_ycell(cell))
            inserted += 1
    rebuilt = plan.moved + plan.recreated
    return ApplyStats(
        inserted=inserted - rebuilt,
        deleted=len(live) - len(plan.kept) - rebuilt,
        moved=plan.moved,
        recreated=plan.recreated,
        updated=updated,
        notebook_changed=notebook_changed,
    )


def _index_by_id(cells: list[Cell]) -> dict[str, int]:
    """Target index by id; a repeated id is dropped so that the cell gets a fresh one."""
    index: dict[str, int] = {}
    for i, cell in enumerate(cells):
        cid = cell.get("id")
        if isinstance(cid, str) and cid not in index:
            index[cid] = i
        else:
            cell.pop("id", None)
    return index


def _plan(
    live: Sequence[tuple[Any, Any]], cells: Sequence[Cell], target_index: Mapping[str, int]
) -> _Plan:
    """Keep the live cells of unchanged type that form a longest run in target order."""
    candidates: list[tuple[int, int]] = []  # (live index, target index)
    seen: set[str] = set()
    recreated = 0
    for live_index, (cid, cell_type) in enumerate(live):
        if not isinstance(cid, str) or cid not in target_index or cid in seen:
            continue  # gone, or a duplicate id in the document: deleted
        seen.add(cid)
        if cells[target_index[cid]].get("cell_type") == cell_type:
            candidates.append((live_index, target_index[cid]))
        else:
            recreated += 1
    run = increasing_subsequence([t for _, t in candidates])
    kept = frozenset(candidates[i][0] for i in run)
    return _Plan(kept=kept, moved=len(candidates) - len(run), recreated=recreated)


def _delete_except(ycells: Array[Map[Any]], kept: frozenset[int]) -> None:
    """Delete every cell whose index is not in ``kept``, a contiguous run at a time."""
    end = len(ycells)
    while end > 0:
        if end - 1 in kept:
            end -= 1
            continue
        start = end - 1
        while start > 0 and start - 1 not in kept:
            start -= 1
        del ycells[start:end]
        end = start


def _update_cell(ycell: Map[Any], cell: Cell) -> bool:
    """Edit a kept cell of the same type in place; return whether anything changed."""
    current = ycell.to_py() or {}
    current.pop("execution_state", None)
    if same_json(current, cell):
        return False
    if current.get("source") != cell["source"]:
        _update_source(ycell, cell["source"])
    ymetadata = ycell.get("metadata")
    if isinstance(ymetadata, Map):
        _update_map(ymetadata, cell["metadata"], current.get("metadata") or {})
    else:
        ycell["metadata"] = Map(cell["metadata"])
    if "outputs" in cell:
        _update_outputs(ycell, cell["outputs"], current.get("outputs"))
    _update_other_keys(ycell, cell, current)
    return True


def _update_source(ycell: Map[Any], source: str) -> None:
    ytext = ycell.get("source")
    if isinstance(ytext, Text):
        set_text(ytext, source)
    else:
        ycell["source"] = Text(source)


def _update_outputs(ycell: Map[Any], outputs: Sequence[dict[str, Any]], current: Any) -> None:
    """Keep the outputs both sides share as a prefix; replace the rest."""
    youtputs = ycell.get("outputs")
    if not isinstance(youtputs, Array) or not isinstance(current, list):
        ycell["outputs"] = Array(_youtputs(outputs))
        return
    keep = 0
    while keep < min(len(current), len(outputs)) and same_json(current[keep], outputs[keep]):
        keep += 1
    if keep < len(current):
        del youtputs[keep:]
    if keep < len(outputs):
        youtputs.extend(_youtputs(outputs[keep:]))


def _youtputs(outputs: Sequence[Mapping[str, Any]]) -> list[Map[Any]]:
    """Outputs as Y maps; a stream's text is a Y text, as ``YNotebook.create_ycell`` does."""
    youtputs: list[Map[Any]] = []
    for output in outputs:
        out = dict(output)
        if out.get("output_type") == "stream":
            text = out.get("text", "")
            out["text"] = Text(text if isinstance(text, str) else "".join(text))
        youtputs.append(Map(out))
    return youtputs


def _update_other_keys(ycell: Map[Any], cell: Cell, current: Mapping[str, Any]) -> None:
    """``execution_count``, ``cell_type``, ``attachments`` and any other plain field."""
    for key in set(current) - _OWN_KEYS - cell.keys():
        del ycell[key]
    for key, value in cell.items():
        if key not in _OWN_KEYS and (key not in current or not same_json(current[key], value)):
            ycell[key] = value


# --- text -------------------------------------------------------------------------------


def set_text(ytext: Text, new: str) -> bool:
    """Edit ``ytext`` into ``new`` with minimal inserts and deletes; return whether it
    changed. pycrdt indexes Text by UTF-8 byte, so positions are tracked in bytes."""
    old = str(ytext)
    if old == new:
        return False
    position = 0
    for tag, i1, i2, j1, j2 in text_opcodes(old, new):
        if tag == "equal":
            position += _nbytes(old[i1:i2])
            continue
        if i2 > i1:
            del ytext[position : position + _nbytes(old[i1:i2])]
        if j2 > j1:
            ytext.insert(position, new[j1:j2])
            position += _nbytes(new[j1:j2])
    return True


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


Opcode = tuple[str, int, int, int, int]


def text_opcodes(old: str, new: str) -> Iterator[Opcode]:
    """difflib-style opcodes (in ``str`` indices) turning ``old`` into ``new``: common prefix
    and suffix, then a line diff whose small changed blocks are refined by character."""
    prefix = _common_prefix(old, new)
    suffix = _common_suffix(old, new, min(len(old), len(new)) - prefix)
    if prefix:
        yield "equal", 0, prefix, 0, prefix
    yield from _middle_opcodes(
        old[prefix : len(old) - suffix], new[prefix : len(new) - suffix], prefix
    )
    if suffix:
        yield "equal", len(old) - suffix, len(old), len(new) - suffix, len(new)


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix, by binary search over C-speed slice comparisons."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


def _common_suffix(a: str, b: str, limit: int) -> int:
    """Length of the common suffix, at most ``limit``."""
    low, high = 0, limit
    while low < high:
        mid = (low + high + 1) // 2
        if a[len(a) - mid :] == b[len(b) - mid :]:
            low = mid
        else:
            high = mid - 1
    return low


def _middle_opcodes(old: str, new: str, offset: int) -> Iterator[Opcode]:
    old_lines, new_lines = old.splitlines(True), new.splitlines(True)
    old_at, new_at = _starts(old_lines), _starts(new_lines)
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        a1, a2, b1, b2 = old_at[i1], old_at[i2], new_at[j1], new_at[j2]
        if tag == "replace" and (a2 - a1) + (b2 - b1) <= _REFINE_LIMIT:
            chars = difflib.SequenceMatcher(None, old[a1:a2], new[b1:b2], autojunk=False)
            for op, c1, c2, d1, d2 in chars.get_opcodes():
                yield op, offset + a1 + c1, offset + a1 + c2, offset + b1 + d1, offset + b1 + d2
        else:
            yield tag, offset + a1, offset + a2, offset + b1, offset + b2


def _starts(lines: Sequence[str]) -> list[int]:
    """Character offset of each line start, plus the total length."""
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    return starts
