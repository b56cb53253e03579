"""What a save reads from the live document, made incremental: the notebook as jupyter_ydoc's
``get()`` returns it, converting only the cells that changed since the last save, and its
saved bytes, rendering only those cells (``notebook_core.saved_form``). ``get()`` converts
every cell on the event loop (about 50 ms for 1,000 cells, at every autosave); the document
itself says which cells changed."""

from __future__ import annotations

from typing import Any

from jupyter_ydoc import YNotebook
from jupyter_ydoc.utils import cast_all
from pycrdt import Map

from ..notebook_core.saved_form import SavedForm


class SaveSource:
    """The notebook's content and saved form, kept by cell id between saves."""

    def __init__(self, notebook: YNotebook) -> None:
        self.notebook = notebook
        self._meta = notebook.ydoc.get("meta", type=Map)
        self._form = SavedForm()
        self._cells: dict[str, dict[str, Any]] = {}
        self._stale: set[str] | None = None
        """Cells changed since the last :meth:`snapshot` (``None``: any may have)."""
        self._unrendered: set[str] | None = None
        """Cells changed since the last render (``None``: any may have)."""
        self._order: list[str] | None = None
        """The cells' ids in order, while no cell was added, removed, moved or re-keyed."""
        notebook.ycells.observe_deep(self._on_cells_change)

    def _on_cells_change(self, events: list[Any]) -> None:
        if self._stale is None and self._unrendered is None:
            return
        ycells = self.notebook.ycells
        ids: list[str] = []
        for event in events:
            path = event.path
            if len(path) < 2:  # the list, or a cell's own keys (its id among them)
                self._order = None
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

    def _content(self) -> dict[str, Any]:
        stale, self._stale = self._stale, set()
        ycells = self.notebook.ycells
        ids = self._order
        if ids is None and stale is not None:
            ids = [ycell.get("id") for ycell in ycells]
        if stale is None or ids is None or not _unique_ids(ids):
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
        if self._order is None:
            self._cells = {cid: self._cells[cid] for cid in ids}
            self._order = ids
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


def _unique_ids(ids: list[Any]) -> bool:
    return all(isinstance(cid, str) for cid in ids) and len(set(ids)) == len(ids)
