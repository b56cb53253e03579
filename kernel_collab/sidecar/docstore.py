"""One document's durable state, driven from the event loop.

Wraps :class:`~kernel_collab.store.SQLiteStore` for a single document: every call runs in a
worker thread, one at a time, and the compaction policy lives here: once the updates appended
since the last snapshot outweigh the snapshot itself (or pass ``compact_max_updates``), the
current document replaces them, so the store stays within a small multiple of the document.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import anyio
from pycrdt import get_state, get_update
from traitlets import Enum, Float, Int
from traitlets.config import LoggingConfigurable

from ..store import Commit, Snapshot, SQLiteStore, StoredDocument, Version
from ..store.sqlite import new_document_id, new_epoch

T = TypeVar("T")
ROW_OVERHEAD = 48
"""Bytes a stored update costs beyond its data (row header, index entry), for the policy."""
INLINE_BYTES = 64 * 1024
"""Group commits up to this size are written on the event loop when ``synchronous=NORMAL``
(a WAL append without fsync: about 0.1 ms, where the hops to the worker thread and back took
about 1 ms on a busy machine); larger ones, and every commit that fsyncs, go to the thread."""
WAL_CHECKPOINT_BYTES = 256 * 1024
"""WAL size past which it is folded into the database (in the worker thread, after a relay)."""


class DocumentStore(LoggingConfigurable):
    """Durable storage of the room's document in ``.kernel_collab.db``."""

    synchronous = Enum(
        ["NORMAL", "FULL"],
        default_value="NORMAL",
        help="SQLite synchronous mode. NORMAL (WAL): a committed update survives the death of "
        "any process; power loss may lose the last commits. FULL: also survives power loss, "
        "at the price of an fsync per group commit.",
    ).tag(config=True)
    compact_min_bytes = Int(
        8 * 1024, help="Never compact while the updates since the snapshot are smaller."
    ).tag(config=True)
    compact_ratio = Float(
        0.5,
        help="Compact once the updates since the snapshot exceed this fraction of its size.",
    ).tag(config=True)
    compact_max_updates = Int(
        20_000, help="Compact once this many updates are stored since the snapshot."
    ).tag(config=True)

    def __init__(self, db_path: Path, **kwargs: object):
        super().__init__(**kwargs)
        self.db_path = db_path
        self._limiter = anyio.CapacityLimiter(1)
        self._store: SQLiteStore | None = None
        self.document_id = ""
        self.epoch = ""
        self.snapshot_bytes = 0
        self.pending_bytes = 0
        self.pending_count = 0
        self.last_version = 0
        """The newest version in the document's history."""
        self.compact_soon = False
        """Compact at the next commit, whatever the policy says (after a purge)."""
        self._stored_state: bytes | None = None
        """The state vector of what the store holds, until the room's first commit: that
        commit carries the load too (the whole file, or the whole stored document), which is
        stored already and is left out of it."""
        self._new: tuple[str, bytes | None, str | None] | None = None
        """A document loaded from its file, until :meth:`seal` gives its state."""
        self._creation: tuple[str, bytes, bytes | None, str | None] | None = None
        """A document loaded from its file and served, not stored yet (``create_later``)."""
        self._creating = anyio.Lock()

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        await self.created()
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def _inline(self, fn: Callable[..., T], *args: object) -> T:
        """Run a small store call on the event loop, never beside the worker thread's use of
        the store: at once when the store is free (the limiter's own checkpoint put a turn of
        the event loop between a peer's edit and its relay), else once it is."""
        try:
            self._limiter.acquire_nowait()
        except anyio.WouldBlock:
            async with self._limiter:
                return fn(*args)
        try:
            return fn(*args)
        finally:
            self._limiter.release()

    async def open(self) -> None:
        """Open (creating or migrating) the database."""
        self._store = await self._call(
            lambda: SQLiteStore(self.db_path, synchronous=self.synchronous)
        )

    @property
    def store(self) -> SQLiteStore:
        """The open store."""
        assert self._store is not None, "DocumentStore.open() was not awaited"
        return self._store

    async def close(self) -> None:
        """Close the database (a document never stored stays in its file alone)."""
        if self._store is not None:
            await anyio.to_thread.run_sync(self._store.close, limiter=self._limiter)
            self._store = None

    async def load(self, path: str) -> StoredDocument | None:
        """Load the stored document for a notebook path."""
        doc = await self._call(self.store.load, path)
        if doc is not None:
            self.document_id = doc.document_id
            self.epoch = doc.epoch
            self.snapshot_bytes = len(doc.update) - doc.update_bytes
            self.pending_bytes = doc.update_bytes
            self.pending_count = doc.update_count
            self._stored_state = get_state(doc.update)
        return doc

    async def create(
        self, path: str, snapshot: bytes, base: bytes | None, base_hash: str | None
    ) -> tuple[str, str]:
        """Store a new document; return ``(document_id, epoch)``."""
        self.create_later(path, base, base_hash)
        self.seal(snapshot)
        await self.created()
        return self.document_id, self.epoch

    def create_later(self, path: str, base: bytes | None, base_hash: str | None) -> None:
        """Name a new document loaded from its file, to be stored as :meth:`seal` gives it, by
        :meth:`created`, which every other use of the store awaits first: the room serves it
        meanwhile (the file holds that content; storing a large notebook takes a while)."""
        self.document_id, self.epoch = new_document_id(), new_epoch()
        self._new = (path, base, base_hash)

    def seal(self, snapshot: bytes) -> bool:
        """The state of the document :meth:`create_later` named, with what the sidecar wrote
        as it started (no commit of its own); ``False`` if none was named."""
        if self._new is None:
            return False
        path, base, base_hash = self._new
        self._new = None
        self.snapshot_bytes = len(snapshot)
        self._stored_state = get_state(snapshot)
        self._creation = (path, snapshot, base, base_hash)
        return True

    async def created(self) -> None:
        """Store the document :meth:`create_later` named, unless it is stored (the store's
        error is raised, and the next use of the store tries again)."""
        if self._creation is None:
            return
        async with self._creating:
            creation = self._creation
            if creation is None:
                return
            await anyio.to_thread.run_sync(
                lambda: self.store.create(*creation, document_id=self.document_id,
                                          epoch=self.epoch),
                limiter=self._limiter,
            )  # fmt: skip
            self._creation = None

    async def append(self, updates: Sequence[bytes], record: Commit | None = None) -> None:
        """Commit updates (one transaction) before anyone sees them, with their record in the
        notebook's history."""
        await self.created()
        if self._stored_state is not None:
            updates = [get_update(u, self._stored_state) for u in updates]
        if self.synchronous == "NORMAL" and sum(map(len, updates)) <= INLINE_BYTES:
            version = await self._inline(self.store.append, self.document_id, updates, record)
        else:
            version = await self._call(self.store.append, self.document_id, updates, record)
        self._stored_state = None
        if version is not None:
            self.last_version = version
        self.pending_count += len(updates)
        self.pending_bytes += sum(len(u) + ROW_OVERHEAD for u in updates)

    async def settle(self) -> None:
        """Give the pages compactions freed back and truncate the WAL (an fsync: the room
        calls it once quiet, not on the way to its next commit)."""
        await self._call(self.store.checkpoint)

    async def fold_wal(self) -> None:
        """Fold the write-ahead log into the database once it has grown."""
        if self.store.wal_bytes() > WAL_CHECKPOINT_BYTES:
            await self._call(self.store.checkpoint_wal)

    def wants_compaction(self) -> bool:
        """Whether the updates since the snapshot have grown past the policy's bound."""
        if self.pending_count >= self.compact_max_updates or self.compact_soon:
            return True
        bound = max(self.compact_min_bytes, int(self.snapshot_bytes * self.compact_ratio))
        return self.pending_bytes > bound

    async def compact(self, snapshot: bytes) -> None:
        """Replace the stored updates by ``snapshot`` (taken after all of them were applied)."""
        upto = await self._call(self.store.last_update_id, self.document_id)
        done = await self._call(
            lambda: self.store.compact(self.document_id, snapshot, upto, settle=False)
        )
        self.log.debug(
            "compacted document %s: %d updates (%d bytes) into a %d-byte snapshot",
            self.document_id,
            self.pending_count,
            self.pending_bytes,
            len(snapshot),
        )
        self.snapshot_bytes = len(snapshot)
        self.pending_bytes = 0
        self.pending_count = 0
        self.compact_soon = False
        if done:
            self.log.info("history of document %s: %s", self.document_id, "; ".join(done))

    # -- history -----------------------------------------------------------------------------

    async def versions(self) -> list[Version]:
        """The document's versions, oldest first."""
        return await self._call(self.store.history.versions, self.document_id)

    async def snapshot(self, version: int) -> Snapshot:
        """One version rebuilt (raises ``HistoryError``)."""
        return await self._call(self.store.history.snapshot, self.document_id, version)

    async def purge(self, *, before: int | None = None, version: int | None = None) -> int:
        """Drop versions before ``before``, or the one ``version``; return how many."""
        return await self._call(self.store.purge, self.document_id, before, version)

    async def history_bytes(self) -> int:
        """Bytes of the store file that history takes (every document's)."""
        return await self._call(self.store.history_bytes)

    async def rename(self, old_path: str, new_path: str) -> None:
        """Move the document to another notebook path."""
        await self._call(self.store.rename, old_path, new_path)

    async def base(self) -> tuple[bytes | None, str | None]:
        """The file content last read from or written to disk, and its hash."""
        return await self._call(self.store.base, self.document_id)

    async def set_base(self, base: bytes, base_hash: str) -> None:
        """Record the file content last read from or written to disk, then checkpoint the WAL
        (saves come when changes pause, a cheap moment to shrink it)."""
        await self._call(self.store.set_base, self.document_id, base, base_hash)
        await self._call(self.store.checkpoint)
