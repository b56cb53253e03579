"""The room: one shared notebook, its peers, and the apply → commit → relay path.

Every change to the document — from a peer, from the disk watcher, later from the kernel
bridge — is a pycrdt transaction. The document's observer queues each transaction's update;
the committer task commits everything queued in one SQLite transaction (group commit) and only
then relays it, merged, to every peer, the sender included: the echo is the sender's
acknowledgement, so an update anyone has seen is durable. A sync step 2 reply waits for the
commit of everything it contains for the same reason.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus
from jupyter_ydoc import YNotebook
from pycrdt import (
    Awareness,
    Map,
    TransactionEvent,
    create_awareness_message,
    create_sync_message,
    create_update_message,
    merge_updates,
)
from traitlets import Int
from traitlets.config import LoggingConfigurable

from . import schema, wire
from .docstore import DocumentStore
from .ownership import FieldGuard
from .peer import CLOSE_PROTOCOL_ERROR, CLOSE_READ_ONLY, CLOSE_REFUSED, Peer
from .trust import TrustLedger

EMPTY_UPDATE = b"\x00\x00"
STATE_KEY = "kernel_collab"
"""Key of kernel_collab's own map inside the document's ``state`` map."""

RequestHandler = Callable[[Peer, dict[str, Any]], Awaitable[dict[str, Any]]]


class Room(LoggingConfigurable):
    """A notebook's shared document and the peers connected to it."""

    peer_queue_size = Int(
        10_000,
        help="Messages queued for one peer before it is disconnected as too slow "
        "(it resyncs on reconnect).",
    ).tag(config=True)
    max_awareness_bytes = Int(
        16 * 1024,
        help="Largest awareness state (its JSON, in bytes) a peer may share: a larger one is "
        "neither applied nor relayed, and the peer gets a notice saying so.",
    ).tag(config=True)

    def __init__(self, notebook: YNotebook, store: DocumentStore, **kwargs: Any):
        super().__init__(**kwargs)
        self.notebook = notebook
        self.doc = notebook.ydoc
        self.awareness = Awareness(self.doc)
        self.store = store
        self.peers: set[Peer] = set()
        self.request_handlers: dict[str, RequestHandler] = {}
        self.admin_handlers: dict[str, RequestHandler] = {}
        """Requests only admin connections may make (kernel lifecycle)."""
        self.peer_listeners: list[Callable[[], None]] = []
        """Called after a peer leaves."""
        self.join_listeners: list[Callable[[Peer], None]] = []
        """Called after a peer joins."""
        self.change_listeners: list[Callable[[], None]] = []
        self._awareness_owner: dict[int, Peer] = {}
        self._pending: list[bytes] = []
        self._applied_seq = 0
        self._committed_seq = 0
        self._has_pending = anyio.Event()
        self._committed = anyio.Event()
        self._unstored: list[bytes] = []
        self.commit_times: deque[float] = deque(maxlen=10_000)
        """Durations of the latest group commits, in seconds."""
        self.committed_updates = 0
        self._subscription = self.doc.observe(self._on_transaction)
        self.trust = TrustLedger(notebook, lambda: self.status)
        self.guard = FieldGuard(notebook, self.trust)
        self.request_handlers["stats"] = self._handle_stats
        self.request_handlers["sync"] = self._handle_sync

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

    # -- apply → commit → relay --------------------------------------------------------------

    def _on_transaction(self, event: TransactionEvent) -> None:
        update = event.update
        if update == EMPTY_UPDATE:
            return
        self._pending.append(update)
        self._applied_seq += 1
        self._has_pending.set()
        for listener in self.change_listeners:
            listener()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit and relay changes until cancelled."""
        task_status.started()
        while True:
            await self._has_pending.wait()
            self._has_pending = anyio.Event()
            await self._commit_and_relay()

    async def flush(self) -> None:
        """Commit whatever is applied but not yet stored (used at shutdown)."""
        if self._pending:
            await self._commit_and_relay()

    async def _commit_and_relay(self) -> None:
        batch, self._pending = self._pending, []
        seq = self._applied_seq
        if not batch:
            return
        merged = batch[0] if len(batch) == 1 else merge_updates(*batch)
        to_store = [*self._unstored, merged]  # one row per group commit
        started = time.perf_counter()
        try:
            await self.store.append(to_store)
        except (sqlite3.Error, OSError) as exc:  # the store failing must not stop the room
            self._unstored = to_store
            self.log.error(
                "store %s failed to commit %d updates of document %s (kept in memory, "
                "retried at the next change): %s",
                self.store.db_path,
                len(to_store),
                self.store.document_id,
                exc,
            )
            self.set_status("store_error", str(exc))
        else:
            if self._unstored:
                self.log.info("store %s is writable again", self.store.db_path)
                self._unstored = []
                self.set_status("store_error", None)
        self.commit_times.append(time.perf_counter() - started)
        self.committed_updates += len(batch)
        self._committed_seq = seq
        message = create_update_message(merged)
        for peer in list(self.peers):
            peer.send(message)
        self._committed.set()
        self._committed = anyio.Event()
        if not self._unstored and self.store.wants_compaction():
            try:
                await self.store.compact(self.doc.get_update())
            except (sqlite3.Error, OSError) as exc:  # the rows stay valid: retried later
                self.log.error("store %s: compaction of document %s failed (kept as it was): "
                               "%s", self.store.db_path, self.store.document_id, exc)  # fmt: skip

    async def wait_committed(self, seq: int) -> None:
        """Wait until every update applied up to ``seq`` is stored."""
        while self._committed_seq < seq:
            await self._committed.wait()

    async def wait_all_committed(self) -> None:
        """Wait until every update applied so far is stored."""
        await self.wait_committed(self._applied_seq)

    # -- peers -------------------------------------------------------------------------------

    def join(self, peer: Peer) -> None:
        """Add a peer and start the sync handshake (our state vector, everyone's awareness)."""
        self.peers.add(peer)
        peer.send(create_sync_message(self.doc))
        states = [cid for cid in self.awareness.states if cid != self.awareness.client_id]
        if states:
            peer.send(create_awareness_message(self.awareness.encode_awareness_update(states)))
        for listener in self.join_listeners:
            listener(peer)

    def leave(self, peer: Peer) -> None:
        """Remove a peer and tell the others its awareness states are gone."""
        self.peers.discard(peer)
        gone = [cid for cid in peer.awareness_ids if cid in self.awareness.states]
        if gone:
            self.awareness.remove_awareness_states(gone, origin=peer)
            message = create_awareness_message(self.awareness.encode_awareness_update(gone))
            for other in list(self.peers):
                other.send(message)
        for listener in self.peer_listeners:
            listener()

    @property
    def people(self) -> int:
        """Connected peers other than admin connections."""
        return sum(1 for p in self.peers if not p.admin)

    async def receive(self, peer: Peer, data: bytes) -> None:
        """Handle one message from a peer; raise :class:`wire.ProtocolError` if malformed."""
        message = wire.decode(data)
        kind = message.kind
        if kind in (wire.Kind.SYNC_UPDATE, wire.Kind.SYNC_STEP2):
            if message.payload != EMPTY_UPDATE and not peer.may("write"):
                peer.close(CLOSE_READ_ONLY, "read-only: your edits were refused; reload")
                return
            if message.payload != EMPTY_UPDATE:
                self._apply_checked(peer, message.payload)
        elif kind == wire.Kind.SYNC_STEP1:
            try:
                update = self.doc.get_update(message.payload)
            except ValueError as exc:
                raise wire.ProtocolError(f"invalid state vector: {exc}") from exc
            seq = self._applied_seq
            await self.wait_committed(seq)
            peer.send(wire.encode_sync_step2(update))
        elif kind == wire.Kind.AWARENESS:
            self._receive_awareness(peer, data, message.payload)
        else:
            assert message.request is not None
            await self._receive_request(peer, message.request)

    def _apply_checked(self, peer: Peer, update: bytes) -> None:
        """Apply a peer's update, hold it against field ownership (a refused update is undone
        and the peer closed with 4403), then repair the cells it broke (the peer is closed with
        1002); all in the same group commit, so nobody ever sees or stores what was refused."""
        try:
            seen, refused = self.guard.apply(update)
        except ValueError as exc:
            raise wire.ProtocolError(f"invalid Y update: {exc}") from exc
        if refused is not None:
            self.log.warning(
                "document %s: refused and undid an update from %s: %s",
                self.store.document_id, peer.name, refused,
            )  # fmt: skip
            peer.close(CLOSE_REFUSED, f"refused: {refused}; reload"[:120])
            return
        self.guard.judge_inserted(seen.inserted)
        problems = []
        with self.doc.transaction():
            for index in sorted(seen.touched, reverse=True):
                if index >= len(self.notebook.ycells):
                    continue
                problem = schema.cell_problem(self.notebook.ycells[index])
                if problem is None:
                    continue
                problems.append(problem)
                fixed = schema.repaired(self.notebook.ycells[index])
                del self.notebook.ycells[index]
                if fixed is not None:
                    self.notebook.ycells.insert(index, self.notebook.create_ycell(fixed))
        if problems:
            self.log.error(
                "document %s: refused an update from %s that broke the notebook (%s); the "
                "cells were repaired, the rest of the update kept, and the peer told to reload",
                self.store.document_id, peer.name, "; ".join(problems),
            )  # fmt: skip
            peer.close(CLOSE_PROTOCOL_ERROR, f"invalid notebook: {problems[0]}"[:120])

    def _receive_awareness(self, peer: Peer, data: bytes, update: bytes) -> None:
        entries = wire.parse_awareness_clients(update)
        kept = []
        for client_id, clock, state in entries:
            size = len(state.encode())
            if size > self.max_awareness_bytes:
                self._refuse_awareness(peer, client_id, size)
                continue
            owner = self._awareness_owner.get(client_id)
            if owner is not None and owner is not peer and owner in self.peers:
                self.log.warning(
                    "dropped awareness of client %d from %s: it belongs to %s",
                    client_id, peer.name, owner.name,
                )  # fmt: skip
                continue
            self._awareness_owner[client_id] = peer
            if state:
                peer.awareness_ids.add(client_id)
            kept.append((client_id, clock, self._stamp(peer, state)))
        if not kept:
            return
        update = wire.encode_awareness(kept)
        self.awareness.apply_awareness_update(update, origin=peer)
        message = create_awareness_message(update)
        for other in list(self.peers):
            if other is not peer:
                other.send(message)

    def _refuse_awareness(self, peer: Peer, client_id: int, size: int) -> None:
        """Tell a peer its awareness state is too big to share (logged once per peer)."""
        error = (f"awareness state of {size} bytes is over the {self.max_awareness_bytes}-byte "
                 "limit; not shared")  # fmt: skip
        if "awareness_size" not in peer.warned:
            peer.warned.add("awareness_size")
            self.log.warning("refused awareness of client %d from %s: %s (logged once per peer)",
                             client_id, peer.name, error)  # fmt: skip
        peer.send(wire.encode_request({"type": "notice", "ok": False, "error": error}))

    @staticmethod
    def _stamp(peer: Peer, state: str) -> str:
        """A peer's awareness state with ``user`` replaced by who the server says it is (see
        :func:`awareness_user`); the rest of the state (cursors, …) is the peer's."""
        if not state or state == "null":
            return state
        value = json.loads(state)
        if not isinstance(value, dict):
            return state
        value["user"] = awareness_user(peer, value.get("user"))
        return json.dumps(value, separators=(",", ":"))

    async def _receive_request(self, peer: Peer, request: dict[str, Any]) -> None:
        rtype = request.get("type")
        reply: dict[str, Any] = {"reply_to": request.get("id"), "type": rtype}
        handler = self.request_handlers.get(rtype) if isinstance(rtype, str) else None
        if handler is None and isinstance(rtype, str) and rtype in self.admin_handlers:
            handler = self.admin_handlers[rtype] if peer.admin else _refuse_admin
        if handler is None:
            reply.update(ok=False, error=f"unknown request type {rtype!r}")
        else:
            try:
                reply.update(await handler(peer, request))
            except RequestError as exc:
                reply.update(ok=False, error=str(exc))
        peer.send(wire.encode_request(reply))

    async def _handle_sync(self, _peer: Peer, _request: dict[str, Any]) -> dict[str, Any]:
        """Reply once everything this peer sent before is stored (its messages are handled in
        order): the client's ``sync()``."""
        await self.wait_all_committed()
        return {"ok": True}

    async def _handle_stats(self, _peer: Peer, _request: dict[str, Any]) -> dict[str, Any]:
        """Figures for operators and the benchmark: commits, their durations, the store."""
        times = sorted(self.commit_times)

        def pct(q: float) -> float | None:
            return times[min(len(times) - 1, int(q * len(times)))] if times else None

        return {
            "ok": True,
            "peers": len(self.peers),
            "commits": len(times),
            "committed_updates": self.committed_updates,
            "commit_p50_s": pct(0.5),
            "commit_p99_s": pct(0.99),
            "commit_total_s": sum(times),
            "store_path": str(self.store.db_path),
            "store_updates_since_snapshot": self.store.pending_count,
        }

    def disconnect(self, peer: Peer, exc: Exception) -> None:
        """Close a peer that sent something malformed; the room carries on."""
        peer.close(CLOSE_PROTOCOL_ERROR, f"protocol error: {exc}")


_USER_KEYS = ("username", "name", "display_name", "initials", "color")
_AVATAR_PREFIXES = ("https://", "http://", "/")


def awareness_user(peer: Peer, claimed: Any) -> dict[str, Any]:
    """The ``user`` of a peer's awareness: its identity as the server authenticated it, and its
    role (``run``, ``edit`` or ``read``). Nothing the peer claimed survives, except the name an
    anonymous peer (a holder of the sidecar's own token: the kernel's API, a local script)
    gives itself; an avatar is kept only as an http(s) or same-site URL."""
    identity = peer.identity
    user = {k: identity[k] for k in _USER_KEYS if isinstance(identity.get(k), str)}
    avatar = identity.get("avatar_url")
    if isinstance(avatar, str) and avatar.lower().startswith(_AVATAR_PREFIXES):
        user["avatar_url"] = avatar
    if identity.get("anonymous"):
        # Every anonymous peer has the username "anonymous": not a key to tell them apart.
        user.pop("username", None)
        name = claimed.get("name") if isinstance(claimed, dict) else None
        if isinstance(name, str) and name.strip():
            user["name"] = user["display_name"] = name[:64]
    user["role"] = peer.role
    return user


class RequestError(Exception):
    """A request cannot be served; the message goes back to the peer that sent it."""


async def _refuse_admin(peer: Peer, request: dict[str, Any]) -> dict[str, Any]:
    raise RequestError(f"{request.get('type')!r} needs the sidecar's admin token")
