"""The room: one shared notebook, its peers, and the apply → commit → relay path
(docs/architecture.md, "Apply → commit → relay"); nothing else. Peers' updates are applied by
the room's ``updates`` (``ownership.py``), awareness is relayed by ``awareness.py``,
requests are served through ``requests.py``; ``service.py`` wires them together.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from jupyter_ydoc import YNotebook
from pycrdt import Map, TransactionEvent, create_sync_message, create_update_message
from traitlets import Float, Int
from traitlets.config import LoggingConfigurable

from .. import protocol
from ..notebook_core.cell_ids import feed_cell_ids
from ..notebook_core.updates import merge
from ..protocol import CLOSE_REFUSED, STATE_KEY
from ..store import Commit
from .docstore import DocumentStore
from .events import Listeners
from .looplag import LoopLag, quantile
from .peer import Peer
from .trust import TrustLedger
from .whole_document import WholeDocument

if TYPE_CHECKING:
    from .ownership import FieldGuard

EMPTY_UPDATE = b"\x00\x00"
EMPTY_STATE = b"\x00"
"""The state vector of a peer that has nothing yet."""
SIDECAR_AUTHOR = {"kind": "sidecar", "name": "kernel_collab"}
"""Who changes the document when no peer, kernel output or file does (repairs, run records)."""
UNVERSIONED: dict[str, Any] = {}
"""The actor of changes that are no version of their own (a document's load)."""


class Room(LoggingConfigurable):
    """A notebook's shared document and the peers connected to it."""

    peer_queue_size = Int(
        10_000,
        help="Messages queued for one peer before it is disconnected as too slow "
        "(it resyncs on reconnect).",
    ).tag(config=True)
    settle_after = Float(
        1.0, help="Seconds without a commit after which a compacted store is settled (its "
        "free pages given back, its WAL truncated: an fsync kept off the way of edits)."
    ).tag(config=True)
    settle_max_delay = Float(
        60.0, help="Longest a compacted store waits to be settled while commits keep coming."
    ).tag(config=True)
    whole_document_keep = Float(
        10.0, help="Seconds the whole document, encoded for a joining peer, is kept for the "
        "next one while it does not change (it costs the document's size in memory)."
    ).tag(config=True)

    def __init__(self, notebook: YNotebook, store: DocumentStore, **kwargs: Any):
        super().__init__(**kwargs)
        self.notebook = notebook
        self.doc = notebook.ydoc
        self.store = store
        self.peers: set[Peer] = set()
        self.joined: Listeners[Peer] = Listeners()
        """Told of each peer once it has joined (its sync handshake is under way)."""
        self.left: Listeners[Peer] = Listeners()
        """Told of each peer once it has left."""
        self.updates: FieldGuard | None = None
        """Applies peers' updates, holding them to the rules (set by the service)."""
        self._pending: list[bytes] = []
        self._pending_from: list[Peer | None] = []
        """The peer each pending update is exactly the update of (None: anything else)."""
        self.no_echo: set[Peer] = set()
        """Peers that acknowledge otherwise (the kernel's comm, by batch number): a commit
        made only of their own updates is not relayed back to them."""
        self._applied_seq = 0
        self._committed_seq = 0
        self._has_pending = anyio.Event()
        self._compacted = anyio.Event()
        self._committed = anyio.Event()
        self._unstored: list[bytes] = []
        self._store_failing = False
        self.loop_lag = LoopLag(self.log, lambda: str(notebook.ystate.get("path")))
        self.active_at = 0.0
        """``time.monotonic()`` of the last commit or join: the loop-lag sampler runs only
        while the room is busy (an idle room with peers is not woken 20 times a second)."""
        """The event loop's lateness while peers are connected (in ``stats``)."""
        self.commit_times: deque[float] = deque(maxlen=10_000)
        """Durations of the latest group commits, in seconds."""
        self.committed_updates = 0
        self.whole = WholeDocument(self.doc, self.whole_document_keep)
        self._subscription = self.doc.observe(self._on_transaction)
        self._actor: dict[str, Any] | None = None
        self._authors: dict[tuple[str, str], dict[str, Any]] = {}
        self._event: tuple[str, str] | None = None
        self.cell_changes: Listeners[list[Any]] = Listeners()
        """Each transaction's events in the cells (deep), observed once for every service that
        follows them: pycrdt converts the events anew for each deep observer."""
        feed_cell_ids(notebook, self.cell_changes.subscribe)  # first: the others may ask it
        self.meta_changes: Listeners[list[Any]] = Listeners()
        """The same for the notebook's metadata."""
        notebook.ycells.observe_deep(self._on_cell_events)
        self.doc.get("meta", type=Map).observe_deep(self._on_meta_events)
        self.trust = TrustLedger(notebook, lambda: self.status)
        """The document's trust record (``trust.py``)."""

    # -- document state ----------------------------------------------------------------------

    @property
    def status(self) -> Map[Any]:
        """kernel_collab's map inside the document's ``state`` (created on first use)."""
        state = self.notebook.ystate
        current = state.get(STATE_KEY)
        if not isinstance(current, Map):
            current = state[STATE_KEY] = Map()
        return current

    def set_status(self, key: str, value: Any) -> None:
        """Set a key of kernel_collab's state if it differs (no empty transactions)."""
        status = self.status
        if status.get(key) != value:
            status[key] = value

    # -- who changed what (the history's authors) --------------------------------------------

    @contextlib.contextmanager
    def acting(self, author: dict[str, Any]) -> Iterator[None]:
        """Attribute the cell changes made inside to ``author`` (a peer's ``author``, the
        kernel's outputs, the file on disk)."""
        previous, self._actor = self._actor, author
        try:
            yield
        finally:
            self._actor = previous

    def _on_cell_events(self, events: list[Any]) -> None:
        self._on_cells(events)
        self.cell_changes.emit(events)

    def _on_meta_events(self, events: list[Any]) -> None:
        self._on_cells(events)
        self.meta_changes.emit(events)

    def _on_cells(self, _events: Any) -> None:
        if self._actor is UNVERSIONED:
            return
        author = self._actor or SIDECAR_AUTHOR
        key = (str(author.get("kind")), str(author.get("username") or author.get("name")))
        self._authors.setdefault(key, author)

    def mark(self, kind: str, label: str) -> None:
        """Make the next commit a pinned version (a save, a restart, a restore, a purge)."""
        self._event = (kind, label)
        if not self._pending:
            self._queue(EMPTY_UPDATE)  # committed even if nothing else changes

    def _take_record(self) -> Commit:
        authors, self._authors = list(self._authors.values()), {}
        event, self._event = self._event, None
        if event is None:
            return Commit(cells=bool(authors), authors=authors)
        return Commit(cells=True, authors=authors, kind=event[0], label=event[1], pinned=True)

    # -- apply → commit → relay --------------------------------------------------------------

    def _on_transaction(self, event: TransactionEvent) -> None:
        if event.update != EMPTY_UPDATE:
            self.whole.drop()
            self._queue(event.update)

    def _queue(self, update: bytes) -> None:
        self._pending.append(update)
        self._pending_from.append(None)
        self._applied_seq += 1
        self._has_pending.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit and relay changes until cancelled; settle the store once quiet."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._store_loaded)
            tg.start_soon(self._settle_when_quiet)
            tg.start_soon(self.whole.run)
            task_status.started()
            while True:
                await self._has_pending.wait()
                self._has_pending = anyio.Event()
                await self._commit_and_relay()

    def seal_load(self) -> None:
        """A document new from its file: what the sidecar wrote as it started (ids, status)
        is part of the document as loaded and stored with it, not a commit a joiner would
        wait for while the store takes the notebook."""
        snapshot = self.doc.get_update()
        self.whole.prime(snapshot)  # what the first peer to join gets
        if self.store.seal(snapshot):
            self._pending.clear()
            self._pending_from.clear()
            self._committed_seq = self._applied_seq
            self._take_record()

    async def _store_loaded(self) -> None:
        """Store a document served as loaded from its file (``DocumentStore.create_later``);
        if the store fails, the file still holds it, and the next commit tries again."""
        try:
            await self.store.created()
        except (sqlite3.Error, OSError) as exc:
            self._store_failing = True
            self.log.error(
                "store %s could not record document %s as loaded from %s (the file holds it; "
                "retried at the next change): %s", self.store.db_path, self.store.document_id,
                self.notebook.ystate.get("path"), exc)  # fmt: skip
            self.set_status("store_error", str(exc))

    async def _settle_when_quiet(self) -> None:
        """After compactions, settle the store (free pages back, WAL truncated: an fsync) once
        nothing was committed for ``settle_after`` s, or ``settle_max_delay`` s after the
        first compaction left it unsettled while commits keep coming."""
        while True:
            await self._compacted.wait()
            self._compacted = anyio.Event()
            with anyio.move_on_after(self.settle_max_delay):
                while True:
                    with anyio.move_on_after(self.settle_after):
                        await self._committed.wait()  # a commit: wait for quiet again
                        continue
                    break
            try:
                await self.store.settle()
            except (sqlite3.Error, OSError) as exc:  # the store stays valid, only larger
                self.log.error("store %s: settling document %s failed: %s",
                               self.store.db_path, self.store.document_id, exc)  # fmt: skip

    @property
    def pending(self) -> bool:
        """Whether updates are applied and not yet committed."""
        return bool(self._pending)

    async def flush(self) -> None:
        """Commit whatever is applied but not yet stored (used at shutdown)."""
        if self._pending:
            await self._commit_and_relay()

    async def _commit_and_relay(self) -> None:
        batch, self._pending = self._pending, []
        sources, self._pending_from = set(self._pending_from), []
        seq = self._applied_seq
        if not batch:
            return
        record = self._take_record()
        merged = merge(batch)
        to_store = [*self._unstored, merged]  # one row per group commit
        started = time.perf_counter()
        try:
            # Taken from the queue, the batch is stored whatever happens: a stop cancelling
            # this wait left it neither stored nor queued (and the final save then wrote it to
            # the file, recording that as the merge base: the next start erased it there too).
            with anyio.CancelScope(shield=True):
                await self.store.append(to_store, record)
        except (sqlite3.Error, OSError) as exc:  # the store failing must not stop the room
            self._unstored = to_store
            self._store_failing = True
            self.log.error("store %s failed to commit %d updates of document %s (kept in memory, "
                           "retried at the next change): %s", self.store.db_path, len(to_store),
                           self.store.document_id, exc)  # fmt: skip
            self.set_status("store_error", str(exc))
        else:
            if self._store_failing:
                self.log.info("store %s is writable again", self.store.db_path)
                self._unstored = []
                self._store_failing = False
                self.set_status("store_error", None)
        self.commit_times.append(time.perf_counter() - started)
        self.active_at = time.monotonic()
        self.committed_updates += len(batch)
        self._committed_seq = seq
        message = create_update_message(merged)
        only = next(iter(sources)) if len(sources) == 1 else None
        for peer in list(self.peers):
            if peer is not only or peer not in self.no_echo:
                peer.send(message)
        self._committed.set()
        self._committed = anyio.Event()
        try:
            await self.store.fold_wal()
        except (sqlite3.Error, OSError) as exc:  # the next commits still go to the WAL
            self.log.error("store %s: folding the WAL of document %s failed: %s",
                           self.store.db_path, self.store.document_id, exc)  # fmt: skip
        if not self._unstored and self.store.wants_compaction():
            try:
                await self.store.compact(self.doc.get_update())
                self._compacted.set()
            except (sqlite3.Error, OSError) as exc:  # the rows stay valid: retried later
                self.log.error("store %s: compaction of document %s failed (kept as it was): "
                               "%s", self.store.db_path, self.store.document_id, exc)  # fmt: skip

    async def wait_all_committed(self) -> None:
        """Wait until every update applied so far is stored."""
        seq = self._applied_seq
        while self._committed_seq < seq:
            await self._committed.wait()

    # -- peers -------------------------------------------------------------------------------

    def join(self, peer: Peer) -> None:
        """Add a peer and start the sync handshake (our state vector)."""
        self.peers.add(peer)
        self.active_at = time.monotonic()
        peer.send(create_sync_message(self.doc))
        self.joined.emit(peer)

    def leave(self, peer: Peer) -> None:
        """Remove a peer."""
        self.peers.discard(peer)
        self.no_echo.discard(peer)
        if not self.people:
            self.whole.drop()
        self.left.emit(peer)

    def busy(self, within: float = 2.0) -> bool:
        """Whether something was committed or someone joined in the last ``within`` s."""
        return time.monotonic() - self.active_at < within

    @property
    def people(self) -> int:
        """Connected peers other than admin connections."""
        return sum(1 for p in self.peers if not p.admin)

    async def receive_sync(self, peer: Peer, message: protocol.Message) -> None:
        """Handle one sync message (step 1, step 2 or update) from a peer."""
        if message.kind in (protocol.Kind.SYNC_UPDATE, protocol.Kind.SYNC_STEP2):
            if message.payload == EMPTY_UPDATE:
                return
            if not peer.may("write"):
                if message.kind == protocol.Kind.SYNC_STEP2:
                    return  # a reader's answer to our sync: what it has locally stays there
                peer.close(CLOSE_REFUSED, "read-only: your edits were refused; reload")
                return
            start = len(self._pending)
            try:
                with self.acting(peer.author):
                    if self.updates is None:
                        self.doc.apply_update(message.payload)
                    else:
                        self.updates.apply(peer, message.payload)
            except ValueError as exc:
                raise protocol.ProtocolError(f"invalid Y update: {exc}") from exc
            if len(self._pending) == start + 1:  # the update alone: no repair, no undo
                self._pending_from[start] = peer
        elif message.kind == protocol.Kind.SYNC_STEP1:
            if message.payload == EMPTY_STATE:  # a new peer: the room's one encoding
                reply = self.whole.message()
            else:
                try:
                    reply = protocol.encode_sync_step2(self.doc.get_update(message.payload))
                except ValueError as exc:
                    raise protocol.ProtocolError(f"invalid state vector: {exc}") from exc
            await self.wait_all_committed()  # what it holds is durable before it is sent
            peer.send(reply)

    async def handle_sync(self, _peer: Peer, _request: dict[str, Any]) -> dict[str, Any]:
        """Reply once everything this peer sent before is stored (its messages are handled in
        order): the client's ``sync()``."""
        await self.wait_all_committed()
        return {"ok": True}

    async def handle_stats(self, _peer: Peer, _request: dict[str, Any]) -> dict[str, Any]:
        """Figures for operators and the benchmark: commits, their durations, the store."""
        times = sorted(self.commit_times)
        lags = sorted(self.loop_lag.samples)

        return {
            "ok": True,
            "peers": len(self.peers),
            "commits": len(times),
            "committed_updates": self.committed_updates,
            "commit_p50_s": quantile(times, 0.5),
            "commit_p99_s": quantile(times, 0.99),
            "commit_total_s": sum(times),
            "loop_lag_samples": len(lags),
            "loop_lag_p50_s": quantile(lags, 0.5),
            "loop_lag_p99_s": quantile(lags, 0.99),
            "store_path": str(self.store.db_path),
            "history_bytes": await self.store.history_bytes(),
            "store_updates_since_snapshot": self.store.pending_count,
        }
