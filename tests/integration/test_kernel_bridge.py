"""The collaborative kernel through a real Jupyter server: outputs land with no browser open."""

from __future__ import annotations

from pathlib import Path

import anyio
import nbformat
import pytest
from jupyter_client.asynchronous.client import AsyncKernelClient

from tests.files import wait_for_file, write_notebook
from tests.jupyter_server_process import JupyterServer, running_server
from tests.kernel_helpers import ask, cell_outputs, kernel_status, stream_text
from tests.peers import NotebookPeer

pytestmark = pytest.mark.anyio



async def test_outputs_reach_the_file_with_no_browser(server: JupyterServer) -> None:
    nb = write_notebook(
        server.root / "nb.ipynb",
        ["import time\nfor i in range(20):\n    print('line', i, flush=True)\n"
         "    time.sleep(0.5)\n"],
    )
    session = await server.start_session("nb.ipynb")
    assert session["kernel"]["name"] == "python3-collab"
    sidecar = server.sidecar(nb)
    reply = await ask(sidecar["url"], sidecar["token"], {"type": "execute", "cell_id": "cell-0"})
    assert reply["ok"] is True
    # Nobody is connected any more: the kernel's output still goes into the file, saved as
    # it comes (the lines may be on disk before the run's end is), then the run's end.
    expected = "".join(f"line {i}\n" for i in range(20))

    def ended() -> bool:
        cell = nbformat.read(nb, as_version=4).cells[0]
        return cell.execution_count is not None

    await wait_for_file(nb, lambda: stream_text(cell_outputs(nb, 0)) == expected, timeout=60)
    await wait_for_file(nb, ended, timeout=30)
    saved = nbformat.read(nb, as_version=4).cells[0]
    assert saved.execution_count == 1
    assert saved.metadata["kernel_collab"]["last_run"]["status"] == "ok"


async def test_flood_of_prints_and_display_updates_loses_nothing(server: JupyterServer) -> None:
    nb = write_notebook(
        server.root / "nb.ipynb",
        [
            "for i in range(20000):\n    print(i, flush=True)\n",
            "from IPython.display import display, update_display\n"
            "h = display('start', display_id=True)\n"
            "for i in range(1000):\n    h.update(f'value {i}')\n",
        ],
    )
    await server.start_session("nb.ipynb")
    sidecar = server.sidecar(nb)
    async with NotebookPeer.connect(sidecar["url"], sidecar["token"]) as peer:
        for cell in ("cell-0", "cell-1"):
            await ask(sidecar["url"], sidecar["token"], {"type": "execute", "cell_id": cell})

        def done(p: NotebookPeer) -> bool:
            cells = p.notebook.get()["cells"]
            return all(c["execution_count"] for c in cells) and all(
                (c["metadata"].get("kernel_collab", {}).get("last_run") or {}).get("status")
                == "ok" for c in cells
            )

        peer.wait_timeout = 120
        await peer.wait_until(done)
        cells = peer.notebook.get()["cells"]
    printed = stream_text(cells[0]["outputs"])
    assert printed == "".join(f"{i}\n" for i in range(20000))
    assert len(cells[0]["outputs"]) == 1
    displays = cells[1]["outputs"]
    assert len(displays) == 1
    assert displays[0]["data"]["text/plain"] == "'value 999'"


async def test_server_wide_mode_makes_only_notebook_sessions_collaborative(
    tmp_path: Path,
) -> None:
    root, runtime = tmp_path / "root", tmp_path / "runtime"
    root.mkdir()
    runtime.mkdir()
    nb = write_notebook(root / "plain.ipynb", ["print('collaborative anyway')"])
    with running_server(
        root, runtime, "--KernelProvisionerFactory.default_provisioner_name=kernel-collab"
    ) as srv:
        session = await srv.start_session("plain.ipynb", kernel="python3")
        assert session["kernel"]["name"] == "python3"
        sidecar = srv.sidecar(nb)
        await ask(sidecar["url"], sidecar["token"], {"type": "execute", "cell_id": "cell-0"})
        await wait_for_file(
            nb, lambda: stream_text(cell_outputs(nb, 0)) == "collaborative anyway\n", timeout=60
        )
        async with srv.client() as http:
            console = await http.post("/api/sessions", json={
                "path": "console-1", "name": "Console 1", "type": "console",
                "kernel": {"name": "python3"}})  # fmt: skip
            console.raise_for_status()
            bare = await http.post("/api/kernels", json={"name": "python3"})
            bare.raise_for_status()
            kernels = (await http.get("/api/kernels")).json()
        assert len(kernels) == 3
        assert [r["notebook"] for r in srv.sidecars()] == [str(nb.resolve())]


async def test_a_plain_kernel_client_naming_a_cell_gets_its_outputs_written(
    server: JupyterServer,
) -> None:
    nb = write_notebook(server.root / "nb.ipynb", ["print('from a plain client')", "x = 1"])
    session = await server.start_session("nb.ipynb")
    sidecar = server.sidecar(nb)
    kernel_id = session["kernel"]["id"]
    client = AsyncKernelClient()
    client.load_connection_file(str(server.runtime / f"kernel-{kernel_id}.json"))
    client.start_channels()
    try:
        async with NotebookPeer.connect(sidecar["url"], sidecar["token"]) as peer:
            # The room shows the kernel idle once the sidecar's iopub subscription delivers
            # (ZMQ drops what is published before a subscriber joins): runs before that are
            # no one's to record, as in stock Jupyter.
            await peer.wait_until(lambda p: kernel_status(p) == "idle")
            # A console execution (no cell id) must not write into any cell; it runs first,
            # so its output has come and gone by the time the cell's output is in.
            client.execute("print('console only')")
            # As JupyterLab does: the cell id travels in the request's metadata.
            msg = client.session.msg(
                "execute_request",
                {"code": "print('from a plain client')", "silent": False,
                 "store_history": True, "user_expressions": {}, "allow_stdin": False,
                 "stop_on_error": True},
                metadata={"cellId": "cell-0"},
            )  # fmt: skip
            client.shell_channel.send(msg)

            def written(p: NotebookPeer) -> bool:
                cell = p.notebook.get()["cells"][0]
                return stream_text(cell["outputs"]) == "from a plain client\n" and (
                    cell["metadata"].get("kernel_collab", {}).get("last_run", {})
                    .get("status") == "ok"
                )

            await peer.wait_until(written)
            cells = peer.notebook.get()["cells"]
            assert cells[1]["outputs"] == []
            assert "console only" not in str(cells)
            # The cell shows the count the kernel gave that run, as its reply says.
            reply = await client.get_shell_msg(timeout=30)
            while reply["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
                reply = await client.get_shell_msg(timeout=30)
            assert cells[0]["execution_count"] == reply["content"]["execution_count"] > 0
            # The console's run, which names no cell, is noted in the room's state.
            noted = peer.notebook.ystate["kernel_collab"]["other_runs"]
            assert noted["count"] == 1 and noted["last_by"] == client.session.username
    finally:
        client.stop_channels()


async def test_output_widget_captures_stay_out_of_the_cell_and_reach_late_joiners(
    server: JupyterServer,
) -> None:
    nb = write_notebook(
        server.root / "nb.ipynb",
        ["import ipywidgets as w\nout = w.Output()\ndisplay(out)\n"
         "with out:\n    print('captured by the widget')\n"
         "print('in the cell')\nout.comm.comm_id"],
    )
    session = await server.start_session("nb.ipynb")
    sidecar = server.sidecar(nb)
    async with NotebookPeer.connect(sidecar["url"], sidecar["token"]) as peer:
        await ask(sidecar["url"], sidecar["token"], {"type": "execute", "cell_id": "cell-0"})
        await peer.wait_until(lambda p: any(
            o.get("output_type") == "execute_result"
            for o in p.notebook.get()["cells"][0]["outputs"]))  # fmt: skip
        outputs = peer.notebook.get()["cells"][0]["outputs"]
    assert stream_text(outputs) == "in the cell\n"
    assert "captured by the widget" not in str(outputs)
    views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 1
    comm_id = next(o for o in outputs if o["output_type"] == "execute_result")["data"][
        "text/plain"].strip("'")
    # A browser opening the notebook later asks the kernel for the widget's state, as
    # JupyterLab's widget manager does: the captured output is in it.
    client = AsyncKernelClient()
    client.load_connection_file(str(server.runtime / f"kernel-{session['kernel']['id']}.json"))
    client.start_channels()
    try:
        request = client.session.msg("comm_msg", {
            "comm_id": comm_id, "data": {"method": "request_state"}})  # fmt: skip
        client.shell_channel.send(request)
        with anyio.fail_after(30):
            while True:
                msg = await client.get_iopub_msg()
                content = msg["content"]
                if msg["msg_type"] == "comm_msg" and content.get("comm_id") == comm_id:
                    state = content["data"].get("state", {})
                    if "outputs" in state:
                        break
        assert state["outputs"] == [
            {"output_type": "stream", "name": "stdout", "text": "captured by the widget\n"}
        ]
    finally:
        client.stop_channels()


async def test_saved_notebooks_are_signed_once_every_output_is_the_kernels(
    server: JupyterServer,
) -> None:
    from nbformat.sign import NotebookNotary

    # Written outside Jupyter with an output nobody trusted: not signed, and saving alone must
    # not sign it.
    nb = write_notebook(server.root / "nb.ipynb", ["print('fresh')"], outputs=True)
    await server.start_session("nb.ipynb")
    sidecar = server.sidecar(nb)

    def signed() -> bool:
        notary = NotebookNotary(data_dir=str(server.runtime.parent / "data"))
        try:
            return bool(notary.check_signature(nbformat.read(nb, as_version=4)))
        finally:
            notary.close()

    async with NotebookPeer.connect(sidecar["url"], sidecar["token"]) as peer:
        peer.notebook.ycells[0]["metadata"]["note"] = "edited"
        await wait_for_file(nb, lambda: "edited" in nb.read_text())
        assert not signed()
        await ask(sidecar["url"], sidecar["token"], {"type": "execute", "cell_id": "cell-0"})
        await wait_for_file(nb, lambda: stream_text(cell_outputs(nb, 0)) == "fresh\n")
        await wait_for_file(nb, signed)


async def test_jupyterlab_timing_metadata_is_recorded_when_the_asker_records_it(
    server: JupyterServer,
) -> None:
    nb = write_notebook(server.root / "nb.ipynb", ["1 + 1"])
    await server.start_session("nb.ipynb")
    sidecar = server.sidecar(nb)
    url, token = sidecar["url"], sidecar["token"]

    def timing() -> dict[str, str] | None:
        cell = nbformat.read(nb, as_version=4).cells[0]
        value = cell.metadata.get("execution")
        return dict(value) if value is not None else None

    assert (await ask(url, token, {"type": "execute", "cell_id": "cell-0",
                                   "record_timing": True}))["ok"]  # fmt: skip
    await wait_for_file(nb, lambda: timing() is not None, timeout=60)
    recorded = timing()
    assert recorded is not None
    keys = ["iopub.status.busy", "iopub.execute_input", "shell.execute_reply.started",
            "shell.execute_reply", "iopub.status.idle"]  # fmt: skip
    assert sorted(recorded) == sorted(keys)
    assert recorded["iopub.status.busy"] <= recorded["iopub.status.idle"]  # ISO, UTC: ordered
    # A run asked with timing off drops it, as JupyterLab does.
    assert (await ask(url, token, {"type": "execute", "cell_id": "cell-0",
                                   "record_timing": False}))["ok"]  # fmt: skip
    await wait_for_file(nb, lambda: timing() is None, timeout=60)
