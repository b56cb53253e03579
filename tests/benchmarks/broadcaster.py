"""The floor of the edit-latency rows: a WebSocket server that holds no document.

``python -m tests.benchmarks.broadcaster NOTEBOOK`` serves on a free loopback port and prints
``floor ready at ws://…``. It answers a sync step 1 with the notebook's initial state (encoded
once at start, never updated: the peers of one latency phase all join before its first edit)
and relays every other message to every connection, the sender included (its echo is its
acknowledgement), with ``websockets.broadcast``: no apply, no store, no checks. Both systems'
peers pay the same for their own processes; what a system adds to an edit's trip is what it
takes over this.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from jupyter_ydoc import YNotebook
from pycrdt import YMessageType, YSyncMessageType
from websockets import broadcast
from websockets.asyncio.server import ServerConnection, serve

from kernel_collab import protocol

READY = "floor ready at "


def initial_state(notebook: Path) -> bytes:
    """The sync step 2 every peer gets: the notebook as a fresh Y document."""
    doc = YNotebook()
    doc.set(json.loads(notebook.read_text()))
    return protocol.encode_sync_step2(doc.ydoc.get_update())


async def main(step2: bytes) -> None:
    """Serve until killed."""
    connections: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        connections.add(ws)
        try:
            async for message in ws:
                if not isinstance(message, bytes) or not message:
                    continue
                if message[:2] == bytes([YMessageType.SYNC, YSyncMessageType.SYNC_STEP1]):
                    await ws.send(step2)
                elif message[0] in (YMessageType.SYNC, YMessageType.AWARENESS):
                    broadcast(connections, message)
        finally:
            connections.discard(ws)

    async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"{READY}ws://127.0.0.1:{port}/", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(initial_state(Path(sys.argv[1]))))
