"""Browser connections the Jupyter server hands over: the server authenticates a browser's
WebSocket request, then passes its socket here (SCM_RIGHTS) with the handshake it rebuilt
(identity and admin token in, cookies and ``Origin`` out), and steps out of the path. The
sidecar answers that handshake on the socket and serves it like any other peer
(docs/architecture.md, "The sync route")."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from functools import partial

import anyio
from anyio.abc import SocketStream
from websockets.asyncio.server import Server

from ..protocol import HANDOFF_LIMIT, handoff_address, handoff_length
from .server import SyncServer

RECEIVE_TIMEOUT = 5.0
"""Seconds the server has to send a handover once connected (it sends at once)."""


class HandoffError(ValueError):
    """A handover that cannot be served (the reason says why)."""


async def take_handoffs(
    name: str, sync: SyncServer, ws_server: Server, log: logging.Logger,
    *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:  # fmt: skip
    """Accept handovers on the abstract socket ``name`` until cancelled."""
    listener = await anyio.create_unix_listener(handoff_address(name))
    task_status.started()
    async with listener:
        await listener.serve(partial(_take, sync, ws_server, log))


async def _take(sync: SyncServer, ws_server: Server, log: logging.Logger,
                link: SocketStream) -> None:  # fmt: skip
    async with link:
        try:
            with anyio.fail_after(RECEIVE_TIMEOUT):
                request, sock = await _receive(link)
        except (OSError, TimeoutError, HandoffError, anyio.EndOfStream,
                anyio.BrokenResourceError) as exc:  # fmt: skip
            reason = ("it closed before its handshake came" if isinstance(exc, anyio.EndOfStream)
                      else str(exc) or type(exc).__name__)  # fmt: skip
            log.warning("dropped a connection the Jupyter server handed over: %s", reason)
            return
    connection = sync.handed_over(ws_server, request)
    try:
        await asyncio.get_running_loop().connect_accepted_socket(lambda: connection, sock)
    except OSError as exc:
        sock.close()
        log.warning("could not serve a connection the Jupyter server handed over: %s", exc)


async def _receive(link: SocketStream) -> tuple[bytes, socket.socket]:
    """The handshake and the browser's socket of one handover."""
    receive_fds = getattr(link, "receive_fds", None)
    if receive_fds is None:
        raise HandoffError("not a Unix socket")
    data, fds = await receive_fds(4 + HANDOFF_LIMIT, 1)
    if not fds:
        raise HandoffError("no socket came with the handshake")
    try:
        sock = socket.socket(fileno=fds[0])
    except OSError as exc:
        os.close(fds[0])
        raise HandoffError(f"not a socket ({exc.strerror})") from exc
    try:
        if sock.type != socket.SOCK_STREAM:
            raise HandoffError(f"a socket of type {sock.type!r}, not a stream")
        while len(data) < 4:
            data += await link.receive(4 - len(data))
        try:
            length = handoff_length(data)
        except ValueError as exc:
            raise HandoffError(str(exc)) from None
        request = data[4:]
        while len(request) < length:
            request += await link.receive(length - len(request))
        if len(request) > length:
            raise HandoffError("bytes past the handshake")
        sock.setblocking(False)
        return request, sock
    except BaseException:
        sock.close()
        raise
