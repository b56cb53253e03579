"""What a save reads from the live document, made incremental: the notebook as jupyter_ydoc's
``get()`` returns it, converting only the cells that changed since the last save, and its
saved bytes, rendering only those cells (``notebook_core.saved_form``). ``get()`` converts
every cell on the event loop (about 50 ms for 1,000 cells, at every autosave); the document
itself says which cells changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.lowlevel
from jupyter_ydoc import YNotebook
from jupyter_ydoc.utils import cast_all
from pycrdt import Map

from ..notebook_core.cell_ids import cell_ids
from ..notebook_core.saved_form import SavedForm
from .events import Listeners

CHUNK = 50
"""Cells a save converts between two turns of the event loop (a few milliseconds)."""


class SaveSource:
    """The notebook's content and saved form, kept by cell id between saves."""

    def __init__(self, notebook: YNotebook, on_change: Callable[[], None] | None = None,
                 changes: Listeners[list[Any]] | None = None) -> None:
        """``changes``: the cells' deep events as the room already observes them (``None``:
        observed here)."""
        self.notebook = notebook
        self._on_change = on_change
        """Told of each change to the cells (the save's own trigger: one deep observer of
        the cells for both, each costs about 10 µs a change)."""
        self._meta = notebook.ydoc.get("meta", type=Map)
        self._form = SavedForm()
        self._cells: dict[str, dict[str, Any]] = {}
        self._stale: set[str] | None = None
        """Cells changed since the last :meth:`snapshot` (``None``: any may have)."""
        self._unrendered: set[str] | None = None
        """Cells changed since the last render (``None``: any may have)."""
        if changes is not None:
            changes.subscribe(self._on_cells_change)
        else:
            notebook.ycells.observe_deep(self._on_cells_change)

    def _on_cells_change(self, events: list[Any]) -> None:
        if self._on_change is not None:
            self._on_change()
        if self._stale is None and self._unrendered is None:
            return
        ycells = self.notebook.ycells
        ids: list[str] = []
        for event in events:
            path = event.path
            if not path:  # the list itself: the cells it gained are new here
                cells = [c for d in event.delta for c in d.get("insert", ())]
            elif isinstance(path[0], int) and path[0] < len(ycells):
                cells = [ycells[path[0]]]
            else:
                cells = [None]
            for cell in cells:
                cid = cell.get("id") if isinstance(cell, Map) else None
                if not isinstance(cid, str):
                    self._stale = self._unrendered = None  # cannot tell which: all of them
                    return
                ids.append(cid)
        for changed in (self._stale, self._unrendered):
            if changed is not None:
                changed.update(ids)

    def snapshot(self) -> tuple[dict[str, Any], set[str] | None]:
        """The notebook now (as ``YNotebook.get()``; on the event loop), and the ids of the
        cells changed since the last render (``None``: any may have), for :meth:`render`."""
        nb = self._content()
        unrendered, self._unrendered = self._unrendered, set()
        return nb, unrendered

    async def snapshot_soon(self, chunk: int = CHUNK) -> tuple[dict[str, Any], set[str] | None]:
        """:meth:`snapshot`, converting the cells that changed ``chunk`` at a time with the
        event loop running in between (1,000 cells appended by an agent took 0.15 s at once):
        what changes meanwhile is converted again, and only the last few cells at the instant
        the snapshot is taken, so it is the document as it was at one instant."""
        rounds = None
        while (todo := self._unconverted()) is not None and len(todo) > chunk:
            rounds = 3 * len(todo) // chunk if rounds is None else rounds - 1
            if rounds <= 0:  # changes that name no cell keep coming: convert at once
                break
            for index, cid in todo[:chunk]:
                self._cells[cid] = self.notebook.get_cell(index)
                assert self._stale is not None
                self._stale.discard(cid)
            await anyio.lowlevel.checkpoint()
        return self.snapshot()

    def _unconverted(self) -> list[tuple[int, str]] | None:
        """The cells :meth:`snapshot` would convert now, by index and id (``None``: it would
        convert the whole notebook in one go: no ids to keep them by)."""
        ids = self._order()
        if ids is None:
            return None
        if self._stale is None:  # any cell may have changed: each is converted afresh
            self._stale = set(ids)
        stale = self._stale
        return [(i, cid) for i, cid in enumerate(ids) if cid in stale or cid not in self._cells]

    def _order(self) -> list[str] | None:
        """The cells' ids in order, as the notebook's :class:`CellIds` follows them; ``None``
        when some cell has no id or shares one."""
        ids = cell_ids(self.notebook)
        if not ids.unique:
            return None
        return [cid for cid in ids.ids if cid is not None]

    def _content(self) -> dict[str, Any]:
        stale, self._stale = self._stale, set()
        ids = self._order() if stale is not None else None
        if stale is None or ids is None:
            nb: dict[str, Any] = self.notebook.get()
            self._cells = {c["id"]: c for c in nb["cells"] if isinstance(c.get("id"), str)}
            if len(self._cells) != len(nb["cells"]):
                self._cells.clear()
                self._stale = None
            return nb
        meta = self._meta.to_py() or {}
        cast_all(meta, float, int)  # as jupyter_ydoc's get: Yjs numbers are floats
        if int(meta.get("nbformat", 0)) == 4 and int(meta.get("nbformat_minor", 0)) <= 4:
            self._stale = None  # those have no cell ids: jupyter_ydoc's get, whole
            return self._content()
        cells = []
        for index, cid in enumerate(ids):
            cell = self._cells.get(cid)
            if cell is None or cid in stale:
                cell = self._cells[cid] = self.notebook.get_cell(index)
            cells.append(cell)
        if len(self._cells) > len(ids):  # cells deleted or re-keyed: their copies go too
            self._cells = dict(zip(ids, cells, strict=True))
        return {"cells": cells, "metadata": meta.get("metadata", {}),
                "nbformat": int(meta.get("nbformat", 0)),
                "nbformat_minor": int(meta.get("nbformat_minor", 0))}  # fmt: skip

    def render(self, nb: dict[str, Any], unrendered: set[str] | None) -> bytes:
        """The saved bytes of a :meth:`snapshot` (validated; in a worker thread)."""
        try:
            return self._form.render(nb, unrendered)
        except BaseException:
            self._form.forget()
            self._unrendered = None
            raise
