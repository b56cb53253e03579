"""Notebook history through a real sidecar and kernel: who changed what, read any version,
restore one as a new edit everyone converges on, with the trust it had; from the command line
and from code."""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import nbformat
import pytest
from websockets.asyncio.client import connect as ws_connect

from kernel_collab import protocol
from kernel_collab.client import connect
from kernel_collab.protocol import IDENTITY_HEADER
from tests.jupyter_server_process import JupyterServer
from tests.kernel_helpers import ask, run_cell, stream_text, write_cells
from tests.peers import NotebookPeer

pytestmark = pytest.mark.anyio


def _named(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}name={name}"


def _trusted(peer: NotebookPeer) -> dict[str, Any]:
    record = peer.notebook.ystate["kernel_collab"].get("trusted")
    return dict(record) if record is not None else {}


async def test_history_says_who_and_a_restore_is_a_new_edit_with_its_old_trust(
    server: JupyterServer,
) -> None:
    nb = write_cells(server.root / "nb.ipynb", {"a": "print('first')", "b": "x = 1"})
    session = await server.start_session("nb.ipynb")
    record = server.sidecar(nb)
    url, token = record["url"], record["token"]
    async with (
        NotebookPeer.connect(_named(url, "alice"), token) as alice,
        NotebookPeer.connect(_named(url, "bob"), token) as bob,
    ):
        ran = await run_cell(alice, url, token, "a")  # the kernel writes a trusted output
        assert stream_text(ran["outputs"]) == "first\n"
        await alice.wait_until(lambda p: bool(_trusted(p).get("a")))
        alice.notebook.set_cell(1, source="x = 'alice was here'")
        await alice.flush()
        await bob.wait_until(lambda p: p.notebook.get()["cells"][1]["source"].endswith("here'"))
        history = (await ask(url, token, {"type": "history"}))["versions"]
        good = history[-1]["version"]  # alice's edit, with a's trusted output
        bob.notebook.set_cell(1, source="x = 'bob broke it'")
        bob.notebook.ycells[0]["outputs"].clear()  # Clear Outputs
        await bob.flush()
        await alice.wait_until(lambda p: "bob" in p.notebook.get()["cells"][1]["source"])

        history = (await ask(url, token, {"type": "history"}))["versions"]
        names = [{a["name"] for a in v["authors"]} for v in history]
        assert history[0]["kind"] == "created"
        assert any("kernel" in n for n in names), names  # the run's output
        assert {"alice"} in names and {"bob"} in names, names
        assert history[-1]["authors"] == [{"kind": "script", "name": "bob"}]
        old = await ask(url, token, {"type": "history_get", "version": good})
        assert old["notebook"]["cells"][1]["source"] == "x = 'alice was here'"
        assert old["trusted"] == ["a"]

        reply = await ask(_named(url, "alice"), token, {"type": "restore", "version": good})
        assert reply["ok"] is True, reply
        for peer in (alice, bob):  # everyone converges on the restore
            await peer.wait_until(lambda p: p.notebook.get()["cells"][1]["source"]
                                  == "x = 'alice was here'")  # fmt: skip
            await peer.wait_until(lambda p: stream_text(
                p.notebook.get()["cells"][0]["outputs"]) == "first\n")  # fmt: skip
        # The restored output is the kernel's as it was then: trusted again, never more.
        await alice.wait_until(lambda p: bool(_trusted(p).get("a")))
        history = (await ask(url, token, {"type": "history"}))["versions"]
        restore = history[-1]
        assert restore["kind"] == "restore" and restore["pinned"] and restore["version"] == (
            reply["version"])  # fmt: skip
        assert restore["label"] == f"restored version {good} by alice"
        assert restore["authors"] == [{"kind": "script", "name": "alice"}]
        # The restore can itself be undone by restoring the version before it.
        undo = await ask(url, token, {"type": "restore", "version": history[-2]["version"]})
        assert undo["ok"] is True, undo
        await bob.wait_until(lambda p: "bob" in p.notebook.get()["cells"][1]["source"])

        # From code: the Python client lists and reads versions.
        async with connect(server.url, "nb.ipynb", token=server.token, name="agent") as client:
            versions = await client.history()
            assert versions[-1]["kind"] == "restore"
            assert (await client.version(good))["cells"][1]["source"] == "x = 'alice was here'"
    # From the command line, on the store itself.
    db = server.root / ".kernel_collab.db"
    listed = (await anyio.run_process(
        [sys.executable, "-m", "kernel_collab.store", "--db", str(db), "history", "nb.ipynb"],
    )).stdout.decode().splitlines()  # fmt: skip
    assert [int(line.split("\t")[0]) for line in listed] == [v["version"] for v in versions]
    assert "restored version" in listed[-2]
    out = server.root / "old.ipynb"
    await anyio.run_process([sys.executable, "-m", "kernel_collab.store", "--db", str(db),
                             "export", "nb.ipynb", "--version", str(good), "-o", str(out)])
    exported = nbformat.read(out, as_version=4)
    nbformat.validate(exported)
    assert exported.cells[1].source == "x = 'alice was here'"
    assert session["kernel"]["id"]


async def test_a_reader_may_read_history_but_not_restore_or_purge(server: JupyterServer) -> None:
    write_cells(server.root / "nb.ipynb", {"a": "x = 1"})
    await server.start_session("nb.ipynb")
    record = server.sidecar(server.root / "nb.ipynb")
    reader = {"username": "rita", "name": "Rita", "permissions": {"write": False}}
    # Connected as the server's proxy connects for a person who may only read.
    headers = {"Authorization": f"token {record['admin_token']}",
               IDENTITY_HEADER: json.dumps(reader)}  # fmt: skip
    replies = []
    async with ws_connect(record["url"], additional_headers=headers) as ws:
        for request in ({"type": "history", "id": 1}, {"type": "restore", "version": 0, "id": 2},
                        {"type": "purge", "before": 1, "id": 3}):  # fmt: skip
            await ws.send(protocol.encode_request(request))
            async for data in ws:
                message = protocol.decode(data) if isinstance(data, bytes) else None
                if message is not None and message.request and "reply_to" in message.request:
                    replies.append(message.request)
                    break
    assert replies[0]["ok"] is True and replies[0]["versions"][0]["version"] == 0
    for reply in replies[1:]:
        assert reply["ok"] is False and "needs the right to edit" in reply["error"], reply
