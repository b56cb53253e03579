"""Three-way merge of a notebook: ``base`` (the file as last read or written by the sidecar),
``disk`` (the file now) and ``live`` (the shared document now). Pure: no I/O.

The rules are those of docs/architecture.md ("The file on disk"); the finer points: cells
matched by content take the base (= live) id; "same position" is between the base cells of the
nearest matched neighbours, else the same index; similarity is by line, else by character; a
base without ids (an old file as read) is matched to the live cells the same way; when only the
disk reordered, live-only cells go after their live predecessor.

Merged cells always carry ids (the live ones), also for nbformat < 4.5, so the result can be
applied to the shared document; whoever writes the file strips them for old formats. Nested
values (metadata values, outputs) are shared with the inputs: treat the result as read-only.
"""

from __future__ import annotations

import difflib
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, Literal

import merge3

from ..protocol import METADATA_KEY
from .cells import Cell, new_cell_id, normalise

Notebook = dict[str, Any]

SIMILARITY: Final = 0.6
"""Minimum difflib ratio for two cells at the same position to count as one cell."""

_WINDOW: Final = 8
"""How many free ref cells after the previous matched one are tried for a similar match."""

_CHAR_RATIO_LIMIT: Final = 4000
"""Above this many characters (both cells), similarity is measured by line only."""

class _Missing(Enum):
    MISSING = "missing"


MISSING: Final = _Missing.MISSING
"""Stands for an absent field or key in a three-way comparison."""


@dataclass(frozen=True, slots=True)
class Conflict:
    """Both sides changed a cell's source on the same lines; the disk's text was taken."""

    cell_id: str
    live_source: str
    disk_source: str


@dataclass(frozen=True, slots=True)
class MergeResult:
    """The merged notebook, its conflicts, and what changed relative to the live document."""

    notebook: Notebook
    conflicts: list[Conflict] = field(default_factory=list)
    added: int = 0
    """Cells not in the live document (added on disk, or restored)."""
    deleted: int = 0
    """Live cells removed (deleted on disk, unchanged live)."""
    changed: int = 0
    """Live cells whose content the merge changed."""
    moved: int = 0
    """Live cells whose relative order the merge changed."""
    kept_live: int = 0
    """Cells deleted on disk but kept because they were changed live."""
    restored: int = 0
    """Cells deleted live but re-inserted because they were changed on disk."""
    order: Literal["live", "disk"] = "live"
    """Whose cell order the merge followed."""

    def summary(self) -> str:
        """One line for the log."""
        return (
            f"added={self.added} deleted={self.deleted} changed={self.changed} "
            f"moved={self.moved} kept_live={self.kept_live} restored={self.restored} "
            f"conflicts={len(self.conflicts)} order={self.order}"
        )


@dataclass(slots=True)
class _Tally:
    conflicts: list[Conflict] = field(default_factory=list)
    kept_live: int = 0
    restored: int = 0


def three_way_merge(
    base: Notebook,
    disk: Notebook,
    live: Notebook,
    *,
    new_id: Callable[[], str] = new_cell_id,
) -> MergeResult:
    """Merge ``disk`` and ``live`` against their common ancestor ``base`` (see module doc).
    ``new_id`` makes ids for cells that have none (or a duplicate one)."""
    (base_ids, base_cells), (disk_ids, disk_cells), (live_ids, live_cells) = _identify(
        base, disk, live, new_id
    )
    live_by = dict(zip(live_ids, live_cells, strict=True))
    tally = _Tally()
    merged = _merge_cells(
        dict(zip(base_ids, base_cells, strict=True)),
        dict(zip(disk_ids, disk_cells, strict=True)),
        live_by,
        tally,
    )
    order, order_source = _order(base_ids, disk_ids, live_ids, merged)
    notebook: Notebook = {
        "cells": [{"id": cid, **merged[cid]} for cid in order],
        "metadata": _merge_dict(
            _dict(base.get("metadata")), _dict(disk.get("metadata")), _dict(live.get("metadata"))
        ),
        "nbformat": disk.get("nbformat", live.get("nbformat", 4)),
        "nbformat_minor": disk.get("nbformat_minor", live.get("nbformat_minor", 5)),
    }
    return MergeResult(
        notebook=notebook,
        conflicts=tally.conflicts,
        added=sum(1 for cid in order if cid not in live_by),
        deleted=sum(1 for cid in live_ids if cid not in merged),
        changed=sum(1 for cid, cell in merged.items() if cid in live_by and live_by[cid] != cell),
        moved=_count_moved(order, live_ids),
        kept_live=tally.kept_live,
        restored=tally.restored,
        order=order_source,
    )


_Side = tuple[list[str], list[Cell]]


def _identify(
    base: Notebook, disk: Notebook, live: Notebook, new_id: Callable[[], str]
) -> tuple[_Side, _Side, _Side]:
    """Each side's normalised cells and their ids in one id space: live ids as they are,
    base cells matched to live cells, disk cells matched to base (or live) cells."""
    live_given, live_cells = _cells(live)
    live_ids = _assign_ids(live_given, [None] * len(live_cells), set(), new_id)
    base_given, base_cells = _cells(base)
    taken = set(live_ids)
    base_match = _align(live_cells, live_ids, base_given, base_cells, taken)
    base_ids = _assign_ids(base_given, base_match, taken, new_id)
    disk_given, disk_cells = _cells(disk)
    taken |= set(base_ids)
    disk_match = _align(base_cells, base_ids, disk_given, disk_cells, taken)
    disk_ids = _assign_ids(disk_given, disk_match, taken, new_id)
    return (base_ids, base_cells), (disk_ids, disk_cells), (live_ids, live_cells)


# --- normalisation and ids -------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _cells(notebook: Notebook) -> tuple[list[str | None], list[Cell]]:
    """The cells' given ids (None if absent) and the cells normalised, without ids."""
    raw = notebook.get("cells") or []
    given = [cell.get("id") or None for cell in raw]
    return [g if isinstance(g, str) else None for g in given], [_normalise(c) for c in raw]


def _normalise(cell: Mapping[str, Any]) -> Cell:
    """A shallow copy without ``id``/``execution_state``, with nbformat defaults explicit."""
    return {k: v for k, v in normalise(cell).items() if k not in ("id", "execution_state")}


def _assign_ids(
    given: Sequence[str | None],
    matched: Sequence[str | None],
    taken: set[str],
    new_id: Callable[[], str],
) -> list[str]:
    """Matched cells take their match's id; others keep their own if free, else a new one."""
    taken = taken | {m for m in matched if m is not None}
    ids: list[str] = []
    for own, match in zip(given, matched, strict=True):
        if match is None:
            match = own if own is not None and own not in taken else _fresh_id(new_id, taken)
            taken.add(match)
        ids.append(match)
    return ids


def _fresh_id(new_id: Callable[[], str], taken: set[str]) -> str:
    cid = new_id()
    while cid in taken:
        cid = new_id()
    return cid


# --- matching cells without usable ids --------------------------------------------------


def _align(
    ref: Sequence[Cell],
    ref_ids: Sequence[str],
    given: Sequence[str | None],
    cells: Sequence[Cell],
    known: set[str],
) -> list[str | None]:
    """For each cell, the id of the cell it is: its own if ``known``, else a content match
    among the ``ref`` cells not matched by id (None: no match)."""
    matched: list[str | None] = [None] * len(cells)
    used: set[str] = set()
    for j, own in enumerate(given):
        if own is not None and own in known and own not in used:
            matched[j] = own
            used.add(own)
    free = {i for i, rid in enumerate(ref_ids) if rid not in used}
    if free and None in matched:
        _match_by_content(ref, ref_ids, cells, matched, free)
    return matched


def _match_by_content(
    ref: Sequence[Cell],
    ref_ids: Sequence[str],
    cells: Sequence[Cell],
    matched: list[str | None],
    free: set[int],
) -> None:
    """Fill ``matched`` in three passes over the unmatched cells (see module doc)."""

    def take(j: int, i: int) -> None:
        matched[j] = ref_ids[i]
        free.discard(i)

    pending = [j for j, m in enumerate(matched) if m is None]
    for j in pending:
        if j in free and ref[j]["source"] == cells[j]["source"]:
            take(j, j)
    by_source: dict[str, list[int]] = {}
    for i in sorted(free, reverse=True):
        by_source.setdefault(ref[i]["source"], []).append(i)
    for j in pending:
        candidates = by_source.get(cells[j]["source"])
        if matched[j] is None and candidates:
            take(j, candidates.pop())
    # Similar cells at the same position: a free ref cell between the ref cells of the nearest
    # matched neighbours (so insertions do not shift it), else the same index.
    ref_pos = {rid: i for i, rid in enumerate(ref_ids)}
    positions = [ref_pos.get(m) if m is not None else None for m in matched]
    next_at = [len(ref)] * (len(cells) + 1)
    for j in range(len(cells) - 1, -1, -1):
        at = positions[j]
        next_at[j] = at if at is not None else next_at[j + 1]
    previous = -1
    for j, cell in enumerate(cells):
        if matched[j] is None:
            window = range(previous + 1, min(next_at[j], previous + 1 + _WINDOW))
            for i in dict.fromkeys([*window, j]):
                if i in free and _similar(ref[i], cell):
                    take(j, i)
                    positions[j] = i
                    break
        at = positions[j]
        previous = at if at is not None else previous


def _similar(a: Cell, b: Cell) -> bool:
    """Same cell type and a difflib ratio >= :data:`SIMILARITY`, by line (cheap) or else,
    for text that is not too long, by character."""
    if a["cell_type"] != b["cell_type"]:
        return False
    x, y = a["source"], b["source"]
    if _ratio_reaches(x.splitlines(True), y.splitlines(True)):
        return True
    return len(x) + len(y) <= _CHAR_RATIO_LIMIT and _ratio_reaches(x, y)


def _ratio_reaches(x: Sequence[str], y: Sequence[str]) -> bool:
    matcher = difflib.SequenceMatcher(None, x, y)
    return (
        matcher.real_quick_ratio() >= SIMILARITY
        and matcher.quick_ratio() >= SIMILARITY
        and matcher.ratio() >= SIMILARITY
    )


# --- merging cell contents --------------------------------------------------------------


def _merge_cells(
    base: dict[str, Cell], disk: dict[str, Cell], live: dict[str, Cell], tally: _Tally
) -> dict[str, Cell]:
    """Merged cells (without ids) by id; cells deleted by the merge are absent."""
    merged: dict[str, Cell] = {}
    for cid in dict.fromkeys([*live, *disk, *base]):
        cell = _merge_cell(cid, base.get(cid), disk.get(cid), live.get(cid), tally)
        if cell is not None:
            merged[cid] = cell
    return merged


def _merge_cell(
    cid: str, base: Cell | None, disk: Cell | None, live: Cell | None, tally: _Tally
) -> Cell | None:
    if live is None:
        if disk is None or disk == base:
            return None
        if base is not None:
            tally.restored += 1
        return disk
    if disk is None:
        if base is not None and live == base:
            return None
        if base is not None:
            tally.kept_live += 1
        return live
    if disk in (live, base):
        return live
    if live == base:
        return disk
    return _merge_fields(cid, base or {}, disk, live, tally)


def _merge_fields(cid: str, base: Cell, disk: Cell, live: Cell, tally: _Tally) -> Cell:
    """Merge a cell changed on both sides, field by field."""
    out: Cell = {}
    for key in dict.fromkeys([*disk, *live, *base]):
        if key in ("source", "metadata", "outputs", "execution_count"):
            continue
        _put(out, key, _pick_key(key, base, disk, live))
    out["metadata"] = _merge_dict(base.get("metadata", {}), disk["metadata"], live["metadata"])
    outputs = _pick(_run(base), _run(disk), _run(live), prefer_live=True)
    if outputs is not MISSING:
        _put(out, "outputs", outputs[0])
        _put(out, "execution_count", outputs[1])
    text, clash = _merge_text(base.get("source", ""), disk["source"], live["source"])
    out["source"] = text
    if clash:
        tally.conflicts.append(Conflict(cid, live["source"], disk["source"]))
        out["metadata"] = _with_conflict(out["metadata"], live["source"])
    return _fit_cell_type(out)


def _run(cell: Cell) -> tuple[Any, Any] | _Missing:
    """A code cell's outputs and execution count, which merge as one unit."""
    if "outputs" not in cell and "execution_count" not in cell:
        return MISSING
    return cell.get("outputs", MISSING), cell.get("execution_count", MISSING)


def _put(out: Cell, key: str, value: Any) -> None:
    if value is not MISSING:
        out[key] = value


def _pick(base: Any, disk: Any, live: Any, *, prefer_live: bool = False) -> Any:
    """Three-way pick of one value: the side that changed it wins; on a clash, disk wins
    unless ``prefer_live``."""
    if disk == live or live == base:
        return disk
    if disk == base:
        return live
    return live if prefer_live else disk


def _pick_key(
    key: str, base: Mapping[str, Any], disk: Mapping[str, Any], live: Mapping[str, Any]
) -> Any:
    return _pick(base.get(key, MISSING), disk.get(key, MISSING), live.get(key, MISSING))


def _merge_dict(
    base: Mapping[str, Any], disk: Mapping[str, Any], live: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge per top-level key; disk wins a both-changed key."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys([*disk, *live]):
        _put(out, key, _pick_key(key, base, disk, live))
    return out


def _merge_text(base: str, disk: str, live: str) -> tuple[str, bool]:
    """diff3 by lines; on a clash return the disk's text and True."""
    if base in (disk, live) or disk == live:
        return _pick(base, disk, live), False
    lines = (base.splitlines(True), disk.splitlines(True), live.splitlines(True))
    parts: list[str] = []
    for region in merge3.Merge3(*lines).merge_regions():
        if region[0] == "conflict":
            return disk, True
        source = {"unchanged": lines[0], "a": lines[1], "same": lines[1], "b": lines[2]}
        parts.extend(source[region[0]][region[1] : region[2]])
    return "".join(parts), False


def _with_conflict(metadata: dict[str, Any], live_source: str) -> dict[str, Any]:
    own = _dict(metadata.get(METADATA_KEY))
    own["merge_conflict"] = {"live_source": live_source}
    return {**metadata, METADATA_KEY: own}


def _fit_cell_type(cell: Cell) -> Cell:
    """Drop or add the fields the merged cell type does (not) have."""
    if cell.get("cell_type") == "code":
        cell.setdefault("outputs", [])
        cell.setdefault("execution_count", None)
        cell.pop("attachments", None)
    else:
        cell.pop("outputs", None)
        cell.pop("execution_count", None)
    return cell


# --- order ------------------------------------------------------------------------------


def _order(
    base: Sequence[str], disk: Sequence[str], live: Sequence[str], keep: Mapping[str, Cell]
) -> tuple[list[str], Literal["live", "disk"]]:
    """The merged cell order and whose order it follows (see module doc)."""
    if _reordered(base, disk) and not _reordered(base, live):
        return _weave(disk, live, keep), "disk"
    return _weave(live, disk, keep), "live"


def _reordered(base: Sequence[str], side: Sequence[str]) -> bool:
    """Whether ``side`` changed the relative order of the cells it shares with ``base``."""
    base_set, side_set = set(base), set(side)
    return [c for c in base if c in side_set] != [c for c in side if c in base_set]


def _weave(primary: Sequence[str], secondary: Sequence[str], keep: Mapping[str, Cell]) -> list[str]:
    """``primary`` order, with kept cells only in ``secondary`` placed after their nearest
    preceding ``secondary`` cell that is also in the result."""
    in_primary = set(primary)
    after: dict[str | None, list[str]] = {}
    anchor: str | None = None
    for cid in secondary:
        if cid not in keep:
            continue
        if cid in in_primary:
            anchor = cid
        else:
            after.setdefault(anchor, []).append(cid)
    order = list(after.get(None, []))
    for cid in primary:
        if cid in keep:
            order.append(cid)
            order.extend(after.get(cid, []))
    return order


def _count_moved(order: Sequence[str], live: Sequence[str]) -> int:
    """How many live cells changed relative order (those off a longest stable run)."""
    position = {cid: i for i, cid in enumerate(order)}
    kept = [position[cid] for cid in live if cid in position]
    return len(kept) - len(increasing_subsequence(kept))


def increasing_subsequence(values: Sequence[int]) -> list[int]:
    """Indices into ``values`` of a longest strictly increasing subsequence, O(n log n)."""
    tail_values: list[int] = []  # tail_values[k]: smallest last value of a run of length k+1
    tails: list[int] = []  # the index of that value
    previous = [-1] * len(values)
    for i, value in enumerate(values):
        k = bisect_left(tail_values, value)
        if k > 0:
            previous[i] = tails[k - 1]
        if k == len(tails):
            tail_values.append(value)
            tails.append(i)
        else:
            tail_values[k] = value
            tails[k] = i
    run: list[int] = []
    i = tails[-1] if tails else -1
    while i != -1:
        run.append(i)
        i = previous[i]
    return run[::-1]


# --- what a merge brought in from the file --------------------------------------------------


def _by_id(nb: Notebook) -> dict[str, Cell]:
    return {c["id"]: c for c in nb.get("cells", []) if isinstance(c.get("id"), str)}


def changed_outputs(live: Notebook, merged: Notebook) -> set[str]:
    """Ids of the cells whose outputs the merge changed (they came from the file)."""
    before = _by_id(live)
    return {
        cell_id for cell_id, cell in _by_id(merged).items()
        if cell.get("outputs") and cell.get("outputs") != before.get(cell_id, {}).get("outputs")
    }  # fmt: skip


def mark_file_run_records(live: Notebook, merged: Notebook) -> Notebook:
    """``merged`` with run records that came from the file (not written by the sidecar)
    marked ``from_file``, so nobody reads an edited file's "ran by" as this room's record."""
    before = _by_id(live)
    cells = []
    for cell in merged.get("cells", []):
        own = (cell.get("metadata") or {}).get(METADATA_KEY)
        last = own.get("last_run") if isinstance(own, dict) else None
        live_cell = before.get(cell.get("id") or "") or {}
        live_own = (live_cell.get("metadata") or {}).get(METADATA_KEY)
        if isinstance(own, dict) and isinstance(last, dict) and not last.get("from_file") and (
            own != live_own
        ):
            own = {**own, "last_run": {**last, "from_file": True}}
            cell = {**cell, "metadata": {**(cell.get("metadata") or {}), METADATA_KEY: own}}
        cells.append(cell)
    return {**merged, "cells": cells}
