"""A bare replica of a sidecar's document, in its own process: the yardstick of the soak.

``python -m tests.replica_process URL TOKEN`` syncs a pycrdt document (a :class:`NotebookPeer`)
with the sidecar, prints ``synced`` and follows every change until its stdin closes. Its memory
grows as the document's own structure does (Y keeps an item for each deleted run of text, so
edits spread over many cells cost ~0.2 KB each for good), which the sidecar cannot undercut:
the sidecar's growth beyond it is what the sidecar keeps.
"""

from __future__ import annotations

import itertools
import sys

import anyio

from kernel_collab.sidecar.memory import keep_releasing_freed_memory
from tests.peers import NotebookPeer


async def follow(url: str, token: str) -> None:
    """Stay synced with the sidecar until stdin closes (freed memory returned, as the sidecar
    does, so that only live memory is compared)."""
    async with NotebookPeer.connect(url, token) as peer, anyio.create_task_group() as tg:
        tg.start_soon(keep_releasing_freed_memory, itertools.count().__next__, 1.0)
        print("synced", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)
        await peer.flush()
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(follow, sys.argv[1], sys.argv[2])
