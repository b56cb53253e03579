"""Headless y-websocket peers (pycrdt + websockets), the same code for every system.

A :class:`Peer` keeps a pycrdt ``Doc`` holding a jupyter_ydoc ``YNotebook``, answers the
server's sync step 1, and records for every Y client the clock up to which the server has
sent it that client's changes (its state vector after each message). "Peer B has seen edit E
of writer A" is then ``B.seen[A.client_id] >= clock(E)``. A peer that edits also applies what
the server sends to a mirror document (its own Doc already has its edits), so the same test
on the server's echo is the writer's acknowledgement. Times are ``time.perf_counter()``
values taken when a message came off the socket, before it is applied.

``listeners`` are called with that time after each document update is applied (the kernel
workloads watch a cell's outputs grow with them). kernel_collab's own requests (message type
100, ``kernel_collab.protocol``) are sent with :meth:`Peer.request` or, without waiting,
:meth:`Peer.request_message`; other systems never see them.
"""

from __future__ import annotations

import itertools
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from jupyter_ydoc import YNotebook
from pycrdt import (
    Awareness,
    Doc,
    Text,
    TransactionEvent,
    YMessageType,
    YSyncMessageType,
    create_awareness_message,
    create_sync_message,
    create_update_message,
    handle_sync_message,
    read_message,
)
from websockets.asyncio.client import ClientConnection, connect

from kernel_collab import protocol

EMPTY_UPDATE = b"\x00\x00"
REQUEST = protocol.REQUEST
"""kernel_collab's request/reply message type (``varuint(100) · varuint(len) · JSON``)."""
_request_ids = itertools.count(1)


class PeerError(RuntimeError):
    """A peer could not connect, sync, or see what it waited for."""


def decode_state_vector(sv: bytes) -> dict[int, int]:
    """Decode an encoded Y state vector into ``{client_id: clock}``."""
    count, pos = protocol.read_var_uint(sv, 0)
    out: dict[int, int] = {}
    for _ in range(count):
        client, pos = protocol.read_var_uint(sv, pos)
        clock, pos = protocol.read_var_uint(sv, pos)
        out[client] = clock
    return out


@dataclass
class Waiter:
    """A condition registered with :meth:`Peer.expect`, checked after each received message."""

    predicate: Callable[[], bool]
    event: anyio.Event = field(default_factory=anyio.Event)
    at: float = 0.0


def _holds(predicate: Callable[[], bool]) -> bool:
    """Evaluate a predicate; a document in mid-change (missing cell or key) is 'not yet'."""
    try:
        return predicate()
    except (IndexError, KeyError, PeerError):
        return False


class Peer:
    """One connected y-websocket peer of a notebook room."""

    def __init__(self, ws: ClientConnection, name: str):
        self.ws = ws
        self.name = name
        self.doc: Doc[Any] = Doc()
        self.notebook = YNotebook(self.doc)
        self.awareness = Awareness(self.doc)
        self.client_id: int = self.doc.client_id
        self.seen: dict[int, int] = {}
        """Highest clock of each client received from the server."""
        self._history: dict[int, tuple[list[int], list[float]]] = {}
        """Per client: each time ``seen`` grew, the new clock and the arrival time."""
        self.synced = anyio.Event()
        self.synced_at = 0.0
        self.received_bytes = 0
        self._waiters: list[Waiter] = []
        self._mirror: Doc[Any] | None = None
        """What the server sent, once this peer has edits of its own (for echoes)."""
        self._local = False
        self._outbox: list[bytes] = []
        self.listeners: list[Callable[[float], None]] = []
        """Called with the arrival time after each document update has been applied."""
        self.replies: dict[Any, dict[str, Any]] = {}
        """kernel_collab replies received, by ``reply_to`` (only those asked for)."""
        self._reply_events: dict[Any, anyio.Event] = {}
        self.doc.observe(self._on_transaction)

    def _on_transaction(self, event: TransactionEvent) -> None:
        if self._local and event.update != EMPTY_UPDATE:
            self._outbox.append(event.update)

    async def _receive(self) -> None:
        async for message in self.ws:
            now = time.perf_counter()
            if isinstance(message, str):
                raise PeerError(f"{self.name}: unexpected text frame {message[:80]!r}")
            self.received_bytes += len(message)
            if message[0] == REQUEST:
                self._on_reply(message)
                continue
            if message[0] != YMessageType.SYNC:
                # Awareness (1) and system-specific messages (jupyter-collaboration's RAW
                # type 2, kernel_collab's requests) carry nothing the benchmarks wait for.
                continue
            kind = message[1]
            reply = handle_sync_message(message[1:], self.doc)
            if reply is not None:
                await self.ws.send(reply)
            if kind in (YSyncMessageType.SYNC_STEP2, YSyncMessageType.SYNC_UPDATE):
                update = read_message(message[2:])
                if update != EMPTY_UPDATE:
                    if self._mirror is not None:
                        self._mirror.apply_update(update)
                    self._record(now)
                if kind == YSyncMessageType.SYNC_STEP2 and not self.synced.is_set():
                    self.synced_at = now
                    self.synced.set()
                for listener in self.listeners:
                    listener(now)
            if self._waiters:
                for w in [w for w in self._waiters if _holds(w.predicate)]:
                    w.at = now
                    w.event.set()
                    self._waiters.remove(w)

    def _on_reply(self, message: bytes) -> None:
        reply = protocol.decode(message).request or {}
        key = reply.get("reply_to")
        if key in self._reply_events:
            self.replies[key] = reply
            self._reply_events.pop(key).set()

    def _record(self, now: float) -> None:
        doc = self.doc if self._mirror is None else self._mirror
        for client, clock in decode_state_vector(doc.get_state()).items():
            if clock > self.seen.get(client, 0):
                self.seen[client] = clock
                clocks, times = self._history.setdefault(client, ([], []))
                clocks.append(clock)
                times.append(now)

    def expect(self, predicate: Callable[[], bool]) -> Waiter:
        """Register a condition before causing it, so its arrival time is exact."""
        waiter = Waiter(predicate)
        if _holds(predicate):
            raise PeerError(f"{self.name}: the condition holds before anything happened")
        self._waiters.append(waiter)
        return waiter

    async def wait(self, waiter: Waiter, timeout: float) -> float:
        """Wait for a registered condition; return the arrival time of the message that
        made it hold."""
        try:
            with anyio.fail_after(timeout):
                await waiter.event.wait()
        except TimeoutError:
            raise PeerError(f"{self.name}: condition not met within {timeout:g} s") from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return waiter.at

    async def wait_clock(self, client_id: int, clock: int, timeout: float) -> float:
        """Wait until updates of ``client_id`` up to ``clock`` came from the server; return
        when the message that completed them arrived (exact even if it came earlier)."""
        if self.seen.get(client_id, 0) < clock:
            await self.wait(self.expect(lambda: self.seen.get(client_id, 0) >= clock), timeout)
        clocks, times = self._history[client_id]
        return times[bisect_left(clocks, clock)]

    def cell_source(self, index: int) -> Text:
        """The shared text of a cell's source."""
        source = self.notebook.ycells[index]["source"]
        if not isinstance(source, Text):
            raise PeerError(f"cell {index} source is {type(source).__name__}, not Text")
        return source

    def edit(self, cell: int, text: str, at: int | None = None) -> tuple[bytes, int]:
        """Insert ``text`` into a cell's source (at its end by default) as one transaction.

        Returns the sync message to send and this peer's clock once the edit is applied."""
        source = self.cell_source(cell)
        if self._mirror is None:  # so far everything in our Doc came from the server
            self._mirror = Doc()
            self._mirror.apply_update(self.doc.get_update())
        self._local = True
        try:
            source.insert(len(source) if at is None else at, text)
        finally:
            self._local = False
        updates, self._outbox = self._outbox, []
        if len(updates) != 1:
            raise PeerError(f"{self.name}: an edit produced {len(updates)} updates")
        clock = decode_state_vector(self.doc.get_state())[self.client_id]
        return create_update_message(updates[0]), clock

    def change(self, fn: Callable[[], object]) -> bytes:
        """Make any local change (``fn`` edits :attr:`notebook`) in one transaction; return
        the update message to send (as :meth:`edit`, for changes other than an insert)."""
        if self._mirror is None:
            self._mirror = Doc()
            self._mirror.apply_update(self.doc.get_update())
        self._local = True
        try:
            with self.doc.transaction():
                fn()
        finally:
            self._local = False
        updates, self._outbox = self._outbox, []
        if len(updates) != 1:
            raise PeerError(f"{self.name}: a change produced {len(updates)} updates")
        return create_update_message(updates[0])

    def request_message(
        self, obj: dict[str, Any], *, want_reply: bool = False
    ) -> tuple[bytes, str]:
        """Encode a kernel_collab request (README: "Wire protocol") with a fresh ``id``;
        return the message and the id. With ``want_reply`` the reply is kept in
        :attr:`replies` under that id."""
        key = f"{self.name}-{next(_request_ids)}"
        if want_reply:
            self._reply_events[key] = anyio.Event()
        return protocol.encode_request({**obj, "id": key}), key

    async def wait_reply(self, key: str, timeout: float = 60.0) -> dict[str, Any]:
        """The reply to a request sent with ``want_reply``; a refusal is an error."""
        event = self._reply_events.get(key)
        if event is not None:
            try:
                with anyio.fail_after(timeout):
                    await event.wait()
            except TimeoutError:
                self._reply_events.pop(key, None)
                raise PeerError(f"{self.name}: no reply to {key} within {timeout:g} s") from None
        reply = self.replies.pop(key)
        if reply.get("ok") is not True:
            raise PeerError(f"{self.name}: request {key} refused: {reply}")
        return reply

    async def request(self, obj: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """Send a kernel_collab request and wait for its reply; a refusal is an error."""
        message, key = self.request_message(obj, want_reply=True)
        await self.ws.send(message)
        return await self.wait_reply(key, timeout)

    async def send(self, message: bytes) -> float:
        """Send one message; return the time just before it was handed to the socket."""
        t = time.perf_counter()
        await self.ws.send(message)
        return t


@asynccontextmanager
async def join(
    url: str,
    name: str,
    *,
    sync_timeout: float = 120.0,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Peer]:
    """Connect a peer, start its sync handshake and awareness, and wait until it is synced.

    ``peer.synced_at`` is when the server's sync step 2 (the whole document) arrived."""
    async with connect(
        url,
        max_size=None,
        compression=None,
        ping_interval=None,
        open_timeout=sync_timeout,
        proxy=None,
        additional_headers=headers,
    ) as ws:
        peer = Peer(ws, name)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_receive_until_closed, peer)
            await ws.send(create_sync_message(peer.doc))
            peer.awareness.set_local_state({"user": {"name": name, "username": name}})
            await ws.send(
                create_awareness_message(peer.awareness.encode_awareness_update([peer.client_id]))
            )
            try:
                with anyio.fail_after(sync_timeout):
                    await peer.synced.wait()
            except TimeoutError:
                raise PeerError(f"{name}: not synced within {sync_timeout:g} s ({url})") from None
            try:
                yield peer
            finally:
                tg.cancel_scope.cancel()


async def _receive_until_closed(peer: Peer) -> None:
    """Run a peer's receive loop; a close before cancellation is an error."""
    try:
        await peer._receive()
    except Exception as exc:
        raise PeerError(f"{peer.name}: connection failed: {exc!r}") from exc
    code = peer.ws.close_code
    raise PeerError(f"{peer.name}: server closed the connection (code {code})")
