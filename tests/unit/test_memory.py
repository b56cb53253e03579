"""What the sidecar keeps must not grow with edits or with peers who come and go."""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import gc
import json
import logging
import os
import weakref
from pathlib import Path
from typing import Any

import anyio
import pytest
from pycrdt import Doc, Text

from kernel_collab import protocol
from kernel_collab.notebook_core.cells import shared_notebook
from kernel_collab.sidecar.awareness import AwarenessRelay
from kernel_collab.sidecar.bridge import DIGEST_HISTORY_SIZE, KernelBridge
from kernel_collab.sidecar.docstore import DocumentStore
from kernel_collab.sidecar.peer import Peer
from kernel_collab.sidecar.room import Room
from kernel_collab.store import Commit, SQLiteStore

LOG = logging.getLogger(__name__)


def test_a_shared_notebook_keeps_no_document_undo_history() -> None:
    """jupyter_ydoc's document-wide undo manager would keep every edit (and what it deleted)."""
    notebook = shared_notebook()
    notebook.set({"cells": [{"cell_type": "code", "source": "x", "metadata": {}, "outputs": [],
                             "execution_count": None, "id": "a"}],
                  "metadata": {}, "nbformat": 4, "nbformat_minor": 5})  # fmt: skip
    other: Doc[Any] = Doc()
    other.apply_update(notebook.ydoc.get_update())
    updates: list[bytes] = []
    other.observe(lambda event: updates.append(event.update))
    remote = shared_notebook(other).ycells[0]["source"]
    assert isinstance(remote, Text)
    for i in range(200):
        remote += f" {i}"  # a peer's edits: applied without an origin
        if len(remote) > 40:
            del remote[0:10]
    for update in updates:
        notebook.ydoc.apply_update(update)
    local = notebook.ycells[0]["source"]
    for i in range(50):  # the sidecar's own edits, with and without an origin
        with notebook.ydoc.transaction(origin="kernel_collab:peer" if i % 2 else None):
            local += "!"
    assert str(local) == str(remote) + "!" * 50
    assert len(notebook.undo_manager.undo_stack) == 0


class _Sink:
    async def send(self, message: bytes) -> None:
        """Nothing is read back."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Nothing to close."""


def test_peers_who_left_are_forgotten_with_their_client_ids(tmp_path: Path) -> None:
    room = Room(shared_notebook(), DocumentStore(tmp_path / "store.db"))
    relay = AwarenessRelay(room)
    gone: list[weakref.ref[Peer]] = []
    for client_id in range(1, 201):  # a page load each: a new client id each time
        peer = Peer(_Sink(), name=f"page {client_id}", queue_size=100, log=LOG,
                    identity={"username": "ann", "permissions": {"write": True}})  # fmt: skip
        room.join(peer)
        state = json.dumps({"user": {"name": "ann"}, "cursors": []})
        relay.receive(peer, protocol.encode_awareness([(client_id, 1, state)]))
        assert client_id in relay.awareness.states
        room.leave(peer)
        peer.close(1000, "left")
        gone.append(weakref.ref(peer))
        del peer
    gc.collect()
    assert [ref for ref in gone if ref() is not None] == []
    own = relay.awareness.client_id
    assert set(relay.awareness.states) <= {own}
    assert set(relay.awareness.meta) <= {own}


@pytest.mark.anyio
async def test_the_kernel_s_message_signatures_are_remembered_within_a_bound(
    tmp_path: Path,
) -> None:
    """jupyter_client remembers every signature it checked (to refuse replays) up to 65,536."""
    bridge = KernelBridge(Room(shared_notebook(), DocumentStore(tmp_path / "store.db")))
    info = {"ip": "127.0.0.1", "transport": "tcp", "shell_port": 9, "iopub_port": 9,
            "stdin_port": 9, "control_port": 9, "hb_port": 9, "key": "k",
            "signature_scheme": "hmac-sha256"}  # fmt: skip
    async with anyio.create_task_group() as tg:
        await tg.start(bridge.run)
        bridge.attach("kernel", info)  # nothing listens there: only the session is used
        assert bridge.client is not None
        session = bridge.client.session
        for i in range(2 * DIGEST_HISTORY_SIZE):
            frames = session.serialize(session.msg("stream", {"name": "stdout", "text": f"{i}"}))
            session.deserialize(session.feed_identities(frames)[1])
        assert len(session.digest_history) <= DIGEST_HISTORY_SIZE
        tg.cancel_scope.cancel()


def _sqlite_memory_used() -> int | None:
    """Bytes SQLite holds now (``None`` where it cannot say: no shared library, no counting)."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    try:
        used = ctypes.CDLL(name).sqlite3_memory_used
    except (OSError, AttributeError):
        return None
    used.restype = ctypes.c_int64
    value = int(used())
    return value or None


def test_the_store_keeps_no_copy_of_the_large_blobs_it_wrote(tmp_path: Path) -> None:
    """SQLite keeps a prepared statement's bound values; a store that bound a 10 MB notebook's
    snapshot, base and updates kept ~48 MiB of copies (four times the notebook) for good."""
    store = SQLiteStore(tmp_path / "store.db")
    assert _sqlite_memory_used() is not None, "SQLite's memory use cannot be read here"
    doc: Doc[Any] = Doc()
    text = doc.get("t", type=Text)
    text += base64.b64encode(os.urandom(6 * 2**20)).decode()
    snapshot, state = doc.get_update(), doc.get_state()
    text += base64.b64encode(os.urandom(3 * 2**20)).decode()
    update = doc.get_update(state)
    base = os.urandom(8 * 2**20)
    document_id, _ = store.create("nb.ipynb", snapshot, base, "a")
    store.append(document_id, [update], Commit(cells=True, authors=[]))
    store.compact(document_id, doc.get_update(), store.last_update_id(document_id))
    store.set_base(document_id, base[::-1], "b")
    used = _sqlite_memory_used()
    assert used is not None and used < 6 * 2**20  # its page cache (2 MiB) and schema
    loaded = store.load("nb.ipynb")
    assert loaded is not None and loaded.base == base[::-1] and loaded.base_hash == "b"
    replica: Doc[Any] = Doc()
    replica.apply_update(loaded.update)
    assert str(replica.get("t", type=Text)) == str(text)
    assert store.base(document_id) == (base[::-1], "b")
    store.close()
