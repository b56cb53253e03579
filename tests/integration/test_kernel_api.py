"""``kernel_collab.notebook()``: code in the kernel reads and edits the notebook it runs in."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.files import write_notebook
from tests.jupyter_server_process import JupyterServer
from tests.peers import NotebookPeer

pytestmark = pytest.mark.anyio


def _source(peer: NotebookPeer, index: int) -> str:
    return str(peer.notebook.ycells[index]["source"])


def _cell(peer: NotebookPeer, cell_id: str) -> dict[str, Any]:
    return next(c for c in peer.notebook.get()["cells"] if c["id"] == cell_id)


def _stdout(cell: dict[str, Any]) -> str:
    return "".join(o.get("text", "") for o in cell["outputs"] if o.get("name") == "stdout")


async def test_code_in_the_kernel_edits_and_runs_cells_others_see(server: JupyterServer) -> None:
    write_notebook(server.root / "nb.ipynb", [
        "import kernel_collab\n"
        "nb = kernel_collab.notebook()\n"
        "print(nb.current_cell.id)\n"
        "nb.cells[1].source = 'x = 42'\n"
        "c = nb.insert_cell(2, 'print(x)')\n"
        "with nb.transaction():\n"
        "    nb.cells[1].metadata['tags'] = ['written-by-the-kernel']\n"
        "h = nb.run(nb.cells[1]); h2 = nb.run(c)\n"
        "try:\n    h.wait()\nexcept RuntimeError as e:\n    print('refused:', e)\n",
        "x = 0",
    ])  # fmt: skip
    room = await server.open_room("nb.ipynb")
    url = server.sync_url(room["document_id"])
    async with NotebookPeer.connect(url, server.token) as peer, server.client() as http:
        response = await http.post(f"/api/kernels/{room['kernel_id']}/execute",
                                   json={"cell_id": "cell-0", "document_id": room["document_id"]})
        assert response.status_code == 202

        def all_ran(p: NotebookPeer) -> bool:
            cells = p.notebook.get()["cells"]
            return len(cells) == 3 and _stdout(cells[2]) == "42\n"

        await peer.wait_until(all_ran)
        assert peer.notebook.ystate["kernel_collab"]["kernel_api"] is True
        cells = peer.notebook.get()["cells"]
        assert cells[1]["source"] == "x = 42"
        assert cells[1]["metadata"]["tags"] == ["written-by-the-kernel"]
        printed = _stdout(cells[0])
        assert printed.startswith("cell-0\nrefused: waiting for a run from inside a running cell")
        # The runs asked by the kernel are attributed to who ran the calling cell.
        runner = cells[0]["metadata"]["kernel_collab"]["last_run"]["by"]
        assert cells[2]["metadata"]["kernel_collab"]["last_run"]["by"] == runner


async def test_others_edits_are_seen_by_a_cell_stuck_in_a_loop(server: JupyterServer) -> None:
    write_notebook(server.root / "nb.ipynb", [
        "import kernel_collab, time\n"
        "nb = kernel_collab.notebook()\n"
        "print('waiting', flush=True)\n"
        "while nb.cells[1].source != 'go':\n    time.sleep(0.02)\n"
        "print('saw it')\n",
        "wait",
    ])  # fmt: skip
    room = await server.open_room("nb.ipynb")
    url = server.sync_url(room["document_id"])
    async with NotebookPeer.connect(url, server.token) as peer, server.client() as http:
        await http.post(f"/api/kernels/{room['kernel_id']}/execute",
                        json={"cell_id": "cell-0", "document_id": room["document_id"]})
        await peer.wait_until(lambda p: _stdout(_cell(p, "cell-0")) == "waiting\n")
        statuses: list[Any] = []

        def saw_it(p: NotebookPeer) -> bool:
            statuses.append((p.notebook.ystate.get("kernel_collab") or {}).get("kernel_status"))
            return _stdout(_cell(p, "cell-0")) == "waiting\nsaw it\n"

        peer.notebook.set_cell(1, source="go")
        await peer.wait_until(saw_it)
        # The replica's sync traffic never made the kernel look idle while the cell ran.
        assert "idle" not in statuses[:-2]


async def test_kernel_script_and_peer_editing_at_once_converge(server: JupyterServer) -> None:
    from kernel_collab.client import connect

    write_notebook(server.root / "nb.ipynb", [
        "import kernel_collab\nnb = kernel_collab.notebook()\n"
        "for i in range(30):\n    nb.cells[1].source += f'k{i};'\n"
        "    nb.append_cell(f'# kernel {i}')\n",
        "",
    ])  # fmt: skip
    room = await server.open_room("nb.ipynb")
    url = server.sync_url(room["document_id"])
    async with (
        NotebookPeer.connect(url, server.token) as peer,
        connect(server.url, "nb.ipynb", token=server.token, name="script") as script,
        server.client() as http,
    ):
        peer.wait_timeout = 60  # the kernel joins and makes 90 edits: slow on a loaded machine
        await http.post(f"/api/kernels/{room['kernel_id']}/execute",
                        json={"cell_id": "cell-0", "document_id": room["document_id"]})
        for i in range(30):  # meanwhile a script and a person type into the same cell
            script.cells[1].source = script.cells[1].source + f"s{i};"
            text = peer.notebook.ycells[1]["source"]
            text.insert(0, f"p{i};")
            await anyio.lowlevel.checkpoint()
        await script.sync()

        def converged(p: NotebookPeer) -> bool:
            source = str(p.notebook.ycells[1]["source"])
            return (p.notebook.cell_number == 32
                    and all(f"{w}{i};" in source for w in "kps" for i in range(30)))  # fmt: skip

        await peer.wait_until(converged)
        await script.transport.wait_for(lambda: len(script.cells) == 32
                                        and script.cells[1].source
                                        == str(peer.notebook.ycells[1]["source"]))  # fmt: skip
        def cells(nb: dict[str, Any]) -> list[tuple[str, str]]:
            return [(c["id"], c["source"]) for c in nb["cells"]]

        assert cells(script.to_dict()) == cells(peer.notebook.get())


async def test_the_replica_spends_no_iopub_and_keeps_no_kernel_awake(server: JupyterServer) -> None:
    """The in-kernel replica syncs over its own loopback connection: no kernel messages, so
    the browser's status indicator, the IOPub rate limit and the idle culler see nothing."""
    from jupyter_client.asynchronous.client import AsyncKernelClient

    write_notebook(server.root / "nb.ipynb", [
        "import kernel_collab\nnb = kernel_collab.notebook()\nprint('replica up')",
        "x = 1",
        "import time\nwhile nb.cells[1].source != 'edit 29':\n    time.sleep(0.01)\n"
        "print(nb.cells[1].source)",
    ])  # fmt: skip
    room = await server.open_room("nb.ipynb")
    url = server.sync_url(room["document_id"])
    watcher = AsyncKernelClient()
    watcher.load_connection_file(await server.kernel_connection_file(room["kernel_id"]))
    watcher.start_channels()
    seen: list[dict[str, Any]] = []
    idle = anyio.Event()

    async def watch() -> None:
        while True:
            msg = await watcher.get_iopub_msg()
            seen.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle.set()

    async def last_activity() -> str:
        async with server.client() as http:
            kernel = (await http.get(f"/api/kernels/{room['kernel_id']}")).json()
            return str(kernel["last_activity"])

    async def run(cell_id: str, done: str) -> None:
        async with server.client() as http:
            await http.post(f"/api/kernels/{room['kernel_id']}/execute",
                            json={"cell_id": cell_id, "document_id": room["document_id"]})
        await peer.wait_until(lambda p: _stdout(_cell(p, cell_id)) == done)
        await peer.wait_until(lambda p: _cell(p, cell_id)["execution_count"] is not None)

    try:
        async with NotebookPeer.connect(url, server.token) as peer, anyio.create_task_group() as tg:
            await run("cell-0", "replica up\n")
            await watcher.wait_for_ready(timeout=30)
            tg.start_soon(watch)
            seen.clear()
            before = await last_activity()
            for i in range(30):  # the replica receives every edit (cell-2 waits for the last)
                peer.notebook.set_cell(1, source=f"edit {i}")
                await peer.flush()
            assert await last_activity() == before  # the culler saw no activity
            quiet = list(seen)
            await run("cell-2", "edit 29\n")
            with anyio.fail_after(30):  # the run's idle status may trail its output
                await idle.wait()
            tg.cancel_scope.cancel()
    finally:
        watcher.stop_channels()
    assert quiet == [], [m["msg_type"] for m in quiet]
    # cell-2's own run is all there is: no comm traffic, no extra busy/idle flicker.
    types = [m["msg_type"] for m in seen]
    assert set(types) <= {"status", "execute_input", "stream"}, types
    states = [m["content"]["execution_state"] for m in seen if m["msg_type"] == "status"]
    assert states == ["busy", "idle"], states


async def test_notebook_can_be_called_again_in_later_cells(server: JupyterServer) -> None:
    write_notebook(server.root / "nb.ipynb", [
        "import kernel_collab\nprint(len(kernel_collab.notebook().cells))",
        "import kernel_collab\nprint(kernel_collab.notebook().cells[0].id)",
    ])  # fmt: skip
    room = await server.open_room("nb.ipynb")
    url = server.sync_url(room["document_id"])
    async with NotebookPeer.connect(url, server.token) as peer, server.client() as http:
        for cell_id in ("cell-0", "cell-1"):
            await http.post(f"/api/kernels/{room['kernel_id']}/execute",
                            json={"cell_id": cell_id, "document_id": room["document_id"]})
        await peer.wait_until(lambda p: _stdout(_cell(p, "cell-1")) == "cell-0\n")
        assert _stdout(_cell(peer, "cell-0")) == "2\n"
