"""A sidecar's peer over a real WebSocket on loopback: a connection that breaks while the room
is relaying to it ends that peer, never the room."""

from __future__ import annotations

import contextlib
import logging

import anyio
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from kernel_collab.sidecar.peer import Peer

pytestmark = pytest.mark.anyio


async def test_a_commit_relayed_to_a_peer_whose_connection_broke_is_dropped() -> None:
    """The race CI hit: the peer's sender finds the connection closed and stops before its
    handler has taken it out of the room; the next commit relayed to it used to raise out of
    ``Peer.send`` (``BrokenResourceError``), and that took the sidecar down."""
    served: list[Peer] = []
    joined = anyio.Event()
    sender_ended = anyio.Event()
    client_gone = anyio.Event()

    async def handler(connection: ServerConnection) -> None:
        peer = Peer(connection, name="vanishing#1", queue_size=8,
                    log=logging.getLogger("test"))  # fmt: skip
        served.append(peer)
        joined.set()
        await client_gone.wait()
        with contextlib.suppress(ConnectionClosed):  # as the sidecar's handler: it is gone
            await peer.run_sender()
        sender_ended.set()

    async with await serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with ws_connect(f"ws://127.0.0.1:{port}/"):
            pass  # the browser tab closes
        client_gone.set()
        with anyio.fail_after(10):
            await joined.wait()
            peer = served[0]
            peer.send(b"\x00first commit")  # the sender finds the connection closed
            await sender_ended.wait()
        peer.send(b"\x00next commit")  # raised BrokenResourceError into the room
        assert peer.closed
