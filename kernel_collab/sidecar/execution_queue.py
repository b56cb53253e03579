"""The kernel's one execution queue, kept in the document and written only by the sidecar
(docs/architecture.md, "Execution")."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskStatus
from pycrdt import Array, Map
from traitlets import Bool, Float, Int
from traitlets.config import LoggingConfigurable

from ..notebook_core.cell_ids import cell_ids
from ..notebook_core.cells import common_prefix, common_suffix, find_cell
from .bridge import KernelBridge, Run
from .peer import Peer
from .requests import RequestError, require
from .room import Room
from .run_record import last_run_number, record_end, record_start


@dataclass
class Entry:
    """A queued run request."""

    cell_id: str
    by: dict[str, Any]
    at: float
    number: int
    """The run's number among its cell's runs (``n`` in the queue, ``cancelled`` and the
    cell's ``last_run``): a client waits for its own run by it."""

    def as_dict(self) -> dict[str, Any]:
        """As written into the document (``dataclasses.asdict`` deep-copies field by field:
        about 8 ms for a 300-cell queue, blocking the loop at each publish)."""
        return {"cell_id": self.cell_id, "by": dict(self.by), "at": self.at, "n": self.number}


class ExecutionQueue(LoggingConfigurable):
    """Runs queued cells on the attached kernel, one at a time."""

    publish_interval = Float(
        0.05, help="Shortest time between two updates of the queue in the document."
    ).tag(config=True)
    send_ahead = Bool(
        True, help="Send the next queued cell to the kernel as soon as the running one "
        "replies ok, before its end is recorded, so the kernel does not wait for the sidecar "
        "between cells (it is marked running only when the cell before it ends).",
    ).tag(config=True)
    max_entries_per_person = Int(
        1000, help="Cells one person (or client) may have waiting in the queue at once."
    ).tag(config=True)

    def __init__(self, room: Room, bridge: KernelBridge, **kwargs: Any):
        super().__init__(**kwargs)
        self.room = room
        self.bridge = bridge
        self.entries: list[Entry] = []
        self._wake = anyio.Event()
        self._cells_changed = anyio.Event()
        self._queue_changed = anyio.Event()
        self._publish_due = False
        self._published: list[dict[str, Any]] = []
        """The queue as last written into the document (reading it back cost ~12 % of the
        sidecar's time while a 1,000-cell queue drained)."""
        self._current: Run | None = None
        """The run of the queue's cell now in the kernel."""
        self._ahead: tuple[Entry, Run, str] | None = None
        """The next entry, already sent to the kernel (:attr:`send_ahead`), with its source."""
        self._stopped = False
        self._numbers: dict[str, int] = {}
        """The number of each cell's latest queued run (see :attr:`Entry.number`)."""
        self._record_timing: dict[str, bool] = {}
        """Cells whose asker said whether to record ``metadata.execution`` timing."""
        room.notebook.ycells.observe(lambda _event: self._cells_changed.set())

    # -- requests ----------------------------------------------------------------------------

    async def handle_execute(self, peer: Peer, request: dict[str, Any]) -> dict[str, Any]:
        require(peer, "execute", "run cells here")
        cell_id = request.get("cell_id")
        if not isinstance(cell_id, str):
            raise RequestError("execute needs a cell_id (string)")
        by = peer.public_identity
        as_cell = request.get("as_cell")
        if isinstance(as_cell, str) and peer.identity.get("anonymous"):
            # Code running in the kernel asks on behalf of whoever ran its cell.
            caller = find_cell(self.room.notebook, as_cell)
            ours = caller["metadata"].get("kernel_collab") if caller is not None else None
            last = ours.get("last_run") if isinstance(ours, dict) else None
            if isinstance(last, dict) and last.get("status") == "running":
                by = dict(last.get("by") or by)
        position, number = self.enqueue(cell_id, by)
        timing = request.get("record_timing")
        if isinstance(timing, bool):  # JupyterLab's "record timing" setting of the asker
            self._record_timing[cell_id] = timing
        return {"ok": True, "cell_id": cell_id, "position": position, "n": number}

    def enqueue(self, cell_id: str, by: dict[str, Any]) -> tuple[int, int]:
        """Queue a code cell; return its position (0 = next) and its run's number. Already
        queued: asker updated (one run, the same number)."""
        ycell = find_cell(self.room.notebook, cell_id)
        if ycell is None:
            raise RequestError(f"no cell with id {cell_id!r} in this notebook")
        if ycell.get("cell_type") != "code":
            raise RequestError(f"cell {cell_id!r} is a {ycell.get('cell_type')} cell, not code")
        for i, entry in enumerate(self.entries):
            if entry.cell_id == cell_id:
                entry.by, entry.at = by, time.time()
                self._publish()
                return i, entry.number
        mine = sum(1 for e in self.entries if e.by.get("username") == by.get("username"))
        if mine >= self.max_entries_per_person:
            raise RequestError(
                f"{by.get('name', 'you')} already has {mine} cells queued "
                f"(limit {self.max_entries_per_person}); wait for some to run"
            )
        number = self._numbers.get(cell_id)
        if number is None:  # its first run queued by this sidecar: go on from the document's
            number = last_run_number(ycell)
        self._numbers[cell_id] = number = number + 1
        self.entries.append(Entry(cell_id, by, time.time(), number))
        self._publish(soon=True)
        self._wake.set()
        return len(self.entries) - 1, number

    def clear(self, reason: str) -> None:
        """Cancel every waiting entry (restart, interrupt, error), recording why."""
        if not self.entries:
            return
        cancelled = [{**e.as_dict(), "reason": reason} for e in self.entries]
        self.entries.clear()
        self._record_timing.clear()  # kept for queued cells only
        with self.room.doc.transaction():  # peers see both at once
            self.room.set_status("cancelled", cancelled)
            self._publish()

    # -- running -----------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run entries as the kernel becomes free, until cancelled. A run that ends starts the
        next entry itself (``_ended``); this loop starts the queue again after it empties or
        waited for a kernel."""
        self._stopped = False
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._drop_deleted)
                tg.start_soon(self._publisher)
                task_status.started()
                while True:
                    while self._current or not self.entries or not self.bridge.attached:
                        self._wake = anyio.Event()
                        await self._wake.wait()
                    self._start_next()
        finally:
            self._stopped = True

    async def _drop_deleted(self) -> None:
        """A queued cell that is deleted leaves the queue."""
        while True:
            await self._cells_changed.wait()
            self._cells_changed = anyio.Event()
            if not self.entries:
                continue
            ids = cell_ids(self.room.notebook)  # followed: no read of every cell's id
            gone = {e.cell_id for e in self.entries if not ids.count(e.cell_id)}
            if gone:
                for cell_id in gone:
                    self._record_timing.pop(cell_id, None)
                self.entries = [e for e in self.entries if e.cell_id not in gone]
                self._publish()

    def wake(self) -> None:
        """Look at the queue again (a kernel was attached)."""
        self._wake.set()

    def _start_next(self) -> None:
        """Begin the cell sent ahead, or send the first queued cell that still exists to the
        kernel, if it is free."""
        if self._ahead is not None and not self._current:
            entry, run, source = self._ahead
            self._ahead = None
            if self.bridge.attached:
                self._current = self._begin(entry, run, source)
            else:  # the kernel went away before its turn: cancelled with the queue
                self.entries.insert(0, entry)
        while not self._current and self.entries and self.bridge.attached and not self._stopped:
            entry = self.entries.pop(0)
            self._publish(soon=True)  # "running" says which one runs meanwhile
            self._current = self._start(entry)

    def _start(self, entry: Entry) -> Run | None:
        ycell = find_cell(self.room.notebook, entry.cell_id)
        if ycell is None:
            self._record_timing.pop(entry.cell_id, None)
            return None  # deleted while queued
        source = str(ycell["source"])
        with self.room.doc.transaction():  # one update: running, its cell, its cleared outputs
            self._mark_running(entry, ycell, source)
            try:
                return self._send(entry, source, ahead=False)
            except RuntimeError as exc:
                self._end(entry, "cancelled", str(exc))
                return None

    def _send(self, entry: Entry, source: str, *, ahead: bool) -> Run:
        timing = self._record_timing.pop(entry.cell_id, None)
        return self.bridge.execute(
            entry.cell_id, source, entry.by, record_timing=timing, ahead=ahead,
            on_end=lambda run: self._ended(entry, run),
            on_reply=(lambda _run: self._send_ahead()) if self.send_ahead else None,
        )

    def _send_ahead(self) -> None:
        """The running cell replied ok and its end is on the way: send the next cell now."""
        if self._ahead is not None or self._stopped or not self.bridge.attached:
            return
        while self.entries:
            entry = self.entries.pop(0)
            ycell = find_cell(self.room.notebook, entry.cell_id)
            if ycell is None:  # deleted while queued
                self._record_timing.pop(entry.cell_id, None)
                continue
            source = str(ycell["source"])
            try:
                run = self._send(entry, source, ahead=True)
            except RuntimeError:  # the kernel went away: the entry stays queued
                self.entries.insert(0, entry)
                return
            self._ahead = (entry, run, source)
            return

    def _begin(self, entry: Entry, run: Run, source: str) -> Run:
        """The cell sent ahead has its turn: mark it running with the source it runs."""
        self._publish(soon=True)  # "running" says which one runs meanwhile
        with self.room.doc.transaction():
            self._mark_running(entry, find_cell(self.room.notebook, entry.cell_id), source)
            self.bridge.begin(run)
        return run

    def _mark_running(self, entry: Entry, ycell: Map[Any] | None, source: str) -> None:
        """Record that ``entry``'s run starts with ``source``: in its cell (a cell deleted
        meanwhile runs without writing anywhere) and as the queue's running entry."""
        started = time.time()
        if ycell is not None:
            record_start(ycell, entry.by, started, source, number=entry.number)
        self.room.set_status("running", {**entry.as_dict(), "start": started})

    def _ended(self, entry: Entry, run: Run) -> None:
        """The run of ``entry`` ended (in the bridge's transaction that ends it): record it,
        clear the queue on an error, and send the next cell at once."""
        if run.ahead:  # the kernel went away before its turn (see _start_next)
            return
        if self._current is run:
            self._current = None
        status = str((run.reply or {}).get("status", "ok"))
        self._end(entry, status, None, run, clear_running=False)
        if status == "error" and not self._raises_exception(entry.cell_id):
            self.clear(f"cell {entry.cell_id} raised an error")
        elif status not in ("ok", "error"):
            self.clear(f"kernel {status}")
        self._start_next()
        if not self._current:  # else "running" names the next cell, in this same update
            self.room.set_status("running", None)

    def _end(self, entry: Entry, status: str, error: str | None, run: Run | None = None,
             *, clear_running: bool = True) -> None:
        """Record the end of ``entry``'s run (and, unless told not to, that nothing runs)."""
        with self.room.doc.transaction():
            ycell = find_cell(self.room.notebook, entry.cell_id)
            count = self.bridge.writer.take_count(entry.cell_id)
            if ycell is not None:  # a cell deleted while running just ends
                record_end(ycell, status, error, count,
                           timing=run.timing if run is not None else None,
                           drop_timing=run is not None and run.record_timing is False)
            if clear_running:
                self.room.set_status("running", None)

    def _raises_exception(self, cell_id: str) -> bool:
        ycell = find_cell(self.room.notebook, cell_id)
        return ycell is not None and "raises-exception" in (ycell["metadata"].get("tags") or [])

    def _publish(self, *, soon: bool = False) -> None:
        """Write the queue into the document: now, or (new requests) at most every
        ``publish_interval``, so a burst of requests is a few updates, not one copy each."""
        if soon:
            self._publish_due = True
            self._queue_changed.set()
            return
        self._publish_due = False
        waiting = [self._ahead[0], *self.entries] if self._ahead is not None else self.entries
        entries = [e.as_dict() for e in waiting]  # one sent ahead waits for its turn too
        status = self.room.status
        current = status.get("queue")
        if isinstance(current, Array):
            update_array(current, self._written(current), entries)
        else:  # first publish (or a plain list left by an older version)
            status["queue"] = Array(entries)
        self._published = entries

    def _written(self, array: Array[Any]) -> list[Any]:
        """What ``array`` holds: the last published list, unless it visibly is not (peers
        cannot write the queue, but a document restored from the store starts with its own)."""
        published = self._published
        if len(array) == len(published) and (
                not published or (array[0] == published[0] and array[-1] == published[-1])):
            return published
        return array.to_py() or []
    async def _publisher(self) -> None:
        while True:
            await self._queue_changed.wait()
            self._queue_changed = anyio.Event()  # only this task replaces it: no lost wake-up
            if self._publish_due:
                self._publish()
                await anyio.sleep(self.publish_interval)


def update_array(array: Array[Any], old: list[Any], new: list[Any]) -> None:
    """Make ``array`` (holding ``old``) hold ``new`` with edits at its ends only: the queue mostly
    loses its head and gains a tail (a new copy each time made a long queue quadratic)."""
    if old == new:
        return
    head = common_prefix(old, new)
    tail = common_suffix(old, new, min(len(old), len(new)) - head)
    with array.doc.transaction():
        if len(old) - tail > head:
            del array[head:len(old) - tail]
        for offset, item in enumerate(new[head:len(new) - tail]):
            array.insert(head + offset, item)
