"""The kernel's comm with its sidecar: loss repaired, bad input refused with a reason.

iopub drops kernel → client messages under bursts (ipykernel's high-water mark); the tests
here make the kernel's replica lose batches on purpose, inside the real kernel, and check that
every peer and the replica still converge, each request served exactly once.
"""

from __future__ import annotations

from typing import Any

import pytest
from jupyter_client.asynchronous.client import AsyncKernelClient

from kernel_collab.protocol import SYNC_MARK
from tests.files import write_notebook
from tests.jupyter_server_process import JupyterServer
from tests.peers import NotebookPeer

pytestmark = pytest.mark.anyio

LOSSY = (
    "import random, kernel_collab\n"
    "from kernel_collab.kernel import api\n"
    "nb = kernel_collab.notebook()\n"
    "channel = next(iter(api._comms.channels.values()))\n"
    "publish, rng, lost = channel.publish, random.Random(7), []\n"
    "def lossy(data, buffers):\n"
    "    if rng.random() < 0.15:\n"
    "        lost.append(data.get('seq'))\n"
    "        return\n"
    "    publish(data, buffers)\n"
    "channel.publish = lossy\n"
)


def _cell(peer: NotebookPeer, cell_id: str) -> dict[str, Any]:
    return next(c for c in peer.notebook.get()["cells"] if c["id"] == cell_id)


def _stdout(cell: dict[str, Any]) -> str:
    return "".join(o.get("text", "") for o in cell["outputs"] if o.get("name") == "stdout")


async def _run(server: JupyterServer, room: dict[str, Any], cell_id: str) -> None:
    async with server.client() as http:
        response = await http.post(f"/api/kernels/{room['kernel_id']}/execute",
                                   json={"cell_id": cell_id, "document_id": room["document_id"]})
        assert response.status_code == 202, response.text


async def test_twenty_thousand_edits_through_a_lossy_iopub_converge(
    server: JupyterServer,
) -> None:
    write_notebook(server.root / "nb.ipynb", [
        LOSSY
        + "for i in range(20_000):\n"
        "    nb.cells[1].source = str(i)\n"
        "    if i % 4_000 == 0:\n"
        "        c = nb.insert_cell(len(nb.cells), f'print(\"ran {i}\")')\n"
        "        nb.run(c)\n"
        "while nb.cells[2].source != 'peer was here':\n"
        "    import time; time.sleep(0.01)\n"
        "print('lost', len(lost), 'saw the peer')\n",
        "edited by the kernel",
        "edited by a peer",
    ])  # fmt: skip
    room = await server.open_room("nb.ipynb")
    async with NotebookPeer.connect(server.sync_url(room["document_id"]), server.token) as peer:
        peer.wait_timeout = 120
        await _run(server, room, "cell-0")
        await peer.wait_until(lambda p: str(p.notebook.ycells[1]["source"]) == "19999")
        peer.notebook.set_cell(2, source="peer was here")
        await peer.wait_until(lambda p: "saw the peer" in _stdout(_cell(p, "cell-0")))
        # The five runs the kernel asked for (some in lost batches) each ran exactly once.
        await peer.wait_until(lambda p: p.notebook.cell_number == 8 and all(
            _stdout(c) for c in p.notebook.get()["cells"][3:]))  # fmt: skip
        cells = peer.notebook.get()["cells"]
    printed = _stdout(cells[0])
    lost = int(printed.split()[1])
    assert lost > 0, printed  # the loss was real, and repaired
    assert [_stdout(c) for c in cells[3:]] == [f"ran {i}\n" for i in range(0, 20_000, 4_000)]
    assert "iopub lost the kernel's batches" in server.log


async def test_a_refused_edit_tells_the_kernels_code_why(server: JupyterServer) -> None:
    write_notebook(server.root / "nb.ipynb", [
        "import kernel_collab\n"
        "nb = kernel_collab.notebook()\n"
        "transport = nb._target.transport\n"
        "def forge():\n"
        "    from pycrdt import Array\n"
        "    transport.ynb.ycells[1]['outputs'] = Array()\n"
        "nb._portal.call(forge)\n"
        "try:\n"
        "    nb.sync()\n"
        "except ConnectionError as e:\n"
        "    print('refused:', e)\n"
        "print('again:', len(kernel_collab.notebook().cells))\n",
        "x = 1",
    ])  # fmt: skip
    room = await server.open_room("nb.ipynb")
    async with NotebookPeer.connect(server.sync_url(room["document_id"]), server.token) as peer:
        await _run(server, room, "cell-0")
        await peer.wait_until(lambda p: "again:" in _stdout(_cell(p, "cell-0")))
        printed = _stdout(_cell(peer, "cell-0"))
    assert "refused: the connection to the notebook's sidecar ended" in printed
    assert "(4403)" in printed and "outputs may not be replaced" in printed, printed
    assert "again: 2" in printed  # the next notebook() joins afresh


async def test_malformed_comm_messages_close_only_that_replica(server: JupyterServer) -> None:
    """Garbage on the comm, both ways, from code with the kernel's key: the replica concerned
    is closed with the reason; the room, other peers and the kernel go on."""
    write_notebook(server.root / "nb.ipynb", [
        "import kernel_collab\n"
        "from kernel_collab.kernel import api\n"
        "nb = kernel_collab.notebook()\n"
        "channel = next(iter(api._comms.channels.values()))\n"
        "channel.publish({'v': 1, 'seq': 'x'}, [])\n"
        "try:\n"
        "    nb.sync()\n"
        "except ConnectionError as e:\n"
        "    print('closed:', e)\n"
        "nb = kernel_collab.notebook()\n"
        "print('comm-id', next(iter(api._comms.channels)))\n",
        "import time\n"
        "try:\n"
        "    while True:\n"
        "        nb.sync()\n"
        "        time.sleep(0.01)\n"
        "except ConnectionError as e:\n"
        "    print('closed:', e)\n",
    ])  # fmt: skip
    room = await server.open_room("nb.ipynb")
    async with NotebookPeer.connect(server.sync_url(room["document_id"]), server.token) as peer:
        await _run(server, room, "cell-0")
        await peer.wait_until(lambda p: "comm-id " in _stdout(_cell(p, "cell-0")))
        printed = _stdout(_cell(peer, "cell-0"))
        assert "closed: the connection to the notebook's sidecar ended" in printed
        assert "protocol error" in printed and "'seq'" in printed, printed
        comm_id = printed.split("comm-id ")[1].strip()
        # Now the other way: a client holding the kernel's key sends the kernel garbage on
        # the new replica's comm.
        await _run(server, room, "cell-1")
        client = AsyncKernelClient()
        client.load_connection_file(str(server.runtime / f"kernel-{room['kernel_id']}.json"))
        client.start_channels()
        try:
            msg = client.session.msg("comm_msg", {"comm_id": comm_id, "data": {"v": 7}},
                                     metadata={SYNC_MARK: True})  # fmt: skip
            client.shell_channel.send(msg)
            await peer.wait_until(lambda p: "closed:" in _stdout(_cell(p, "cell-1")))
        finally:
            client.stop_channels()
        assert "malformed comm message" in _stdout(_cell(peer, "cell-1"))
        # The room and this peer are unaffected.
        peer.notebook.set_cell(1, source="still fine")
        await peer.flush()
    assert "comm protocol version 7" in _stdout(_cell(peer, "cell-1"))
