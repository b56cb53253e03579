"""The ids of a shared notebook's cells, kept from the cells' deep events.

Reading every cell's id through pycrdt costs ~50 µs a cell; a check made for each inserted
cell that read them all made appending cells one at a time quadratic (2,000 cells: 9.9 s of
the sidecar's 12). :class:`CellIds` reads them once, then follows each transaction's events
at the cost of what the transaction changed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from pycrdt import Array, ArrayEvent, Map, MapEvent


def id_of(ycell: Any) -> str | None:
    """A cell's id (``None`` for something that is not a cell with a string id)."""
    cell_id = ycell.get("id") if isinstance(ycell, Map) else None
    return cell_id if isinstance(cell_id, str) else None


class CellIds:
    """The cells' ids in order, and how many cells carry each id."""

    def __init__(self, ycells: Array[Any]):
        self._cells = ycells
        self.ids: list[str | None] = [id_of(ycell) for ycell in ycells]
        self._counts: Counter[str | None] = Counter(self.ids)

    def count(self, cell_id: str) -> int:
        """How many cells carry ``cell_id``."""
        return self._counts[cell_id]

    def follow(self, events: Iterable[Any]) -> None:
        """One transaction's deep events on the cells: the array's own event first (its delta
        is from the state before), then id changes (their paths index the state after)."""
        events = list(events)
        for event in events:  # pycrdt sets an event's path and delta untyped
            if isinstance(event, ArrayEvent) and not list(getattr(event, "path", ())):
                self._splice(getattr(event, "delta", ()))
        for event in events:
            path = list(event.path)
            if (isinstance(event, MapEvent) and len(path) == 1 and isinstance(path[0], int)
                    and "id" in getattr(event, "keys", {})):  # fmt: skip
                self._set(path[0], id_of(self._cells[path[0]]))

    def _splice(self, delta: Iterable[dict[str, Any]]) -> None:
        index = 0
        for op in delta:
            if "retain" in op:
                index += int(op["retain"])
            elif "delete" in op:
                end = index + int(op["delete"])
                for cell_id in self.ids[index:end]:
                    self._drop(cell_id)
                del self.ids[index:end]
            elif "insert" in op:
                added = [id_of(item) for item in op["insert"]]
                self.ids[index:index] = added
                self._counts.update(added)
                index += len(added)

    def _set(self, index: int, cell_id: str | None) -> None:
        old = self.ids[index]
        if old != cell_id:
            self._drop(old)
            self._counts[cell_id] += 1
            self.ids[index] = cell_id

    def _drop(self, cell_id: str | None) -> None:
        left = self._counts[cell_id] - 1
        if left > 0:
            self._counts[cell_id] = left
        else:
            del self._counts[cell_id]  # ids of deleted cells are not kept
