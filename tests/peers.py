"""A Python peer of the sidecar, speaking y-websocket's sync and awareness protocol.

Usage::

    async with NotebookPeer.connect(url, token) as peer:  # synced on entry
        peer.notebook.set_cell(0, source="x = 1")          # local edits are sent on commit
        await peer.wait_until(lambda p: p.notebook.cell_number == 3)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pycrdt import (
    Awareness,
    Doc,
    TransactionEvent,
    YMessageType,
    YSyncMessageType,
    create_awareness_message,
    create_sync_message,
    create_update_message,
    handle_sync_message,
    read_message,
)
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from kernel_collab import protocol
from kernel_collab.notebook_core.cells import shared_notebook

DEFAULT_TIMEOUT = 10.0
"""Seconds a peer waits for the sidecar (to sync, or for :meth:`NotebookPeer.wait_until`)."""


def url_with_token(url: str, token: str | None) -> str:
    """Return ``url`` with its ``token`` query parameter set to ``token`` (removed if None)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"]
    if token is not None:
        query.append(("token", token))
    return urlunsplit(parts._replace(path=parts.path or "/", query=urlencode(query)))


def clock_in(state: bytes, client_id: int) -> int:
    """A client's clock in an encoded state vector (0 if absent)."""
    count, pos = protocol.read_var_uint(state, 0)
    for _ in range(count):
        client, pos = protocol.read_var_uint(state, pos)
        clock, pos = protocol.read_var_uint(state, pos)
        if client == client_id:
            return clock
    return 0


class NotebookPeer:
    """A ``jupyter_ydoc.YNotebook`` kept in sync with the sidecar over one WebSocket.

    Local transactions on :attr:`doc` are sent as updates when they commit; incoming
    updates and awareness changes wake :meth:`wait_until`.
    """

    wait_timeout: float = DEFAULT_TIMEOUT
    """Seconds :meth:`wait_until` waits before raising ``TimeoutError`` (settable per peer)."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.doc: Doc[Any] = Doc()
        self.notebook = shared_notebook(self.doc)
        self.awareness = Awareness(self.doc)
        self.synced = False
        """Whether the sidecar's document has been received (true once connected)."""
        self._websocket = websocket
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._applying_remote = False
        self._echoes: Doc[Any] = Doc()
        """What the sidecar sent, alone: its state vector says which local edits it echoed."""
        self._closed: BaseException | None = None
        self.doc.observe(self._on_transaction)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls, url: str, token: str | None, *, sync_timeout: float = DEFAULT_TIMEOUT
    ) -> AsyncIterator[NotebookPeer]:
        """Connect to ``url`` with ``token`` and yield the peer once its document is synced.

        Raises ``websockets.exceptions.InvalidStatus`` if the sidecar refuses the upgrade.
        On exit, pending messages are sent and the peer's awareness state is cleared.
        """
        uri = url_with_token(url, token)
        async with ws_connect(uri, open_timeout=sync_timeout, max_size=None) as websocket:
            peer = cls(websocket)
            tasks = [asyncio.create_task(peer._receive()), asyncio.create_task(peer._send())]
            try:
                peer._outbox.put_nowait(create_sync_message(peer.doc))
                async with asyncio.timeout(sync_timeout):
                    await peer._wait(lambda: peer.synced)
                yield peer
                peer.set_awareness(None)  # tell the others this peer left
                async with asyncio.timeout(sync_timeout):
                    await peer._outbox.join()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def peers(self) -> dict[int, dict[str, Any]]:
        """Awareness states of the other peers, by client id."""
        return {k: v for k, v in self.awareness.states.items() if k != self.awareness.client_id}

    @property
    def close_code(self) -> int | None:
        """The close code the sidecar sent, once it closed this connection with an error."""
        closed = self._closed
        return closed.rcvd.code if isinstance(closed, ConnectionClosed) and closed.rcvd else None

    @property
    def close_reason(self) -> str | None:
        """The reason that came with :attr:`close_code`."""
        closed = self._closed
        return closed.rcvd.reason if isinstance(closed, ConnectionClosed) and closed.rcvd else None

    def set_awareness(self, state: dict[str, Any] | None) -> None:
        """Set (or, with None, clear) this peer's awareness state and send it."""
        self.awareness.set_local_state(state)
        update = self.awareness.encode_awareness_update([self.awareness.client_id])
        self._outbox.put_nowait(create_awareness_message(update))

    async def flush(self) -> None:
        """Wait until every message queued so far has been handed to the WebSocket.

        Raises ``ConnectionError`` if the connection ended, so some may not have been.
        """
        await self._outbox.join()
        if self._closed is not None:
            raise ConnectionError("the connection to the sidecar ended") from self._closed

    def drop(self) -> None:
        """Close the TCP connection (what was sent goes out first) with no closing handshake:
        a client that vanished."""
        self._websocket.transport.close()

    async def acknowledged(self) -> None:
        """Wait until the sidecar has echoed every local edit back (so it is in its store):
        :meth:`flush` only hands them to the socket, which a stopping sidecar may not read."""
        await self.flush()
        own = self.doc.client_id
        sent = clock_in(self.doc.get_state(), own)
        await self.wait_until(lambda p: clock_in(p._echoes.get_state(), own) >= sent)

    async def wait_until(self, predicate: Callable[[NotebookPeer], bool]) -> None:
        """Return once ``predicate(self)`` holds, re-checking it after each incoming message.

        Raises ``TimeoutError`` after :attr:`wait_timeout` seconds, ``ConnectionError`` if
        the connection ends first.
        """
        try:
            async with asyncio.timeout(self.wait_timeout):
                await self._wait(lambda: predicate(self))
        except TimeoutError:
            raise TimeoutError(f"condition not met within {self.wait_timeout:g} s") from None

    async def _wait(self, condition: Callable[[], bool]) -> None:
        while not condition():
            if self._closed is not None:
                raise ConnectionError("the connection to the sidecar ended") from self._closed
            event = self._changed
            await event.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _on_transaction(self, event: TransactionEvent) -> None:
        if not self._applying_remote:
            self._outbox.put_nowait(create_update_message(event.update))

    async def _send(self) -> None:
        while True:
            message = await self._outbox.get()
            try:
                if self._closed is None:
                    await self._websocket.send(message)
            except ConnectionClosed as exc:
                self._closed = exc
                self._notify()
            finally:
                self._outbox.task_done()

    async def _receive(self) -> None:
        try:
            async for message in self._websocket:
                if isinstance(message, bytes):
                    self._handle(message)
                    self._notify()
        except Exception as exc:  # noqa: BLE001 - handed to whoever waits on this peer
            self._closed = exc
        else:
            self._closed = ConnectionError("the sidecar closed the connection")
        self._notify()

    def _handle(self, message: bytes) -> None:
        if message[0] == YMessageType.SYNC:
            self._applying_remote = True
            try:
                reply = handle_sync_message(message[1:], self.doc)
            finally:
                self._applying_remote = False
            if reply is not None:
                self._outbox.put_nowait(reply)
            if message[1] != YSyncMessageType.SYNC_STEP1:
                handle_sync_message(message[1:], self._echoes)
            if message[1] == YSyncMessageType.SYNC_STEP2:
                self.synced = True
        elif message[0] == YMessageType.AWARENESS:
            self.awareness.apply_awareness_update(read_message(message[1:]), "remote")
        # Other message types (e.g. kernel_collab's requests) are not this helper's concern.


async def vanish(url: str, token: str, rng: random.Random) -> str:
    """Connect, maybe ask to sync and read a little, then drop the TCP connection with no
    closing handshake (a laptop lid shut, a network gone): how far it got."""
    async with ws_connect(url_with_token(url, token), max_size=None) as ws:
        if rng.random() < 0.3:
            ws.transport.abort()
            return "before syncing"
        await ws.send(create_sync_message(Doc()))
        for _ in range(rng.randint(0, 4)):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.2)
        await asyncio.sleep(rng.random() * 0.02)  # a random moment of the relay
        ws.transport.abort()
        return "mid-sync"
