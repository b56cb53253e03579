"""The notebook API shared by code in the kernel and scripts outside it; how edits travel is the
:class:`Transport`'s business. (Not ``notebook.py``: importing that submodule would replace the
``kernel_collab.notebook()`` function.)"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from typing import Any, Protocol, overload

from jupyter_ydoc import YNotebook
from pycrdt import Map

from .notebook_core.cell_ids import read_ids
from .notebook_core.cells import cell_index, new_cell_id, set_text

CELL_TYPES = ("code", "markdown", "raw")


class Transport(Protocol):
    """What a :class:`Notebook` needs from its connection to the sidecar."""

    @property
    def ordered(self) -> bool:
        """Whether a request reaches the sidecar after the edits sent before it."""

    async def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send a kernel_collab request and return the reply (raising on ``ok: false``)."""

    def touched(self, cell_id: str) -> None:
        """Note the cell last touched (shown to others as this collaborator's position)."""

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, re-checking it as the document changes."""


class Cell:
    """One cell, found by id each time (it may move while you hold it)."""

    def __init__(self, notebook: Notebook, cell_id: str):
        self._notebook = notebook
        self.id = cell_id

    def __repr__(self) -> str:
        try:
            first = self.source.splitlines()[0] if self.source else ""
        except KeyError:
            return f"<Cell {self.id} (deleted)>"
        return f"<Cell {self.id} {self.cell_type} {first[:40]!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cell) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def _y(self) -> Map[Any]:
        return self._notebook._ycell(self.id)

    @property
    def index(self) -> int:
        """The cell's position now."""
        return self._notebook._index(self.id)

    @property
    def cell_type(self) -> str:
        """``code``, ``markdown`` or ``raw``."""
        return str(self._y["cell_type"])

    @property
    def source(self) -> str:
        """The cell's text; setting it edits the shared text minimally."""
        return str(self._y["source"])

    @source.setter
    def source(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"cell {self.id}: source must be a str, not {type(value).__name__}")
        set_text(self._y["source"], value)
        self._notebook._transport.touched(self.id)

    @property
    def metadata(self) -> MetadataView:
        """The cell's metadata, a dict-like view whose changes are shared."""
        return MetadataView(self)

    @metadata.setter
    def metadata(self, value: dict[str, Any]) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"cell {self.id}: metadata must be a dict")
        ymeta = self._y["metadata"]
        with self._notebook.transaction():
            for key in [k for k in ymeta if k not in value]:
                del ymeta[key]
            for key, item in value.items():
                ymeta[key] = item
        self._notebook._transport.touched(self.id)

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """The cell's outputs (read-only: only the kernel writes them)."""
        if self.cell_type != "code":
            return []
        return [dict(o) for o in self._notebook._ynb.get_cell(self.index).get("outputs", [])]

    @property
    def execution_count(self) -> int | None:
        """The cell's execution count (read-only)."""
        value = self._y.get("execution_count")
        return int(value) if value is not None else None

    @property
    def last_run(self) -> dict[str, Any] | None:
        """Who ran the cell last, when, with what result (``metadata.kernel_collab``)."""
        ours = self._y["metadata"].get("kernel_collab")
        return dict(ours.get("last_run") or {}) if isinstance(ours, dict) else None


class MetadataView(MutableMapping[str, Any]):
    """A cell's metadata; each change is a shared edit."""

    def __init__(self, cell: Cell):
        self._cell = cell

    def _map(self) -> Map[Any]:
        return self._cell._y["metadata"]  # type: ignore[no-any-return]

    def __getitem__(self, key: str) -> Any:
        ymap = self._map()
        if key not in ymap:
            raise KeyError(key)
        value = ymap[key]
        return value.to_py() if hasattr(value, "to_py") else value

    def __setitem__(self, key: str, value: Any) -> None:
        self._map()[key] = value
        self._cell._notebook._transport.touched(self._cell.id)

    def __delitem__(self, key: str) -> None:
        del self._map()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._map().keys()))

    def __len__(self) -> int:
        return len(self._map())

    def __repr__(self) -> str:
        return repr(dict(self))


class CellList(Sequence[Cell]):
    """The notebook's cells, in order, as they are now."""

    def __init__(self, notebook: Notebook):
        self._notebook = notebook

    def __len__(self) -> int:
        return len(self._notebook._ynb.ycells)

    @overload
    def __getitem__(self, index: int) -> Cell: ...
    @overload
    def __getitem__(self, index: slice) -> list[Cell]: ...
    def __getitem__(self, index: int | slice) -> Cell | list[Cell]:
        ycells = self._notebook._ynb.ycells
        if isinstance(index, slice):
            return [Cell(self._notebook, str(cell_id)) for cell_id in read_ids(ycells)[index]]
        count = len(ycells)
        if not -count <= index < count:
            raise IndexError(f"cell index {index} out of range: the notebook has {count} cells")
        return Cell(self._notebook, str(ycells[index].get("id")))

    def __iter__(self) -> Iterator[Cell]:
        """The cells as they are now (one read of the document, linear in its cells)."""
        return iter([Cell(self._notebook, str(cell_id))
                     for cell_id in read_ids(self._notebook._ynb.ycells)])  # fmt: skip

    def __repr__(self) -> str:
        return repr(list(self))


class RunHandle:
    """A queued run of a cell; :meth:`wait` returns its outputs."""

    def __init__(self, notebook: Notebook, cell: Cell, asked_at: float, position: int,
                 number: int | None = None):
        self.notebook = notebook
        self.cell = cell
        self.asked_at = asked_at
        self.position = position
        self.number = number
        """The run's number among the cell's runs (``last_run.n``; None from a sidecar that
        does not number runs)."""

    @property
    def done(self) -> bool:
        """Whether the run has finished (or was cancelled)."""
        return self._ended() or self._cancelled()

    @property
    def status(self) -> str | None:
        """``ok``, ``error``, ``cancelled``… once done."""
        if self._ended():
            return (self.cell.last_run or {}).get("status")
        return "cancelled" if self._cancelled() else None

    async def wait(self) -> list[dict[str, Any]]:
        """Wait until the run ends and return the cell's outputs."""
        await self.notebook._transport.wait_for(lambda: self.done)
        return self.cell.outputs

    def _ended(self) -> bool:
        run = self.cell.last_run or {}
        if self.number is None:  # an older sidecar: by time (its clock may differ by ~1 s)
            return bool(run.get("end")) and float(run.get("start") or 0) >= self.asked_at - 1
        number = run.get("n")
        if not isinstance(number, int | float) or number < self.number:
            return False  # not started yet
        return number > self.number or bool(run.get("end"))  # later runs: this one is over

    def _cancelled(self) -> bool:
        status = self.notebook.status.get("cancelled") or []
        if self.number is not None:
            return any(c.get("cell_id") == self.cell.id and c.get("n") == self.number
                       for c in status)  # fmt: skip
        return any(c.get("cell_id") == self.cell.id and c.get("at", 0) >= self.asked_at - 1
                   for c in status)  # fmt: skip


class Notebook:
    """A shared notebook: read and edit cells, and ask for them to run."""

    calling_cell_id: str | None = None
    """In the kernel: the cell whose code makes the requests (for attribution)."""

    def __init__(self, ynotebook: YNotebook, transport: Transport):
        self._ynb = ynotebook
        self._transport = transport
        self.cells = CellList(self)

    # -- internals ---------------------------------------------------------------------------

    def _ycell(self, cell_id: str) -> Map[Any]:
        return self._ynb.ycells[self._index(cell_id)]  # type: ignore[no-any-return]

    def _index(self, cell_id: str) -> int:
        index = cell_index(self._ynb, cell_id)
        if index is None:
            raise KeyError(f"cell {cell_id} is not in the notebook (deleted?)")
        return index

    def _cell(self, cell: Cell | int | str) -> Cell:
        if isinstance(cell, int):
            return self.cells[cell]
        if isinstance(cell, str):
            cell = Cell(self, cell)
        if not isinstance(cell, Cell):
            raise TypeError(f"expected a Cell, an index or a cell id, not {type(cell).__name__}")
        self._index(cell.id)  # KeyError if it is gone
        return cell

    # -- reading -----------------------------------------------------------------------------

    @property
    def status(self) -> dict[str, Any]:
        """kernel_collab's state: kernel status, queue, autosave, errors…"""
        value = self._ynb.ystate.get("kernel_collab")
        result: dict[str, Any] = value.to_py() if value is not None else {}
        return result

    @property
    def path(self) -> str | None:
        """The notebook's path relative to the server root."""
        value = self._ynb.ystate.get("path")
        return str(value) if value is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The notebook as nbformat JSON."""
        result: dict[str, Any] = self._ynb.get()
        return result

    # -- editing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group edits: everyone receives them as one update."""
        with self._ynb.ydoc.transaction():
            yield

    def insert_cell(self, index: int, source: str = "", cell_type: str = "code",
                    metadata: dict[str, Any] | None = None) -> Cell:
        """Insert a cell at ``index`` (like ``list.insert``) and return it."""
        if not isinstance(source, str):
            raise TypeError(f"source must be a str, not {type(source).__name__}")
        if cell_type not in CELL_TYPES:
            raise ValueError(f"cell_type must be one of {CELL_TYPES}, not {cell_type!r}")
        if not isinstance(index, int):
            raise TypeError("index must be an int")
        count = len(self.cells)
        position = max(0, min(count, index if index >= 0 else count + index))
        cell: dict[str, Any] = {"id": new_cell_id(), "cell_type": cell_type,
                                "source": source, "metadata": metadata or {}}  # fmt: skip
        if cell_type == "code":
            cell.update(outputs=[], execution_count=None)
        self._ynb.ycells.insert(position, self._ynb.create_ycell(cell))
        self._transport.touched(cell["id"])
        return Cell(self, cell["id"])

    def append_cell(self, source: str = "", cell_type: str = "code",
                    metadata: dict[str, Any] | None = None) -> Cell:
        """Add a cell at the end and return it."""
        return self.insert_cell(len(self.cells), source, cell_type, metadata)

    def delete_cell(self, cell: Cell | int | str) -> None:
        """Delete a cell (a :class:`Cell`, an index or an id)."""
        target = self._cell(cell)
        del self._ynb.ycells[target.index]

    def move_cell(self, cell: Cell | int | str, index: int) -> None:
        """Move a cell to ``index`` (delete and re-create: what yjs 13 clients understand)."""
        target = self._cell(cell)
        count = len(self.cells)
        if not -count <= index < count:
            raise IndexError(f"cannot move cell {target.id} to {index}: {count} cells")
        index = index % count
        old = target.index
        if old == index:
            return
        with self.transaction():
            content = self._ynb.get_cell(old)
            content["id"] = target.id
            del self._ynb.ycells[old]
            self._ynb.ycells.insert(index, self._ynb.create_ycell(content))
        self._transport.touched(target.id)

    # -- running -----------------------------------------------------------------------------

    async def run_async(self, cell: Cell | int | str) -> RunHandle:
        """Queue a code cell on the kernel's shared queue; return a handle to wait on."""
        target = self._cell(cell)
        if target.cell_type != "code":
            raise ValueError(f"cell {target.id} is a {target.cell_type} cell: only code runs")
        asked = time.time()
        self._transport.touched(target.id)  # others see which cell this client runs
        if not self._transport.ordered:
            await self.sync()  # the sidecar must have the cell's current source
        request: dict[str, Any] = {"type": "execute", "cell_id": target.id}
        if self.calling_cell_id is not None:
            request["as_cell"] = self.calling_cell_id  # attributed to whoever ran that cell
        reply = await self._transport.request(request)
        number = reply.get("n")
        return RunHandle(self, target, asked, int(reply.get("position", 0)),
                         int(number) if isinstance(number, int) else None)

    async def sync(self) -> None:
        """Wait until the sidecar has stored every edit made here so far."""
        await self._transport.request({"type": "sync"})

    # -- history -----------------------------------------------------------------------------

    async def history(self) -> list[dict[str, Any]]:
        """The notebook's versions, oldest first: ``version``, ``at``, ``kind``, ``authors``
        (who, by connection), ``label``, ``pinned``, ``outputs_dropped``."""
        await self.sync()
        return list((await self._transport.request({"type": "history"}))["versions"])

    async def version(self, number: int) -> dict[str, Any]:
        """One earlier version of the notebook, as an nbformat 4 dict."""
        reply = await self._transport.request({"type": "history_get", "version": number})
        return dict(reply["notebook"])

    async def restore(self, number: int) -> int:
        """Make the cells what they were in version ``number`` (a new edit everyone sees);
        returns the new version's number."""
        await self.sync()
        return int((await self._transport.request({"type": "restore", "version": number}))
                   ["version"])  # fmt: skip
