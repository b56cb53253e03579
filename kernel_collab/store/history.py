"""Notebook history in the store: earlier versions of each document, who made them, in a budget.

Every group commit is a row holding the Y update since the previous row, its time, its kind
and its authors, so the chain of rows replays to every version exactly (Y needs every update,
in order). A commit that changes cells (or the notebook's metadata) is a *version*; one that
changes only the ``state`` map (kernel status, the queue) is a hidden row (kind ``state``),
never listed, merged into its neighbours by thinning. Full states (*checkpoints*) are written
by :meth:`History.maintain` so that rebuilding any version replays a bounded number of bytes.

``maintain`` also applies the policy (:class:`Policy`): every commit is kept in the recent
window, then one version per minute for a day, one per hour for a month, one per day after;
pinned versions (created, explicit saves, kernel restarts, restores, purges) are always kept.
Past the byte budget, the oldest versions keep their sources and drop their outputs (their rows
become output-less JSON, marked ``outputs_dropped``); past it still, the oldest go.

Blocking, like :class:`~kernel_collab.store.sqlite.SQLiteStore`, whose connection it shares.
"""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from jupyter_ydoc import YNotebook
from pycrdt import Doc, Map

from ..notebook_core.updates import merge
from ..protocol import STATE_KEY, TRUST_KEY
from . import blobs

SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    document_id TEXT NOT NULL REFERENCES documents(document_id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    first_at REAL NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    pinned INTEGER NOT NULL DEFAULT 0,
    authors TEXT NOT NULL DEFAULT '[]',
    label TEXT NOT NULL DEFAULT '',
    data BLOB,  -- the Y update since the previous row (NULL once flattened)
    flat BLOB,  -- zlib JSON of the notebook without outputs, once flattened
    PRIMARY KEY (document_id, version)
);
CREATE TABLE IF NOT EXISTS history_checkpoints (
    document_id TEXT NOT NULL REFERENCES documents(document_id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    state BLOB NOT NULL,  -- zlib Y state after that version
    PRIMARY KEY (document_id, version)
)
"""

EMPTY = b"\x00\x00"
STATE = "state"
"""Kind of a hidden row: a commit that changed only the state map."""
Transaction = Callable[[], AbstractContextManager[None]]
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


class HistoryError(LookupError):
    """No such version (or it was purged); the message says which."""


@dataclass(frozen=True, slots=True)
class Policy:
    """How history is thinned and bounded (defaults documented in docs/architecture.md)."""

    recent: float = 10 * MINUTE
    """Every commit younger than this is a version."""
    max_bytes: int = 64 * 1024 * 1024
    """Bytes of history (rows and checkpoints) per document before outputs are dropped."""
    checkpoint_bytes: int = 1024 * 1024
    """Update bytes replayed at most (beyond the largest state) before a new checkpoint."""


@dataclass(slots=True)
class Version:
    """One version, as listed."""

    version: int
    first_at: float
    at: float
    kind: str
    pinned: bool
    authors: list[dict[str, Any]]
    label: str
    outputs_dropped: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"version": self.version, "first_at": self.first_at, "at": self.at,
                "kind": self.kind, "pinned": self.pinned, "authors": self.authors,
                "label": self.label, "outputs_dropped": self.outputs_dropped}  # fmt: skip


@dataclass(slots=True)
class Snapshot:
    """A version rebuilt: the notebook and the cells whose outputs were trusted then."""

    version: int
    notebook: dict[str, Any]
    trusted: dict[str, str] = field(default_factory=dict)
    outputs_dropped: bool = False


def merge_authors(*groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Authors of several rows, each once, in first-seen order."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for group in groups:
        for author in group:
            key = (str(author.get("kind")), str(author.get("username") or author.get("name")))
            seen.setdefault(key, author)
    return list(seen.values())


class History:
    """The history rows of every document of one store."""

    def __init__(self, db: sqlite3.Connection, transaction: Transaction,
                 policy: Policy | None = None):  # fmt: skip
        self._db = db
        self._transaction = transaction
        self.policy = policy or Policy()

    # -- writing (inside the caller's transaction) ------------------------------------------

    def begin(self, document_id: str, state: bytes, kind: str, label: str, at: float, *,
              packed: bytes | None = None) -> None:  # fmt: skip
        """Start a document's history at ``state`` (version 0, pinned, checkpointed);
        ``packed``: ``blobs.pack(state)``, when the caller has it already."""
        self._db.execute(
            "INSERT INTO history (document_id, version, first_at, at, kind, pinned, label, data)"
            " VALUES (?, 0, ?, ?, ?, 1, ?, ?)", (document_id, at, at, kind, label, EMPTY))
        self._put_checkpoint(document_id, 0, state, packed)

    def _put_checkpoint(self, document_id: str, version: int, state: bytes,
                        packed: bytes | None = None) -> None:  # fmt: skip
        """Record (or replace) the full state after a version."""
        blobs.execute(
            self._db, f"INSERT OR REPLACE INTO history_checkpoints VALUES (?, ?, {blobs.BLOB})",
            (document_id, version, blobs.pack(state) if packed is None else packed),
            table="history_checkpoints", column="state")  # fmt: skip

    def has(self, document_id: str) -> bool:
        """Whether the document's history has begun."""
        row = self._db.execute("SELECT 1 FROM history WHERE document_id=? LIMIT 1",
                               (document_id,)).fetchone()  # fmt: skip
        return row is not None

    def record(self, document_id: str, update: bytes, *, cells: bool,
               authors: list[dict[str, Any]], kind: str = "edit", label: str = "",
               pinned: bool = False, at: float | None = None) -> int:  # fmt: skip
        """Record one group commit as the next row (a hidden ``state`` row if it changed no
        cell and is not pinned); returns its number."""
        at = time.time() if at is None else at
        last = self._db.execute("SELECT MAX(version) FROM history WHERE document_id=?",
                                (document_id,)).fetchone()[0]  # fmt: skip
        if last is None:
            raise HistoryError(f"document {document_id} has no history to record into")
        if not cells and not pinned:
            kind, authors = STATE, []
        blobs.execute(
            self._db, "INSERT INTO history (document_id, version, first_at, at, kind, pinned,"
            f" authors, label, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, {blobs.BLOB})",
            (document_id, last + 1, at, at, kind, int(pinned),
             json.dumps(authors, separators=(",", ":")), label, update),
            table="history", column="data")  # fmt: skip
        return int(last) + 1

    # -- reading -----------------------------------------------------------------------------

    def versions(self, document_id: str) -> list[Version]:
        """Every version kept, oldest first."""
        # length(), not ``data IS NULL``: SQLite reads a column for IS NULL in a result, the
        # whole overflow chain of a large update (a week with hourly plots: 80 ms, not 0.3).
        rows = self._db.execute(
            "SELECT version, first_at, at, kind, pinned, authors, label, length(data) IS NULL"
            " FROM history WHERE document_id=? AND kind!=? ORDER BY version",
            (document_id, STATE))  # fmt: skip
        return [Version(v, f, a, k, bool(p), json.loads(w), lab, bool(d))
                for v, f, a, k, p, w, lab, d in rows]  # fmt: skip

    def snapshot(self, document_id: str, version: int) -> Snapshot:
        """Rebuild one version."""
        row = self._db.execute(
            "SELECT flat FROM history WHERE document_id=? AND version=? AND kind!=?",
            (document_id, version, STATE)).fetchone()  # fmt: skip
        if row is None:
            raise HistoryError(f"version {version} is not in the history (purged or thinned)")
        if row[0] is not None:
            flat = json.loads(zlib.decompress(row[0]))
            return Snapshot(version, flat["notebook"], flat.get("trusted", {}), True)
        doc = self._replay(document_id, version)
        return Snapshot(version, _notebook(doc), _trusted(doc))

    def _replay(self, document_id: str, version: int) -> Doc[Any]:
        base = self._db.execute(
            "SELECT version, state FROM history_checkpoints WHERE document_id=? AND version<=?"
            " ORDER BY version DESC LIMIT 1", (document_id, version)).fetchone()  # fmt: skip
        if base is None:
            raise HistoryError(f"version {version} cannot be rebuilt: no checkpoint before it")
        updates = [r[0] for r in self._db.execute(
            "SELECT data FROM history WHERE document_id=? AND version>? AND version<=?"
            " ORDER BY version", (document_id, base[0], version))]  # fmt: skip
        if any(u is None for u in updates):
            raise HistoryError(f"version {version} cannot be rebuilt: its chain was flattened")
        doc: Doc[Any] = Doc()
        doc.apply_update(zlib.decompress(base[1]))
        if updates:
            doc.apply_update(merge(updates))
        return doc

    # -- maintenance -------------------------------------------------------------------------

    def maintain(self, document_id: str, now: float | None = None) -> list[str]:
        """Checkpoint, thin and hold the budget (call outside a transaction: it makes its
        own). Returns what it did, for the log."""
        now = time.time() if now is None else now
        done = []
        with self._transaction():
            merged = self._thin(document_id, now)
            if merged:
                done.append(f"thinned {merged} versions")
            self._checkpoint(document_id)
        with self._transaction():
            flattened, dropped = self._hold_budget(document_id, now)
        if flattened:
            done.append(f"dropped the outputs of {flattened} old versions (history budget)")
        if dropped:
            done.append(f"dropped {dropped} oldest versions (history budget)")
        return done

    def _bucket(self, at: float, now: float) -> tuple[str, int]:
        age = now - at
        if age < DAY:
            return "m", int(at // MINUTE)
        if age < 30 * DAY:
            return "h", int(at // HOUR)
        return "d", int(at // DAY)

    def _thin(self, document_id: str, now: float) -> int:
        # A group never spans a row that cannot join (flattened, or too recent): ``after_gap``
        # marks a row whose predecessor cannot, and only the rows that may join are read into
        # Python (the recent window holds every commit of the last ten minutes, ~60,000 rows at
        # 100 commits/s: a row object each at every compaction was a peak, ~330 bytes a row,
        # that Python's allocator kept, so the sidecar grew with every commit). Rows left apart
        # by an earlier thinning (their versions are not consecutive) still join, as each
        # bucket widens with age (a minute, then an hour, then a day).
        cutoff = now - self.policy.recent
        rows = self._db.execute(
            "SELECT version, first_at, at, pinned, authors, kind, after_gap FROM ("
            " SELECT version, first_at, at, pinned, authors, kind,"
            "  length(data) IS NOT NULL AS joinable,"
            "  LAG(length(data) IS NULL OR at >= :cutoff, 1, 1) OVER (ORDER BY version)"
            "   AS after_gap"
            " FROM history WHERE document_id = :document_id)"
            " WHERE joinable AND at < :cutoff ORDER BY version",
            {"document_id": document_id, "cutoff": cutoff}).fetchall()  # fmt: skip
        groups: list[list[tuple[Any, ...]]] = []
        previous: tuple[Any, ...] | None = None
        for row in rows:
            if row[6]:
                previous = None
            joins = (previous is not None and not row[3] and not previous[3]
                     and self._bucket(row[2], now) == self._bucket(previous[2], now))  # fmt: skip
            if joins:
                groups[-1].append(row)
            else:
                groups.append([row])
            previous = row
        checkpointed = {r[0] for r in self._db.execute(
            "SELECT version FROM history_checkpoints WHERE document_id=?", (document_id,))}
        merged = 0
        for group in (g for g in groups if len(g) > 1):
            versions = [r[0] for r in group]
            keep = versions[-1]
            # A checkpoint inside the group moves to the version kept (else thinning would
            # drop checkpoints and leave long chains to replay).
            moved = None
            if checkpointed.intersection(versions[:-1]):
                moved = self._replay(document_id, keep).get_update()
            datas = [r[0] for r in self._db.execute(
                f"SELECT data FROM history WHERE document_id=? AND version IN "
                f"({','.join('?' * len(versions))}) ORDER BY version",
                (document_id, *versions))]  # fmt: skip
            authors = merge_authors(*(json.loads(r[4]) for r in group))
            kind = STATE if all(r[5] == STATE for r in group) else "edit"
            blobs.execute(
                self._db, f"UPDATE history SET data={blobs.BLOB}, first_at=?, authors=?, kind=?,"
                " label='' WHERE document_id=? AND version=?",
                (merge(datas), group[0][1], json.dumps(authors, separators=(",", ":")),
                 kind, document_id, keep),
                table="history", column="data", key=_version(document_id, keep))  # fmt: skip
            self._delete(document_id, versions[:-1])
            if moved is not None:
                self._put_checkpoint(document_id, keep, moved)
            merged += len(versions) - 1
        return merged

    def _delete(self, document_id: str, versions: list[int]) -> None:
        for table in ("history", "history_checkpoints"):
            self._db.executemany(f"DELETE FROM {table} WHERE document_id=? AND version=?",
                                 ((document_id, v) for v in versions))  # fmt: skip

    def _checkpoint(self, document_id: str) -> None:
        """A checkpoint at the newest version but one, once the bytes to replay since the
        last checkpoint pass both ``checkpoint_bytes`` and that checkpoint's own size (so
        checkpoints cost at most about what the updates do)."""
        last_cp = self._db.execute(
            "SELECT version, length(state) FROM history_checkpoints WHERE document_id=?"
            " ORDER BY version DESC LIMIT 1", (document_id,)).fetchone()  # fmt: skip
        if last_cp is None:
            return
        # Summed by SQLite, not a row object per version since the checkpoint (see _thin).
        target, pending = self._db.execute(
            "SELECT MAX(version), COALESCE(SUM(length(data)), 0) FROM history"
            " WHERE document_id=? AND version>? AND data IS NOT NULL",
            (document_id, last_cp[0])).fetchone()  # fmt: skip
        if target is None:
            return
        if pending < max(self.policy.checkpoint_bytes, last_cp[1]):
            return
        self._put_checkpoint(document_id, target, self._replay(document_id, target).get_update())

    def size(self, document_id: str) -> int:
        """Bytes the document's history takes (rows and checkpoints)."""
        rows = self._db.execute(
            "SELECT COALESCE(SUM(length(data)), 0) + COALESCE(SUM(length(flat)), 0) FROM history"
            " WHERE document_id=?", (document_id,)).fetchone()[0]  # fmt: skip
        cps = self._db.execute(
            "SELECT COALESCE(SUM(length(state)), 0) FROM history_checkpoints WHERE"
            " document_id=?", (document_id,)).fetchone()[0]  # fmt: skip
        return int(rows) + int(cps)

    def _hold_budget(self, document_id: str, now: float, batch: int = 5) -> tuple[int, int]:
        """Flatten the oldest versions (sources kept, outputs dropped), then drop the oldest
        flattened ones, until the history is within ``max_bytes``. At most ``batch`` flattens
        a call (each replays and compresses a whole state, and the room's next commit waits):
        the next compactions go on; versions are dropped only once none is left to flatten."""
        flattened = dropped = 0
        while self.size(document_id) > self.policy.max_bytes and flattened < batch:
            row = self._db.execute(
                "SELECT version FROM history WHERE document_id=? AND data IS NOT NULL AND at<?"
                " ORDER BY version LIMIT 1",
                (document_id, now - self.policy.recent)).fetchone()  # fmt: skip
            if row is None:
                break
            self._flatten(document_id, row[0])
            flattened += 1
        while flattened < batch and self.size(document_id) > self.policy.max_bytes:
            row = self._db.execute(
                "SELECT version FROM history WHERE document_id=? AND flat IS NOT NULL"
                " ORDER BY version LIMIT 1", (document_id,)).fetchone()  # fmt: skip
            if row is None:
                break
            self._delete(document_id, [row[0]])
            dropped += 1
        return flattened, dropped

    def _flatten(self, document_id: str, version: int) -> None:
        doc = self._replay(document_id, version)
        notebook = _notebook(doc)
        for cell in notebook["cells"]:
            if "outputs" in cell:
                cell["outputs"] = []
        flat = {"notebook": notebook, "trusted": {}}
        blobs.execute(
            self._db, f"UPDATE history SET data=NULL, flat={blobs.BLOB} WHERE document_id=? AND"
            " version=?", (zlib.compress(json.dumps(flat).encode(), 6), document_id, version),
            table="history", column="flat", key=_version(document_id, version))  # fmt: skip
        # The next version replays from this one's state: keep that, and nothing older.
        self._put_checkpoint(document_id, version, doc.get_update())
        self._db.execute("DELETE FROM history_checkpoints WHERE document_id=? AND version<?",
                         (document_id, version))  # fmt: skip

    # -- purge -------------------------------------------------------------------------------

    def purge_before(self, document_id: str, version: int) -> int:
        """Drop every version before ``version`` (whose state becomes the first checkpoint,
        without the content deleted before it). Inside the caller's transaction."""
        if version <= 0:
            return 0
        self._put_checkpoint(document_id, version, self._replay(document_id, version).get_update())
        gone = [r[0] for r in self._db.execute(
            "SELECT version FROM history WHERE document_id=? AND version<?",
            (document_id, version))]  # fmt: skip
        self._delete(document_id, gone)
        self._db.execute("DELETE FROM history_checkpoints WHERE document_id=? AND version<?",
                         (document_id, version))  # fmt: skip
        return len(gone)

    def purge_one(self, document_id: str, version: int) -> int:
        """Drop one version: its change is folded into the next version, re-encoded from
        the state before it so that content added and removed between them is gone."""
        rows = self._db.execute(
            "SELECT version FROM history WHERE document_id=? AND version>=? ORDER BY version"
            " LIMIT 2", (document_id, version)).fetchall()  # fmt: skip
        if not rows or rows[0][0] != version:
            raise HistoryError(f"version {version} is not in the history")
        if len(rows) < 2:
            raise HistoryError(f"version {version} is the newest: it is the notebook as it is")
        before = self._db.execute(
            "SELECT MAX(version) FROM history WHERE document_id=? AND version<?",
            (document_id, version)).fetchone()[0]  # fmt: skip
        if before is None:
            return self.purge_before(document_id, rows[1][0])
        following = rows[1][0]
        old = self._replay(document_id, before)
        new = self._replay(document_id, following)
        blobs.execute(
            self._db, f"UPDATE history SET data={blobs.BLOB} WHERE document_id=? AND version=?",
            (new.get_update(old.get_state()), document_id, following),
            table="history", column="data", key=_version(document_id, following))  # fmt: skip
        self._delete(document_id, [version])
        return 1


def _version(document_id: str, version: int) -> tuple[str, tuple[str, int]]:
    """The ``key`` of one history row, for :func:`blobs.execute`."""
    return "document_id=? AND version=?", (document_id, version)


def _notebook(doc: Doc[Any]) -> dict[str, Any]:
    """The notebook as JSON, read in one transaction: pycrdt otherwise opens one per key
    read, and a 1,000-cell notebook takes about 1.4x as long."""
    notebook = YNotebook(doc)  # outside: its undo manager cannot be made inside a transaction
    with doc.transaction():
        return notebook.get()


def _trusted(doc: Doc[Any]) -> dict[str, str]:
    state = doc.get("state", type=Map)
    ours = state.get(STATE_KEY)
    record = ours.get(TRUST_KEY) if isinstance(ours, Map) else None
    if isinstance(record, Map):
        return {str(k): str(v) for k, v in record.items()}
    return {}
