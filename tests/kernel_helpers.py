"""Helpers for tests that run cells through a sidecar's queue and look at what users see.

Cells are found by id; what a peer sees is read from its Y document without converting the
whole notebook (a cell may hold megabytes of output). A plain kernel client (a console, a
second frontend) can be connected to the same kernel with :func:`plain_client`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_ydoc.utils import cast_all
from pycrdt import Map
from websockets.asyncio.client import connect as ws_connect

from kernel_collab import protocol
from tests.peers import NotebookPeer, url_with_token

STATE_KEY = "kernel_collab"
"""kernel_collab's key in the document's ``state`` map and in cell metadata."""


# --- requests to the sidecar ------------------------------------------------------------


async def ask(url: str, token: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Send one kernel_collab request on its own connection and return the reply."""
    async with ws_connect(url_with_token(url, token)) as ws:
        await ws.send(protocol.encode_request(obj))
        async for data in ws:
            if isinstance(data, bytes) and data[:1] == bytes([protocol.REQUEST]):
                reply = protocol.decode(data).request
                assert reply is not None
                return reply
    raise AssertionError("no reply")


# --- notebooks on disk ------------------------------------------------------------------


def write_cells(
    path: Path, cells: Mapping[str, str], *, tags: Mapping[str, Sequence[str]] | None = None
) -> Path:
    """Write a notebook with one code cell per ``{cell_id: source}`` (in order), with tags."""
    nb = nbformat.v4.new_notebook()
    for cell_id, source in cells.items():
        cell = nbformat.v4.new_code_cell(source, id=cell_id)
        if tags and cell_id in tags:
            cell.metadata["tags"] = list(tags[cell_id])
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, path)
    return path


def saved_cell(path: Path, cell_id: str) -> dict[str, Any]:
    """The cell with ``cell_id`` as saved in the notebook file."""
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.get("id") == cell_id:
            return dict(cell)
    raise KeyError(cell_id)


def cell_outputs(path: Path, index: int) -> list[dict[str, Any]]:
    """The outputs of a cell as saved on disk."""
    return list(nbformat.read(path, as_version=4).cells[index].outputs)


def stream_text(outputs: list[dict[str, Any]], name: str = "stdout") -> str:
    """All text of one stream in a cell's outputs."""
    return "".join(
        o["text"] for o in outputs if o.get("output_type") == "stream" and o.get("name") == name
    )


# --- what a peer sees -------------------------------------------------------------------


def ycell(peer: NotebookPeer, cell_id: str) -> Map[Any]:
    """The peer's Y cell with that id."""
    for cell in peer.notebook.ycells:
        if isinstance(cell, Map) and cell.get("id") == cell_id:
            return cell
    raise KeyError(cell_id)


def cell(peer: NotebookPeer, cell_id: str) -> dict[str, Any]:
    """The peer's cell with that id as plain Python (stream text as ``str``), numbers as a
    JupyterLab model reads them (Y stores them as floats: ``execution_count`` 3.0 is 3); unlike
    ``YNotebook.get_cell`` it keeps ``execution_state``."""
    value = ycell(peer, cell_id).to_py() or {}
    cast_all(value, float, int)
    return value


def last_run(peer: NotebookPeer, cell_id: str) -> dict[str, Any] | None:
    """``metadata.kernel_collab.last_run`` of a cell, as the peer sees it."""
    metadata = ycell(peer, cell_id).get("metadata")
    ours = metadata.get(STATE_KEY) if isinstance(metadata, Map) else None
    if isinstance(ours, Map):
        ours = ours.to_py()
    run = ours.get("last_run") if isinstance(ours, dict) else None
    return run if isinstance(run, dict) else None


def state_map(peer: NotebookPeer) -> Map[Any]:
    """kernel_collab's map in the peer's ``state`` (kernel status, queue, ...)."""
    value = peer.notebook.ystate.get(STATE_KEY)
    assert isinstance(value, Map), f"no {STATE_KEY} map in the document's state"
    return value


def collab_state(peer: NotebookPeer) -> dict[str, Any]:
    """kernel_collab's state as plain Python ({} before the sidecar wrote any)."""
    value = peer.notebook.ystate.get(STATE_KEY)
    if not isinstance(value, Map):
        return {}
    return value.to_py() or {}


def kernel_status(peer: NotebookPeer) -> str | None:
    """``state.kernel_collab.kernel_status`` as the peer sees it."""
    status = collab_state(peer).get("kernel_status")
    return status if isinstance(status, str) else None


async def run_cell(peer: NotebookPeer, url: str, token: str, cell_id: str) -> dict[str, Any]:
    """Queue a cell through the sidecar, wait until its run has ended, return the cell."""
    before = last_run(peer, cell_id)
    reply = await ask(url, token, {"type": "execute", "cell_id": cell_id})
    assert reply.get("ok") is True, reply
    await wait_ended(peer, cell_id, before)
    return cell(peer, cell_id)


async def wait_ended(
    peer: NotebookPeer, cell_id: str, before: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Wait until the cell has a finished last run other than ``before``; return it."""

    def ended(p: NotebookPeer) -> bool:
        run = last_run(p, cell_id)
        return run is not None and run != before and run.get("end") is not None

    await peer.wait_until(ended)
    run = last_run(peer, cell_id)
    assert run is not None
    return run


# --- a plain kernel client --------------------------------------------------------------


@contextlib.asynccontextmanager
async def plain_client(connection_file: Path) -> AsyncIterator[AsyncKernelClient]:
    """A jupyter_client kernel client of the kernel in ``connection_file`` (all channels)."""
    client = AsyncKernelClient(connection_file=str(connection_file))
    client.load_connection_file()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=30)
        yield client
    finally:
        client.stop_channels()


async def reply_to(client: AsyncKernelClient, msg_id: str, channel: str = "shell") -> Any:
    """The reply to request ``msg_id`` on ``channel`` (other replies are skipped)."""
    get = client.get_control_msg if channel == "control" else client.get_shell_msg
    while True:
        msg = await get(timeout=30)
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg


async def iopub_until_idle(
    client: AsyncKernelClient, msg_ids: Sequence[str]
) -> list[dict[str, Any]]:
    """Read iopub until the kernel is idle after the last of ``msg_ids`` (sent in order);
    return the messages of those requests."""
    wanted, last = set(msg_ids), msg_ids[-1]
    own: list[dict[str, Any]] = []
    while True:
        msg = await client.get_iopub_msg(timeout=30)
        parent = msg["parent_header"].get("msg_id")
        if parent not in wanted:
            continue
        own.append(msg)
        if (parent == last and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            return own
