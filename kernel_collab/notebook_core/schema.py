"""The notebook schema peers must keep, checked on the cells a peer's update touched (why a broken
cell is repaired: docs/architecture.md, "Who owns which field of the document"). Pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pycrdt import Array, ArrayEvent, Map, Text

from .cells import new_cell_id

CELL_TYPES = frozenset({"code", "markdown", "raw"})


def touched_cells(events: Iterable[Any]) -> set[int]:
    """Indices (after the transaction) of the cells whose shape a transaction may have changed:
    inserted cells, cells whose keys were set, cells whose outputs changed. Edits inside a
    source or metadata cannot break the schema and cost nothing here."""
    touched: set[int] = set()
    for event in events:
        path = list(event.path)
        if path:
            if isinstance(path[0], int) and (len(path) == 1 or path[1] == "outputs"):
                touched.add(path[0])
        elif isinstance(event, ArrayEvent):
            touched |= inserted_indices(event)
    return touched


def inserted_indices(event: Any) -> set[int]:
    """Indices (after the transaction) of the items an array event inserted."""
    inserted: set[int] = set()
    index = 0
    for op in getattr(event, "delta", ()):
        if "retain" in op:
            index += int(op["retain"])
        elif "insert" in op:
            count = len(op["insert"])
            inserted.update(range(index, index + count))
            index += count
    return inserted


def _output_problem(output: Any) -> str | None:
    value = output.to_py() if isinstance(output, Map) else output
    if not isinstance(value, dict) or not isinstance(value.get("output_type"), str):
        return "an output must be a map with an output_type"
    return None


def cell_problem(cell: Any) -> str | None:
    """What is wrong with a cell of the shared notebook, or ``None``."""
    if not isinstance(cell, Map):
        return f"a cell must be a map, not {type(cell).__name__}"
    cell_id, cell_type = cell.get("id"), cell.get("cell_type")
    if not isinstance(cell_id, str) or not cell_id:
        return "a cell needs a non-empty string id"
    if cell_type not in CELL_TYPES:
        return f"cell {cell_id}: cell_type {cell_type!r} is not one of {sorted(CELL_TYPES)}"
    if not isinstance(cell.get("source"), Text):
        return f"cell {cell_id}: source must be shared text"
    if not isinstance(cell.get("metadata"), Map):
        return f"cell {cell_id}: metadata must be a map"
    if cell_type == "code":
        outputs, count = cell.get("outputs"), cell.get("execution_count")
        if not isinstance(outputs, Array):
            return f"cell {cell_id}: outputs must be a list"
        for output in outputs:
            problem = _output_problem(output)
            if problem:
                return f"cell {cell_id}: {problem}"
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int | float) or count < 0
            or int(count) != count
        ):
            return f"cell {cell_id}: execution_count must be a non-negative integer or null"
    return None


def repaired(cell: Any) -> dict[str, Any] | None:
    """A valid version of a broken cell (its id, type, text and metadata where they are
    usable), or ``None`` when nothing of it is (then it is deleted)."""
    if not isinstance(cell, Map):
        return None
    raw = cell.to_py() or {}
    cell_id = raw.get("id") if isinstance(raw.get("id"), str) and raw.get("id") else None
    cell_type = raw.get("cell_type") if raw.get("cell_type") in CELL_TYPES else "code"
    source = raw.get("source")
    fixed: dict[str, Any] = {
        "id": cell_id or new_cell_id(),
        "cell_type": cell_type,
        "source": source if isinstance(source, str) else "",
        "metadata": raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {},
    }
    if cell_type == "code":
        outputs = raw.get("outputs")
        fixed["outputs"] = [o for o in outputs if _output_problem(o) is None] if isinstance(
            outputs, list) else []  # fmt: skip
        fixed["execution_count"] = None
    return fixed
