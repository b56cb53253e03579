"""The SQLite store: each document's full current state, durable before anyone sees it.

One database per root directory (``.kernel_collab.db``) holds every notebook's document,
keyed by a document id and mapped from the notebook's path. A document is a snapshot plus
the updates appended since; :meth:`SQLiteStore.compact` replaces them with a new snapshot so
the size stays bounded by the document's own size. WAL mode; ``synchronous=NORMAL`` by
default (a committed update survives ``kill -9`` of any process; power loss may lose the last
commits), ``FULL`` to also survive power loss at the price of an fsync per commit.

Every method is blocking and meant to run in a worker thread; one :class:`SQLiteStore` is
used by one task at a time (the sidecar serialises calls).
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import overload

from ..notebook_core.updates import merge
from . import blobs
from . import history as hist
from .history import History, Policy

SCHEMA_VERSION = 2
APPLICATION_ID = 0x4B434442  # "KCDB", so another program's database is refused by name.

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    document_id TEXT PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    epoch TEXT NOT NULL,
    snapshot BLOB NOT NULL,  -- zlib-compressed Y update
    base BLOB,  -- zlib-compressed .ipynb bytes
    base_hash TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL REFERENCES documents(document_id) ON DELETE CASCADE,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_by_document ON updates (document_id, id);
""" + hist.SCHEMA

# Migrations from version N to N+1, applied in order inside one transaction.
_MIGRATIONS: dict[int, str] = {1: hist.SCHEMA}


class StoreError(RuntimeError):
    """The store cannot be opened or used; the message says which database and why."""


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """What the store holds for one notebook."""

    document_id: str
    path: str
    epoch: str
    update: bytes
    """Snapshot and later updates merged into one Y update."""
    base: bytes | None
    """The ``.ipynb`` bytes last read from or written to disk (the merge base)."""
    base_hash: str | None
    update_count: int
    update_bytes: int


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """One row of :meth:`SQLiteStore.list`."""

    document_id: str
    path: str
    epoch: str
    snapshot_bytes: int
    update_count: int
    update_bytes: int
    base_bytes: int
    updated: float


@dataclass(frozen=True, slots=True)
class Commit:
    """What history records of a group commit (see ``history.py``)."""

    cells: bool
    """Whether it changed cells or the notebook's metadata (else it folds into the last
    version)."""
    authors: list[dict[str, object]]
    kind: str = "edit"
    label: str = ""
    pinned: bool = False


class SQLiteStore:
    """Blocking access to one ``.kernel_collab.db`` file."""

    def __init__(self, path: Path, *, synchronous: str = "NORMAL", busy_timeout: float = 10.0,
                 history: Policy | None = None):  # fmt: skip
        self.path = path
        if synchronous not in ("NORMAL", "FULL"):
            raise StoreError(f"{path}: synchronous must be NORMAL or FULL, not {synchronous!r}")
        try:
            self._db = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            # Both only take effect when set before the file's first write, so only a new
            # file gets them (setting auto_vacuum takes the write lock even when it is set
            # already: opening a store while another sidecar stores a notebook it just
            # opened would wait for that). Small pages keep a small notebook's store small
            # (a dozen fixed pages) and each commit's WAL frames few.
            if self._db.execute("PRAGMA page_count").fetchone()[0] == 0:
                self._db.execute("PRAGMA page_size=1024")
                self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA foreign_keys=ON")
            # Deleted rows are overwritten, not just freed: what a purge or a compaction
            # removes (a pasted secret someone deleted) leaves the file.
            self._db.execute("PRAGMA secure_delete=ON")
            # No checkpoint inside a commit (the sidecar commits small updates on its event
            # loop): the owner calls checkpoint() once wal_bytes() grows; truncated to 64 KiB.
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.execute("PRAGMA journal_size_limit=65536")
            self._open_schema()
            self.history = History(self._db, self._transaction, history)
            """The documents' versions (``history.py``)."""
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc

    def _open_schema(self) -> None:
        db = self._db
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            with self._transaction():
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                _run_script(db, _SCHEMA)
                db.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            return
        if app_id != APPLICATION_ID:
            raise StoreError(
                f"{self.path} is not a kernel_collab store (application_id {app_id:#x}); "
                "move it aside or choose another store path"
            )
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this kernel_collab "
                f"understands ({SCHEMA_VERSION}); upgrade kernel_collab or use another store"
            )
        if version < SCHEMA_VERSION:
            missing = [v for v in range(version, SCHEMA_VERSION) if v not in _MIGRATIONS]
            if missing:
                raise StoreError(
                    f"{self.path} has schema version {version} and no migration to "
                    f"{SCHEMA_VERSION} exists; export its documents with an older version"
                )
            with self._transaction():
                for v in range(version, SCHEMA_VERSION):
                    _run_script(db, _MIGRATIONS[v])
                db.execute(
                    "UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),)
                )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        """Close the connection (pending WAL content stays valid on disk)."""
        self._db.close()

    # -- documents ---------------------------------------------------------------------------

    def load(self, path: str) -> StoredDocument | None:
        """The stored document for a notebook path, or ``None``."""
        db = self._db
        row = db.execute(
            "SELECT document_id, epoch, snapshot, base, base_hash FROM documents WHERE path=?",
            (path,),
        ).fetchone()
        if row is None:
            return None
        document_id, epoch, snapshot, base, base_hash = row
        updates = [
            r[0]
            for r in db.execute(
                "SELECT data FROM updates WHERE document_id=? ORDER BY id", (document_id,)
            )
        ]
        snapshot = zlib.decompress(snapshot)
        merged = merge([snapshot, *updates])
        if not self.history.has(document_id):  # a store from before history
            with self._transaction():
                self.history.begin(document_id, merged, "created", "history begins",
                                   time.time())  # fmt: skip
        return StoredDocument(
            document_id=document_id,
            path=path,
            epoch=epoch,
            update=merged,
            base=zlib.decompress(base) if base is not None else None,
            base_hash=base_hash,
            update_count=len(updates),
            update_bytes=sum(len(u) for u in updates),
        )

    def create(
        self, path: str, snapshot: bytes, base: bytes | None, base_hash: str | None, *,
        document_id: str | None = None, epoch: str | None = None,
    ) -> tuple[str, str]:
        """Store a new document for ``path`` (with the ids given, or new ones); return its
        ``(document_id, epoch)``."""
        document_id = document_id or new_document_id()
        epoch = epoch or new_epoch()
        now = time.time()
        packed = _pack(snapshot)  # the snapshot and history's first checkpoint: one packing
        with self._transaction():
            blobs.execute(
                self._db, f"INSERT INTO documents VALUES (?, ?, ?, {blobs.BLOB}, NULL, ?, ?, ?)",
                (document_id, path, epoch, packed, base_hash, now, now),
                table="documents", column="snapshot")  # fmt: skip
            if base is not None:
                self._set_base(document_id, base, base_hash, now)
            self.history.begin(document_id, snapshot, "created", "loaded from the file", now,
                               packed=packed)  # fmt: skip
        return document_id, epoch

    def append(self, document_id: str, updates: Iterable[bytes],
               record: Commit | None = None) -> int | None:  # fmt: skip
        """Append updates in one transaction (one commit, however many updates), with the
        history's record of the newest of them; returns the newest version then."""
        updates = list(updates)
        with self._transaction():
            if all(len(u) <= blobs.BIND_MAX for u in updates):
                self._db.executemany(
                    "INSERT INTO updates (document_id, data) VALUES (?, ?)",
                    ((document_id, u) for u in updates),
                )
            else:
                for u in updates:
                    blobs.execute(
                        self._db, "INSERT INTO updates (document_id, data)"
                        f" VALUES (?, {blobs.BLOB})",
                        (document_id, u), table="updates", column="data")  # fmt: skip
            if record is None:
                return None
            update = merge(updates)
            return self.history.record(
                document_id, update, cells=record.cells, authors=record.authors,
                kind=record.kind, label=record.label, pinned=record.pinned)  # fmt: skip

    def last_update_id(self, document_id: str) -> int:
        """The id of the newest stored update of a document (0 when there is none)."""
        row = self._db.execute(
            "SELECT COALESCE(MAX(id), 0) FROM updates WHERE document_id=?", (document_id,)
        ).fetchone()
        return int(row[0])

    def compact(self, document_id: str, snapshot: bytes, upto: int, *,
                settle: bool = True) -> list[str]:  # fmt: skip
        """Replace the snapshot and drop updates up to id ``upto`` (all contained in it), keep
        the document's history in its policy, then (``settle``) give free pages back and fold
        the WAL in (:meth:`checkpoint`). Returns what history's maintenance did, for the
        log."""
        with self._transaction():
            blobs.execute(
                self._db, f"UPDATE documents SET snapshot={blobs.BLOB}, updated=? WHERE"
                " document_id=?", (_pack(snapshot), time.time(), document_id),
                table="documents", column="snapshot",
                key=("document_id=?", (document_id,)))  # fmt: skip
            self._db.execute(
                "DELETE FROM updates WHERE document_id=? AND id<=?", (document_id, upto)
            )
        done = self.history.maintain(document_id)
        if settle:
            self.checkpoint()
        return done

    def wal_bytes(self) -> int:
        """The size of the write-ahead log (0 when there is none)."""
        try:
            return os.stat(f"{self.path}-wal").st_size
        except FileNotFoundError:
            return 0

    def checkpoint_wal(self) -> None:
        """Fold the WAL into the database (the next commits then reuse it from its start)."""
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def checkpoint(self) -> None:
        """Give free pages back and fold the WAL into the database, truncating it."""
        self._db.executescript("PRAGMA incremental_vacuum;")  # steps until every page is freed
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def base(self, document_id: str) -> tuple[bytes | None, str | None]:
        """The file content last read from or written to disk, and its hash."""
        row = self._db.execute("SELECT base, base_hash FROM documents WHERE document_id=?",
                               (document_id,)).fetchone()  # fmt: skip
        if row is None or row[0] is None:
            return None, None
        return zlib.decompress(row[0]), row[1]

    def set_base(self, document_id: str, base: bytes, base_hash: str) -> None:
        """Record the file content last read from or written to disk."""
        with self._transaction():
            self._set_base(document_id, base, base_hash, time.time())

    def _set_base(self, document_id: str, base: bytes, base_hash: str | None, now: float) -> None:
        blobs.execute(
            self._db, f"UPDATE documents SET base={blobs.BLOB}, base_hash=?, updated=? WHERE"
            " document_id=?", (_pack(base), base_hash, now, document_id),
            table="documents", column="base", key=("document_id=?", (document_id,)))  # fmt: skip

    def rename(self, old_path: str, new_path: str) -> None:
        """Move a document to another notebook path."""
        with self._transaction():
            self._db.execute("UPDATE documents SET path=? WHERE path=?", (new_path, old_path))

    def reset(self, path: str) -> bool:
        """Forget a document's stored state; return whether there was one."""
        with self._transaction():
            cur = self._db.execute("DELETE FROM documents WHERE path=?", (path,))
        self._db.executescript("PRAGMA incremental_vacuum;")  # steps until every page is freed
        return cur.rowcount > 0

    def purge(self, document_id: str, before: int | None, version: int | None) -> int:
        """Drop a document's versions before ``before``, or the one ``version`` (one
        transaction); return how many went. The live document's own updates still hold
        what was deleted until the next compaction: the sidecar compacts right after."""
        with self._transaction():
            if before is not None:
                count = self.history.purge_before(document_id, before)
            elif version is not None:
                count = self.history.purge_one(document_id, version)
            else:
                raise ValueError("purge needs before or version")
        self.checkpoint()  # and leaves the WAL
        return count

    def history_bytes(self) -> int:
        """Bytes of the database file that history's tables and indexes take (pages, from
        SQLite's ``dbstat``; its rows' own bytes where ``dbstat`` is not compiled in)."""
        try:
            row = self._db.execute(
                "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name LIKE 'history%'"
                " OR name LIKE 'sqlite_autoindex_history%'").fetchone()  # fmt: skip
        except sqlite3.OperationalError:
            return sum(self.history.size(d.document_id) for d in self.list())
        return int(row[0])

    def list(self) -> list[DocumentInfo]:
        """Every stored document with its sizes."""
        rows = self._db.execute(
            """SELECT d.document_id, d.path, d.epoch, length(d.snapshot),
                      COUNT(u.id), COALESCE(SUM(length(u.data)), 0),
                      COALESCE(length(d.base), 0), d.updated
               FROM documents d LEFT JOIN updates u ON u.document_id = d.document_id
               GROUP BY d.document_id ORDER BY d.path"""
        ).fetchall()
        return [DocumentInfo(*r) for r in rows]


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated statements inside the caller's transaction (executescript would
    commit it)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def new_document_id() -> str:
    """A new document's id (peers and the server extension name its room by it)."""
    return str(uuid.uuid4())


def new_epoch() -> str:
    """A new epoch: peers of an older copy of the document are refused (4409) on reconnect."""
    return uuid.uuid4().hex[:12]


@overload
def _pack(data: bytes) -> bytes: ...
@overload
def _pack(data: None) -> None: ...
def _pack(data: bytes | None) -> bytes | None:
    """Snapshots and bases are stored zlib-compressed (``blobs.pack``)."""
    return blobs.pack(data) if data is not None else None


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on error."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:  # SQLite rolls some errors back itself (a full disk)
            self._db.execute("ROLLBACK")
