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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from jupyter_ydoc import YNotebook
from pycrdt import Array, Map, Text

from .cells import Cell, normalise, set_text
from .merge import increasing_subsequence

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
    out = normalise(cell)
    if out["cell_type"] == "code":
        out["outputs"] = [_prepare_output(o) for o in out["outputs"]]
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
