"""The ids of a shared notebook's cells, kept from the cells' deep events.

Reading every cell's id through pycrdt costs 20 to 50 µs a cell. Two things did that for each
change: the sidecar's check of each cell a peer inserts (appending 2,000 cells one at a
time: 9.9 s of the sidecar's 12), and finding a cell by id once cells had moved or been
deleted (moving 200 cells of 3,000, each then found by id: 54 ms a lookup). :class:`CellIds`
reads the ids when first asked, then follows each transaction's events at the cost of what
the transaction changed.

One per notebook (:func:`cell_ids`): it follows the cells by a deep observer of its own, or,
in the sidecar, by the room's one observer (:func:`feed_cell_ids`: pycrdt converts a
transaction's events anew for each deep observer).
"""

from __future__ import annotations

import json
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Final

from jupyter_ydoc import YNotebook
from pycrdt import Array, ArrayEvent, Map, MapEvent

Events = list[Any]

READ_AS_JSON_FROM: Final = 2_000
"""From this many cells, :func:`read_ids` reads the cells' JSON. pycrdt finds an array's item
by walking the array from its start, so reading each cell in turn is quadratic (cells of a
line each: 1,000 in 7.5 ms, 5,000 in 77 ms, 20,000 in 1.3 s; their JSON: 3.7, 33, 134 ms);
below this, the JSON of what the cells hold can cost more than the walk."""


def id_of(ycell: Any) -> str | None:
    """A cell's id (``None`` for something that is not a cell with a string id)."""
    cell_id = ycell.get("id") if isinstance(ycell, Map) else None
    return cell_id if isinstance(cell_id, str) else None


def read_ids(ycells: Array[Any]) -> list[str | None]:
    """Every cell's id, in order, read now (linear in the cells, however many). In the JSON a
    Y text holding an id reads as a string; :func:`id_of` says ``None`` for it."""
    if len(ycells) >= READ_AS_JSON_FROM:
        try:
            cells = json.loads(str(ycells))
        except ValueError:  # content JSON cannot carry (never seen): read each cell
            pass
        else:
            if isinstance(cells, list) and len(cells) == len(ycells):
                return [_json_id(cell) for cell in cells]
    return [id_of(ycell) for ycell in ycells]


def _json_id(cell: Any) -> str | None:
    cell_id = cell.get("id") if isinstance(cell, dict) else None
    return cell_id if isinstance(cell_id, str) else None


class CellIds:
    """The cells' ids in order, how many cells carry each id, and where each first is. Nothing
    is read until first asked; :meth:`follow` must then see every transaction's events."""

    def __init__(self, ycells: Array[Any]):
        self._cells = ycells
        self._ids: list[str | None] | None = None
        self._counts: Counter[str | None] = Counter()
        self._positions: dict[str | None, int] | None = None

    @property
    def ids(self) -> list[str | None]:
        """The ids, in the cells' order (``None`` where a cell has none)."""
        if self._ids is None:
            self._ids = read_ids(self._cells)
            self._counts = Counter(self._ids)
        return self._ids

    def count(self, cell_id: str) -> int:
        """How many cells carry ``cell_id``."""
        self.ids  # noqa: B018 - read on first use
        return self._counts[cell_id]

    @property
    def unique(self) -> bool:
        """Whether every cell has an id of its own (from the counts: no scan)."""
        ids = self.ids
        return None not in self._counts and len(self._counts) == len(ids)

    def position(self, cell_id: str) -> int | None:
        """The index of the first cell carrying ``cell_id``."""
        if self._positions is None:
            positions: dict[str | None, int] = {}
            for index, known in enumerate(self.ids):
                positions.setdefault(known, index)
            self._positions = positions
        return self._positions.get(cell_id)

    def reset(self) -> None:
        """Forget what was read (read again at the next question)."""
        self._ids, self._positions = None, None
        self._counts = Counter()

    def follow(self, events: Iterable[Any]) -> None:
        """One transaction's deep events on the cells: the array's own event first (its delta
        is from the state before), then id changes (their paths index the state after)."""
        if self._ids is None:
            return  # nothing read yet: the first question reads the cells as they are then
        try:
            self._follow(list(events))
        except (IndexError, KeyError, TypeError, ValueError):
            self.reset()  # never expected: read again at the next question, not guessed
            return
        if len(self._ids) != len(self._cells):
            self.reset()

    def _follow(self, events: list[Any]) -> None:
        for event in events:  # pycrdt sets an event's path and delta untyped
            if isinstance(event, ArrayEvent) and not list(getattr(event, "path", ())):
                self._splice(getattr(event, "delta", ()))
        for event in events:
            if not isinstance(event, MapEvent) or "id" not in getattr(event, "keys", {}):
                continue
            path = list(getattr(event, "path", ()))
            if len(path) == 1 and isinstance(path[0], int):
                self._set(path[0], id_of(self._cells[path[0]]))

    def _splice(self, delta: Iterable[dict[str, Any]]) -> None:
        ids = self.ids
        self._positions = None
        index = 0
        for op in delta:
            if "retain" in op:
                index += int(op["retain"])
            elif "delete" in op:
                end = index + int(op["delete"])
                for cell_id in ids[index:end]:
                    self._drop(cell_id)
                del ids[index:end]
            elif "insert" in op:
                added = [id_of(item) for item in op["insert"]]
                ids[index:index] = added
                self._counts.update(added)
                index += len(added)

    def _set(self, index: int, cell_id: str | None) -> None:
        ids = self.ids
        old = ids[index]
        if old != cell_id:
            self._positions = None
            self._drop(old)
            self._counts[cell_id] += 1
            ids[index] = cell_id

    def _drop(self, cell_id: str | None) -> None:
        left = self._counts[cell_id] - 1
        if left > 0:
            self._counts[cell_id] = left
        else:
            del self._counts[cell_id]  # ids of deleted cells are not kept


class _Following(CellIds):
    """A :class:`CellIds` with the deep observer that feeds it."""

    subscription: Any = None


_registry: weakref.WeakKeyDictionary[YNotebook, CellIds] = weakref.WeakKeyDictionary()


def cell_ids(notebook: YNotebook) -> CellIds:
    """The notebook's :class:`CellIds` (made on first use, following its cells by a deep
    observer, unless :func:`feed_cell_ids` made one first)."""
    found = _registry.get(notebook)
    if found is None:
        following = _Following(notebook.ycells)
        following.subscription = notebook.ycells.observe_deep(following.follow)
        _registry[notebook] = found = following
    return found


def feed_cell_ids(notebook: YNotebook,
                  subscribe: Callable[[Callable[[Events], None]], None]) -> CellIds:  # fmt: skip
    """Make the notebook's :class:`CellIds`, fed by ``subscribe`` (each transaction's deep
    events on the cells, before anything that asks it about that transaction)."""
    previous = _registry.get(notebook)
    if isinstance(previous, _Following) and previous.subscription is not None:
        notebook.ycells.unobserve(previous.subscription)  # one observer converting events
    ids = CellIds(notebook.ycells)
    subscribe(ids.follow)
    _registry[notebook] = ids
    return ids
