"""JupyterLab's own notebook model (@jupyter/ydoc, in Node) and a pycrdt peer share one notebook
through the real sidecar: both read the same cells, and each sees the other's edits and
presence."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nbformat
import pytest
from pycrdt import Text
from websockets.exceptions import InvalidStatus

from tests.peers import NotebookPeer
from tests.sidecar_process import SidecarProcess, running_sidecar

pytestmark = pytest.mark.anyio

REPLY_TIMEOUT = 15.0
CELL_KEYS = ("id", "cell_type", "source", "metadata", "outputs", "execution_count")
STREAM_TEXT = "héllo 😀\n"
NOTEBOOK: dict[str, Any] = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    },
    "cells": [
        {
            "id": "code-1",
            "cell_type": "code",
            "source": "print('héllo 😀')\n1 + 1",
            "metadata": {},
            "execution_count": 1,
            "outputs": [
                {"output_type": "stream", "name": "stdout", "text": STREAM_TEXT},
                {
                    "output_type": "execute_result",
                    "execution_count": 1,
                    "data": {"text/plain": "2"},
                    "metadata": {},
                },
            ],
        },
        {
            "id": "notes",
            "cell_type": "markdown",
            "source": "# Notes — zoë 😀",
            "metadata": {"tags": ["intro"], "kc": {"n": 1}},
        },
    ],
}
"""The shared notebook: what the peers must read, as written on disk."""


class NodePeerError(Exception):
    """The Node peer answered ``{"ok": false}``."""


class NodePeer:
    """Drives ``tests/node/peer.mjs``: one JSON command per line in, one answer per line out."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    @classmethod
    @asynccontextmanager
    async def start(cls, script: Path, log: Path) -> AsyncIterator[NodePeer]:
        """Run the Node peer; end it on exit."""
        with log.open("w") as stderr:
            process = await asyncio.create_subprocess_exec(
                "node", str(script), cwd=script.parent, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=stderr,
            )  # fmt: skip
        try:
            yield cls(process, log)
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()

    async def __call__(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send a command and return its answer, raising :class:`NodePeerError` on failure."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        await self.process.stdin.drain()
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), REPLY_TIMEOUT)
        except TimeoutError:
            raise TimeoutError(f"Node peer gave no answer to {cmd!r}") from None
        if not line:
            raise RuntimeError(f"Node peer exited; its stderr:\n{self.log.read_text()}")
        answer: dict[str, Any] = json.loads(line)
        if not answer.pop("ok"):
            raise NodePeerError(answer["error"])
        return answer


def cell_view(cell: dict[str, Any]) -> dict[str, Any]:
    """The parts of a cell a user sees."""
    return {key: cell[key] for key in CELL_KEYS if key in cell}


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[SidecarProcess]:
    """The real sidecar serving a fresh copy of :data:`NOTEBOOK`."""
    path = tmp_path / "shared.ipynb"
    nbformat.write(nbformat.from_dict(NOTEBOOK), path)
    with running_sidecar(path, tmp_path) as sidecar:
        yield sidecar


@pytest.fixture
async def node(
    node_peer_script: Path, sidecar: SidecarProcess, tmp_path: Path
) -> AsyncIterator[NodePeer]:
    """A Node peer connected (and synced) to :func:`sidecar`."""
    async with NodePeer.start(node_peer_script, tmp_path / "node-peer.log") as peer:
        await peer("connect", url=sidecar.url, token=sidecar.token)
        yield peer
        await peer("close")


async def test_both_peers_read_the_notebook_on_disk(
    node: NodePeer, sidecar: SidecarProcess
) -> None:
    async with NotebookPeer.connect(sidecar.url, sidecar.token) as python:
        from_python = python.notebook.get()
    dump = await node("dump")
    from_node = dump["notebook"]

    expected = [cell_view(cell) for cell in NOTEBOOK["cells"]]
    assert [cell_view(cell) for cell in from_node["cells"]] == expected
    assert [cell_view(cell) for cell in from_python["cells"]] == expected
    assert from_node["metadata"] == from_python["metadata"]
    assert from_node["metadata"]["kernelspec"] == NOTEBOOK["metadata"]["kernelspec"]
    assert (from_node["nbformat"], from_node["nbformat_minor"]) == (4, 5)
    # JupyterLab appends kernel output to the stream's Y.Text, so it must be one.
    assert dump["streams"] == [{"cell": 0, "output": 0, "is_ytext": True, "text": STREAM_TEXT}]
    assert dump["execution_states"] == ["idle", None]  # the code cell is not shown as running


async def test_edits_in_node_reach_python(node: NodePeer, sidecar: SidecarProcess) -> None:
    async with NotebookPeer.connect(sidecar.url, sidecar.token) as python:
        await node("set_source", index=0, source="print('bonjour 🌍')")
        await python.wait_until(lambda p: p.notebook.get_cell(0)["source"] == "print('bonjour 🌍')")

        new_cell = {"cell_type": "markdown", "source": "## Ajouté ✨", "metadata": {}}
        inserted = await node("insert_cell", index=1, cell=new_cell)
        await node("set_metadata", index=2, key="tags", value=["édité"])
        await python.wait_until(
            lambda p: (
                p.notebook.cell_number == 3
                and p.notebook.get_cell(2)["metadata"].get("tags") == ["édité"]
            )
        )
        cells = python.notebook.get()["cells"]
        sources = [c["source"] for c in cells]
        assert sources == ["print('bonjour 🌍')", "## Ajouté ✨", "# Notes — zoë 😀"]
        assert cells[1]["id"] == inserted["id"]
        assert cells[2]["metadata"] == {"tags": ["édité"], "kc": {"n": 1}}


async def test_edits_in_python_reach_node(node: NodePeer, sidecar: SidecarProcess) -> None:
    async with NotebookPeer.connect(sidecar.url, sidecar.token) as python:
        nb = python.notebook
        assert isinstance(nb.ycells[0]["outputs"][0]["text"], Text)  # streams are shared text
        # (Only the kernel appends to them: a peer's append is refused, see
        # test_field_ownership.)
        nb.append_cell({"cell_type": "code", "source": "x = 'ñ'", "metadata": {}, "outputs": []})
        nb.set_cell(1, source="# Changé 🎉")
        await node("wait_source", index=1, equals="# Changé 🎉")

    dump = await node("dump")
    cells = dump["notebook"]["cells"]
    assert [c["source"] for c in cells] == ["print('héllo 😀')\n1 + 1", "# Changé 🎉", "x = 'ñ'"]
    assert cells[1]["id"] == "notes"  # edited in place, not replaced
    assert (cells[2]["cell_type"], cells[2]["outputs"]) == ("code", [])
    assert dump["streams"][0]["is_ytext"]
    assert dump["streams"][0]["text"] == STREAM_TEXT


async def test_awareness_travels_both_ways(node: NodePeer, sidecar: SidecarProcess) -> None:
    async with NotebookPeer.connect(sidecar.url, sidecar.token) as python:
        # Direct peers hold the sidecar's token: anonymous, they keep the name they give
        # themselves, and the sidecar adds their role (see test_roles_and_defense for people).
        zoe = {"user": {"name": "Zoë (node)", "display_name": "Zoë (node)", "role": "run"}}
        await node("awareness", state={"user": {"name": "Zoë (node)", "color": "#f00"}})
        await python.wait_until(lambda p: zoe in p.peers.values())

        python.set_awareness({"user": {"name": "Amélie (python)"}})
        amelie = {"user": {"name": "Amélie (python)", "display_name": "Amélie (python)",
                           "role": "run"}}  # fmt: skip
        seen = await node("wait_peer", match={"user": {"name": "Amélie (python)"}})
        assert seen["state"] == amelie
        assert amelie in (await node("peers"))["peers"].values()


@pytest.mark.parametrize("token", [None, "not-the-token"], ids=["missing", "wrong"])
async def test_peer_without_the_token_is_refused(
    token: str | None, sidecar: SidecarProcess, node_peer_script: Path, tmp_path: Path
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with NotebookPeer.connect(sidecar.url, token):
            pass
    assert refused.value.response.status_code == 401

    async with NodePeer.start(node_peer_script, tmp_path / "node-peer.log") as node:
        args = {"url": sidecar.url} if token is None else {"url": sidecar.url, "token": token}
        with pytest.raises(NodePeerError, match="401"):
            await node("connect", **args)
