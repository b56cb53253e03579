"""The sidecar's WebSocket endpoint: token check, one task group per connection."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from http import HTTPStatus
from itertools import count
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit, urlunsplit

import anyio
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from .. import protocol
from ..protocol import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_STALE_EPOCH,
    CLOSE_TOO_BIG,
    IDENTITY_HEADER,
)
from .inbound import Inbound
from .peer import Peer
from .room import Room


def redact_url(url: str) -> str:
    """``url`` with the value of every query parameter whose name contains ``token`` replaced
    by ``[redacted]``: what may be logged of a URL that carries a secret."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = "&".join(
        f"{key}{sep}[redacted]" if "token" in key.lower() else f"{key}{sep}{value}"
        for key, sep, value in (item.partition("=") for item in parts.query.split("&"))
    )
    return urlunsplit(parts._replace(query=query))


def request_token(request: Request) -> str | None:
    """The token of a handshake: ``?token=`` or an ``Authorization: token …`` header."""
    query = _query(request)
    if "token" in query:
        return query["token"][0]
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("token", "bearer") and value:
        return value.strip()
    return None


_ONLY_KEY, _, _ONLY_VALUE = protocol.REQUESTS_ONLY_QUERY.partition("=")
"""How the server's own request-only connections say so (`?requests=only`)."""


def _query(request: Request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request.path).query)


def _matches(given: str | None, token: str) -> bool:
    return bool(token) and given is not None and hmac.compare_digest(given.encode(), token.encode())


TURN: Final = 0.005
"""Seconds one connection's messages may keep the event loop before the others get a turn: a
read from the socket can hold thousands of frames (a peer that sends an update per
keystroke, flooding), and handling them all at once stalled every other peer and the
kernel's outputs for up to 0.8 s."""

CONNECTION_OPTIONS: dict[str, Any] = {"max_queue": 64, "ping_interval": None}
"""Of every peer connection, direct or handed over (``compression`` stays off: Y updates are
small and binary, and the server's proxy never compressed)."""


class _HandedOver(ServerConnection):
    """A connection whose handshake request was read by the Jupyter server: it is fed to the
    protocol as the connection is made, before any byte is read from the socket."""

    def __init__(self, request: bytes, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request = request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.data_received(self._request)


class SyncServer:
    """Serves one room to WebSocket peers on loopback."""

    def __init__(
        self,
        room: Room,
        inbound: Inbound,
        *,
        token: str,
        admin_token: str,
        max_message_size: int,
        log: logging.Logger,
    ):
        self.room = room
        self.inbound = inbound
        self._token = token
        self._admin_token = admin_token
        self._max_message_size = max_message_size
        self._log = log
        self._ids = count(1)
        self.port = 0

    def _check_token(self, connection: ServerConnection, request: Request) -> Response | None:
        """Each handshake: 403 if it comes from a web page, 401 without a valid token (logged
        with the URL's tokens redacted)."""
        origin = request.headers.get("Origin")
        if origin is not None:  # a web page's (any site can open a WebSocket to loopback)
            self._log.warning(
                "refused a connection from %s to %s: it carries an Origin header (%.100r); "
                "browsers reach notebooks through the Jupyter server",
                connection.remote_address, redact_url(request.path), origin,
            )  # fmt: skip
            return connection.respond(
                HTTPStatus.FORBIDDEN,
                "connections from web pages are refused: connect through the Jupyter server\n",
            )
        given = request_token(request)
        if not (_matches(given, self._token) or _matches(given, self._admin_token)):
            self._log.warning(
                "refused a connection from %s to %s: %s token",
                connection.remote_address,
                redact_url(request.path),
                "missing" if given is None else "wrong",
            )
            return connection.respond(HTTPStatus.UNAUTHORIZED, "a valid token is required\n")
        return None

    async def start(self, port: int) -> Server:
        """Listen on ``127.0.0.1:port`` (0 picks a free port)."""
        server = await serve(
            self._handle,
            "127.0.0.1",
            port,
            process_request=self._check_token,
            max_size=self._max_message_size,
            compression=None,
            **CONNECTION_OPTIONS,
        )
        self.port = server.sockets[0].getsockname()[1]
        return server

    def handed_over(self, server: Server, request: bytes) -> ServerConnection:
        """A connection of ``server`` for a socket the Jupyter server handed over with the
        handshake ``request``: checked and served as if it had connected here."""
        protocol = ServerProtocol(max_size=self._max_message_size)
        return _HandedOver(request, protocol, server, **CONNECTION_OPTIONS)

    async def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        trusted = _matches(request_token(request), self._admin_token)
        identity = _identity(request, trusted)
        # A trusted connection speaking for a person (the server's proxy) is that person.
        admin = trusted and request.headers.get(IDENTITY_HEADER) is None
        peer = Peer(
            connection,
            name=f"{identity.get('username', 'peer')}#{next(self._ids)}",
            queue_size=self.room.peer_queue_size,
            identity=identity,
            admin=admin,
            log=self._log,
            write_now=partial(_write_now, connection),
        )
        query = _query(request)
        epoch = query.get("epoch", [None])[0]
        current = self.room.status.get("epoch")
        if epoch is not None and epoch != current:
            # A copy of another incarnation of this document: merging it would duplicate cells.
            await connection.close(
                CLOSE_STALE_EPOCH, f"document epoch is now {current}: drop your copy and reload"
            )
            return
        # The server's own requests (room info, kernel lifecycle) join nothing.
        joins = not (admin and query.get(_ONLY_KEY) == [_ONLY_VALUE])
        log = self._log.info if joins else self._log.debug
        log("%s joined (%d peers)", peer.name, len(self.room.peers) + joins)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_ignore_closed, peer.run_sender)
                try:
                    if joins:
                        self.room.join(peer)
                    await self._receive(connection, peer)
                finally:
                    if joins:
                        self.room.leave(peer)
                    peer.close(1000, "")
        finally:
            log("%s left (%d peers)", peer.name, len(self.room.peers))

    async def _receive(self, connection: ServerConnection, peer: Peer) -> None:
        turn_ends = time.perf_counter() + TURN
        try:
            async for data in connection:
                if peer.closed:
                    return
                try:
                    await self.inbound.route(peer, protocol.decode(data))  # type: ignore[arg-type]
                except protocol.ProtocolError as exc:
                    peer.close(CLOSE_PROTOCOL_ERROR, f"protocol error: {exc}")
                    return
                except Exception:  # noqa: BLE001 - ours: logged, and that peer closed with 1011
                    self._log.exception("%s: handling its message failed; closing it", peer.name)
                    peer.close(CLOSE_INTERNAL_ERROR, "the sidecar failed handling your message")
                    return
                if time.perf_counter() > turn_ends:  # after this message: it is not delayed
                    await anyio.lowlevel.checkpoint()  # the others' turn
                    turn_ends = time.perf_counter() + TURN
        except ConnectionClosed as exc:
            if exc.rcvd is None and exc.sent is not None and exc.sent.code == CLOSE_TOO_BIG:
                self._log.warning("closed %s: %s", peer.name, exc.sent.reason)
            elif exc.rcvd is None and exc.sent is None:
                self._log.info("%s vanished without closing", peer.name)


def _identity(request: Request, trusted: bool) -> dict[str, Any]:
    """Who a connection speaks for: set by trusted connections; anonymous otherwise, and then
    it may write and execute (it holds the kernel's own secret)."""
    if trusted:
        raw = request.headers.get(IDENTITY_HEADER)
        if raw:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = None
            if isinstance(value, dict):
                value.setdefault("permissions", {"write": False, "execute": False})
                return value
        return {"username": "kernel_collab", "name": "kernel_collab",
                "permissions": {"write": True, "execute": True}}  # fmt: skip
    name = _query(request).get("name", ["Anonymous"])[0][:64]
    return {"username": "anonymous", "name": name, "display_name": name, "anonymous": True,
            "permissions": {"write": True, "execute": True}}  # fmt: skip


WRITE_NOW_LIMIT = 64 * 1024
"""Bytes a connection's socket buffer may hold for a message to be written at once (past it,
the peer's sender waits for the socket to drain)."""


def _write_now(connection: ServerConnection, message: bytes) -> bool:
    """Write ``message`` to ``connection`` now if it is open and keeping up (True); False leaves
    it to the peer's queue. The frame goes out as ``websockets.broadcast`` writes it."""
    transport = connection.transport
    if (
        connection.protocol.state is not State.OPEN
        or transport.is_closing()  # lost, websockets not told yet: each write logged a warning
        or connection.send_in_progress is not None
        or transport.get_write_buffer_size() > WRITE_NOW_LIMIT
    ):
        return False
    try:
        broadcast([connection], message, raise_exceptions=True)
    except ExceptionGroup:
        return False  # the connection broke: the queue's sender finds it closed
    return True


async def _ignore_closed(fn: Callable[[], Awaitable[None]]) -> None:
    with contextlib.suppress(ConnectionClosed):
        await fn()
