"""Opening a notebook serves its document at once; its kernel launches beside it.

A real Jupyter server whose collaborative kernelspec launches ipykernel through
``tests.provisioners:HeldProvisioner``: the test holds the kernel's launch and looks at what
people get meanwhile, then lets it launch (or fail).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.files import wait_for_file
from tests.jupyter_server_process import JupyterServer, running_server
from tests.kernel_helpers import cell, collab_state, kernel_status, stream_text, write_cells
from tests.peers import NotebookPeer
from tests.provisioners import HOLD_DIR_ENV

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
KERNEL = "python3-held"
OPEN_TIMEOUT = 30.0
"""Seconds an open may take while the kernel's launch is held (it must not wait for it)."""


@pytest.fixture
def held(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[JupyterServer, Path]]:
    """A server whose rooms open on :data:`KERNEL`, and the folder that holds its launches
    (server arguments: the test's ``server_args`` mark)."""
    mark = request.node.get_closest_marker("server_args")
    extra = mark.args if mark is not None else ()
    root, runtime, hold = tmp_path / "root", tmp_path / "runtime", tmp_path / "hold"
    for folder in (root, runtime, hold):
        folder.mkdir()
    spec = tmp_path / "jupyter_path" / "kernels" / KERNEL / "kernel.json"
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (collaborative, held)",
        "language": "python",
        "metadata": {"kernel_provisioner": {
            "provisioner_name": "kernel-collab",
            "config": {"inner_provisioner": "tests.provisioners:HeldProvisioner"},
        }},
    }))  # fmt: skip
    pythonpath = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(REPO)) if p)
    env = {"JUPYTER_PATH": str(spec.parents[2]), "PYTHONPATH": pythonpath, HOLD_DIR_ENV: str(hold)}
    with running_server(root, runtime, f"--KernelCollabServer.kernel_name={KERNEL}", *extra,
                        env=env) as server:  # fmt: skip
        yield server, hold


async def put_room(server: JupyterServer, path: str) -> dict[str, Any]:
    """``PUT`` the room, failing if it waits for the held kernel."""
    with anyio.fail_after(OPEN_TIMEOUT):
        return await server.open_room(path)


async def open_written(server: JupyterServer, cells: dict[str, str]) -> dict[str, Any]:
    """Write ``nb.ipynb`` and open its room."""
    write_cells(server.root / "nb.ipynb", cells)
    return await put_room(server, "nb.ipynb")


async def open_held(server: JupyterServer, hold: Path, cells: dict[str, str]) -> dict[str, Any]:
    """Write ``nb.ipynb`` and open its room; return it once its kernel's launch is held."""
    room = await open_written(server, cells)
    await wait_for_file(hold / "held", lambda: (hold / "held").read_text() == room["kernel_id"])
    return room


async def sessions_on(server: JupyterServer, path: str) -> list[dict[str, Any]]:
    """The server's sessions on a notebook path."""
    async with server.client() as http:
        response = await http.get("/api/sessions")
    response.raise_for_status()
    return [s for s in response.json() if s["path"] == path]


async def test_the_document_is_served_and_runs_queue_while_its_kernel_launches(
    held: tuple[JupyterServer, Path],
) -> None:
    server, hold = held
    room = await open_held(server, hold, {"a": "print('ran', 6 * 7)"})  # answered while held
    assert room["kernel_id"] and room["session_id"] is None
    async with NotebookPeer.connect(server.sync_url(room["document_id"]), server.token) as peer:
        assert kernel_status(peer) == "starting"
        peer.notebook.set_cell(0, source="print('ran', 6 * 7, 'after an edit')")
        async with server.client() as http:  # JupyterLab's executor, with the kernel's id
            response = await http.post(f"/api/kernels/{room['kernel_id']}/execute",
                                       json={"cell_id": "a", "document_id": room["document_id"]})
        assert response.status_code == 202, response.text
        (hold / "release").write_text("")
        peer.wait_timeout = OPEN_TIMEOUT
        await peer.wait_until(
            lambda p: "ran 42 after an edit" in stream_text(cell(p, "a").get("outputs", [])))
        await peer.wait_until(lambda p: kernel_status(p) == "idle")
        assert collab_state(peer)["kernel_id"] == room["kernel_id"]
    [session] = await sessions_on(server, "nb.ipynb")
    assert session["kernel"]["id"] == room["kernel_id"]
    again = await put_room(server, "nb.ipynb")
    assert (again["kernel_id"], again["session_id"]) == (room["kernel_id"], session["id"])


async def test_jupyterlab_opening_meanwhile_joins_the_kernel_being_launched(
    held: tuple[JupyterServer, Path],
) -> None:
    server, hold = held
    room = await open_held(server, hold, {"a": "x = 1"})
    second = await put_room(server, "nb.ipynb")  # a second person, before the kernel is up
    # The first answer described the room from the sidecar's ready line; this one asked it.
    assert second == room
    listed: list[list[dict[str, Any]]] = []
    posted: list[httpx.Response] = []

    async def lab_session() -> None:
        """JupyterLab's session context: the session on the notebook's path, if listed."""
        async with server.client() as http:
            response = await http.get("/api/sessions")
        response.raise_for_status()
        listed.append([s for s in response.json() if s["path"] == "nb.ipynb"])

    async def client_session() -> None:
        """A client that asks for a session on the path (it gets the existing one)."""
        async with server.client() as http:
            posted.append(await http.post("/api/sessions", json={
                "path": "nb.ipynb", "type": "notebook", "name": "nb.ipynb",
                "kernel": {"name": KERNEL}}))  # fmt: skip

    async with anyio.create_task_group() as tg:
        tg.start_soon(lab_session)
        tg.start_soon(client_session)
        (hold / "release").write_text("")
    [[session]] = listed
    assert session["kernel"]["id"] == room["kernel_id"]
    [answer] = posted
    assert answer.status_code == 201, answer.text
    assert answer.json()["id"] == session["id"]
    async with server.client() as http:
        kernels = (await http.get("/api/kernels")).json()
    assert [k["id"] for k in kernels] == [room["kernel_id"]]
    assert "already has a collaborative kernel" not in server.log


async def test_jupyter_servers_restart_of_the_kernel_being_launched_waits_for_its_launch(
    held: tuple[JupyterServer, Path],
) -> None:
    """The room names its kernel before jupyter_server knows it: the server's own interrupt
    and restart of that kernel (a script with the room's ``kernel_id``) wait for its launch
    and then act, instead of answering 404 "Kernel does not exist"."""
    server, hold = held
    room = await open_held(server, hold, {"a": "print('after the restart')"})
    kernel_id = room["kernel_id"]
    answers: dict[str, httpx.Response] = {}

    async def act(action: str) -> None:
        async with server.client() as http:
            answers[action] = await http.post(f"/api/kernels/{kernel_id}/{action}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(act, "interrupt")
        tg.start_soon(act, "restart")
        (hold / "release").write_text("")
    assert answers["interrupt"].status_code == 204, answers["interrupt"].text
    assert answers["restart"].status_code == 200, answers["restart"].text
    async with NotebookPeer.connect(server.sync_url(room["document_id"]), server.token) as peer:
        peer.wait_timeout = OPEN_TIMEOUT
        await peer.wait_until(lambda p: kernel_status(p) == "idle" and (
            collab_state(p).get("last_kernel_event") or {}).get("event") == "restart")
        assert collab_state(peer)["kernel_id"] == kernel_id


async def test_a_kernel_that_cannot_launch_leaves_the_room_open_saying_why(
    held: tuple[JupyterServer, Path],
) -> None:
    server, hold = held
    room = await open_written(server, {"a": "print('second try')"})
    async with NotebookPeer.connect(server.sync_url(room["document_id"]), server.token) as peer:
        peer.wait_timeout = OPEN_TIMEOUT
        async with server.client() as http:
            response = await http.post(f"/api/kernels/{room['kernel_id']}/execute",
                                       json={"cell_id": "a", "document_id": room["document_id"]})
        assert response.status_code == 202, response.text
        await wait_for_file(hold / "held", lambda: (hold / "held").exists())
        (hold / "fail").write_text("")

        def failed(p: NotebookPeer) -> bool:
            event = collab_state(p).get("last_kernel_event") or {}
            return kernel_status(p) == "none" and event.get("event") == "failed"

        await peer.wait_until(failed)
        event = collab_state(peer)["last_kernel_event"]
        assert "launch refused by the test" in event["error"]
        assert [c.get("cell_id") for c in collab_state(peer).get("cancelled", [])] == ["a"]
        peer.notebook.set_cell(0, source="print('second try', 'works')")  # still editable
        assert "did not start" in server.log and "launch refused by the test" in server.log

        (hold / "fail").unlink()
        (hold / "release").write_text("")
        retry = await put_room(server, "nb.ipynb")  # opening again starts a kernel
        assert retry["document_id"] == room["document_id"]
        assert retry["kernel_id"] not in (None, room["kernel_id"])
        await peer.wait_until(lambda p: kernel_status(p) == "idle"
                              and collab_state(p).get("kernel_id") == retry["kernel_id"])


@pytest.mark.server_args("--KernelCollabServer.session_listing_wait=0.5")
async def test_listing_sessions_waits_for_a_launch_only_so_long(
    held: tuple[JupyterServer, Path],
) -> None:
    server, hold = held
    room = await open_held(server, hold, {"a": "x = 1"})
    with anyio.fail_after(OPEN_TIMEOUT):  # answered with the launch still held
        assert await sessions_on(server, "nb.ipynb") == []
    (hold / "release").write_text("")
    async with NotebookPeer.connect(server.sync_url(room["document_id"]), server.token) as peer:
        peer.wait_timeout = OPEN_TIMEOUT
        await peer.wait_until(lambda p: kernel_status(p) == "idle")
    [session] = await sessions_on(server, "nb.ipynb")
    assert session["kernel"]["id"] == room["kernel_id"]


async def test_a_server_stopped_while_a_kernel_starts_exits(
    held: tuple[JupyterServer, Path],
) -> None:
    """Stopped while someone's notebook is opening: the start ends, then the server exits (it
    used to stay up for good, held by a worker thread of the pending room request)."""
    server, hold = held
    await open_held(server, hold, {"a": "x = 1"})
    server.proc.send_signal(signal.SIGTERM)
    (hold / "release").write_text("")
    code = await anyio.to_thread.run_sync(lambda: server.proc.wait(OPEN_TIMEOUT))
    assert code == 0, server.log
    assert "nb.ipynb stopped" in server.log  # its sidecar saved and stopped too


async def test_a_second_kernel_is_refused_while_the_first_launches(
    held: tuple[JupyterServer, Path],
) -> None:
    server, hold = held
    room = await open_held(server, hold, {"a": "x = 1"})
    async with server.client() as http:  # a bare kernel told to serve the same notebook
        second = await http.post("/api/sessions", json={
            "path": "elsewhere/nb.ipynb", "name": "nb.ipynb", "type": "notebook",
            "kernel": {"name": KERNEL}})  # fmt: skip
    assert second.status_code >= 400
    assert "already has a collaborative kernel" in second.text
    assert room["kernel_id"] in second.text
    (hold / "release").write_text("")
    async with NotebookPeer.connect(server.sync_url(room["document_id"]), server.token) as peer:
        peer.wait_timeout = OPEN_TIMEOUT
        await peer.wait_until(lambda p: kernel_status(p) == "idle")
        assert collab_state(peer)["kernel_id"] == room["kernel_id"]
