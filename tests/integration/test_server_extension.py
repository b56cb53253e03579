"""The server extension through a real Jupyter server: rooms, the sync proxy, execute."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from kernel_collab import protocol
from tests.files import wait_for_file, write_notebook
from tests.jupyter_server_process import JupyterServer, running_server
from tests.peers import NotebookPeer

pytestmark = pytest.mark.anyio



async def test_put_opens_a_room_and_browsers_sync_through_the_proxy(
    server: JupyterServer,
) -> None:
    write_notebook(server.root / "nb.ipynb", ["print('via the server')", "y = 2"])
    async with server.client() as http:
        missing = await http.get("/api/kernel-collab/rooms/nb.ipynb")
        assert missing.status_code == 404
    room = await server.open_room("nb.ipynb")
    assert room["path"] == "nb.ipynb"
    assert room["document_id"] and room["kernel_id"]
    again = await server.open_room("nb.ipynb")  # idempotent: the same room and kernel
    assert (again["document_id"], again["kernel_id"]) == (room["document_id"], room["kernel_id"])

    url = server.sync_url(room["document_id"])
    async with NotebookPeer.connect(url, server.token) as alice, NotebookPeer.connect(
        url, server.token
    ) as bob:
        alice.set_awareness({"user": {"name": "I am somebody else"}})
        alice.notebook.set_cell(1, source="y = 20")
        await bob.wait_until(lambda p: str(p.notebook.ycells[1]["source"]) == "y = 20")
        # The sidecar stamps the authenticated identity over whatever a peer claims.
        await bob.wait_until(lambda p: any(
            s.get("user", {}).get("username") for s in p.peers.values()))  # fmt: skip
        names = {s["user"]["name"] for s in bob.peers.values() if "user" in s}
        assert "I am somebody else" not in names

        async with server.client() as http:
            response = await http.post(
                f"/api/kernels/{room['kernel_id']}/execute",
                json={"cell_id": "cell-0", "document_id": room["document_id"]},
            )
            assert response.status_code == 202, response.text
            status = await http.get("/api/kernel-collab/rooms/nb.ipynb")
            assert status.status_code == 200
            assert len(status.json()["peers"]) == 2

        def printed(p: NotebookPeer) -> bool:
            outputs = p.notebook.get()["cells"][0]["outputs"]
            return any(o.get("text") == "via the server\n" for o in outputs)

        await bob.wait_until(printed)
        last_run = bob.notebook.get()["cells"][0]["metadata"]["kernel_collab"]["last_run"]
        assert last_run["by"]["username"]  # attributed to the authenticated user


async def test_revert_to_checkpoint_brings_back_the_notebook_as_first_opened(
    server: JupyterServer,
) -> None:
    nb = write_notebook(server.root / "nb.ipynb", ["x = 'as opened'"])
    room = await server.open_room("nb.ipynb")
    async with NotebookPeer.connect(server.sync_url(room["document_id"]), server.token) as peer:
        peer.notebook.set_cell(0, source="x = 'edited'")
        await wait_for_file(nb, lambda: "edited" in nb.read_text())  # saved
        async with server.client() as http:
            checkpoints = (await http.get("/api/contents/nb.ipynb/checkpoints")).json()
            assert len(checkpoints) == 1, checkpoints
            restored = await http.post(f"/api/contents/nb.ipynb/checkpoints/"
                                       f"{checkpoints[0]['id']}")  # fmt: skip
            assert restored.status_code == 204, restored.text
        # The file is the version first opened, and the room follows it.
        await peer.wait_until(lambda p: str(p.notebook.ycells[0]["source"]) == "x = 'as opened'")
    assert "as opened" in nb.read_text()


async def test_requests_without_credentials_or_outside_the_root_are_refused(
    server: JupyterServer,
) -> None:
    write_notebook(server.root / "nb.ipynb", ["x = 1"])
    room = await server.open_room("nb.ipynb")
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        for method, path in [
            ("PUT", "/api/kernel-collab/rooms/nb.ipynb"),
            ("GET", "/api/kernel-collab/rooms/nb.ipynb"),
            ("POST", f"/api/kernels/{room['kernel_id']}/execute"),
        ]:
            response = await anonymous.request(method, path, json={})
            assert response.status_code in (401, 403), (method, path, response.status_code)
    with pytest.raises(InvalidStatus) as refused:
        async with NotebookPeer.connect(server.sync_url(room["document_id"]), None):
            pass
    assert refused.value.response.status_code in (401, 403)
    async with server.client() as http:
        escape = await http.put("/api/kernel-collab/rooms/..%2F..%2Fetc%2Fx.ipynb")
        assert escape.status_code in (400, 403, 404)
        unknown = await http.get("/api/kernel-collab/rooms/absent.ipynb")
        assert unknown.status_code == 404
        missing = await http.put("/api/kernel-collab/rooms/100%25%20done.ipynb")
        assert missing.status_code == 404
        assert missing.json()["message"] == "no notebook at 100% done.ipynb"
        wrong_doc = await http.post(
            f"/api/kernels/{room['kernel_id']}/execute",
            json={"cell_id": "cell-0", "document_id": "not-this-one"},
        )
        assert wrong_doc.status_code == 400
    with pytest.raises(InvalidStatus) as not_found:
        async with NotebookPeer.connect(server.sync_url("no-such-document"), server.token):
            pass
    assert not_found.value.response.status_code == 404


async def test_interrupt_through_our_route_says_who_did_it(server: JupyterServer) -> None:
    write_notebook(server.root / "nb.ipynb", ["import time\nprint('started', flush=True)\n"
                                              "time.sleep(60)", "print('next')"])
    room = await server.open_room("nb.ipynb")
    url = server.sync_url(room["document_id"])
    async with NotebookPeer.connect(url, server.token) as peer, server.client() as http:
        for cell in ("cell-0", "cell-1"):
            response = await http.post(f"/api/kernels/{room['kernel_id']}/execute",
                                       json={"cell_id": cell, "document_id": room["document_id"]})
            assert response.status_code == 202

        def status(p: NotebookPeer) -> dict[str, Any]:
            value = p.notebook.ystate.get("kernel_collab")
            return value.to_py() if value is not None else {}

        await peer.wait_until(lambda p: (status(p).get("running") or {}).get("cell_id")
                              == "cell-0")  # fmt: skip
        # Interrupt once the code runs, as a person sees it: a SIGINT that reaches ipykernel
        # before it starts the cell is lost (stock Jupyter behaves the same).
        await peer.wait_until(lambda p: "started" in str(p.notebook.ycells[0]["outputs"]))
        response = await http.post("/api/kernel-collab/rooms/nb.ipynb/interrupt")
        assert response.status_code == 200, response.text
        await peer.wait_until(lambda p: (status(p).get("last_kernel_event") or {})
                              .get("event") == "interrupt")  # fmt: skip
        event = status(peer)["last_kernel_event"]
        assert event["by"]["username"]
        await peer.wait_until(lambda p: status(p).get("running") is None)
        cancelled = status(peer).get("cancelled") or []
        assert [c["cell_id"] for c in cancelled] == ["cell-1"]
        assert "interrupted by" in cancelled[0]["reason"]


def _status(peer: NotebookPeer) -> dict[str, Any]:
    value = peer.notebook.ystate.get("kernel_collab")
    return value.to_py() if value is not None else {}


async def test_rename_moves_the_room_and_delete_pauses_autosave(server: JupyterServer) -> None:
    write_notebook(server.root / "nb.ipynb", ["x = 1"])
    (server.root / "moved").mkdir()
    room = await server.open_room("nb.ipynb")
    url = server.sync_url(room["document_id"])
    async with NotebookPeer.connect(url, server.token) as peer, server.client() as http:
        renamed = await http.patch("/api/contents/nb.ipynb", json={"path": "moved/nb2.ipynb"})
        assert renamed.status_code == 200, renamed.text
        await peer.wait_until(lambda p: p.notebook.ystate.get("path") == "moved/nb2.ipynb")
        moved = await http.get("/api/kernel-collab/rooms/moved/nb2.ipynb")
        assert moved.status_code == 200
        assert moved.json()["document_id"] == room["document_id"]
        peer.notebook.set_cell(0, source="x = 'after the rename'")
        new_file = server.root / "moved" / "nb2.ipynb"
        await wait_for_file(new_file, lambda: "after the rename" in new_file.read_text())
        assert not (server.root / "nb.ipynb").exists()

        deleted = await http.delete("/api/contents/moved/nb2.ipynb")
        assert deleted.status_code == 204
        await peer.wait_until(lambda p: _status(p).get("autosave") == "paused")
        assert "deleted" in _status(peer)["file_error"]
        peer.notebook.set_cell(0, source="x = 'typed after the delete'")
        await peer.wait_until(lambda p: p.notebook.ystate.get("dirty") is True)
        assert not new_file.exists()


async def test_roles_are_enforced_by_the_sidecar(roles_server: JupyterServer) -> None:
    srv = roles_server
    write_notebook(srv.root / "nb.ipynb", ["print('ran')", "x = 1"])

    def as_role(role: str) -> httpx.AsyncClient:
        return srv.client(f"{role}-token")

    async with as_role("reader") as reader:
        refused = await reader.put("/api/kernel-collab/rooms/nb.ipynb")
        assert refused.status_code == 403  # opening starts a kernel: not for readers
    async with as_role("runner") as runner:
        opened = await runner.put("/api/kernel-collab/rooms/nb.ipynb")
        assert opened.status_code == 200, opened.text
        room = opened.json()
    url = srv.sync_url(room["document_id"])
    execute = f"/api/kernels/{room['kernel_id']}/execute"
    body = {"cell_id": "cell-0", "document_id": room["document_id"]}
    async with (
        NotebookPeer.connect(url, "reader-token") as reader_peer,
        NotebookPeer.connect(url, "editor-token") as editor_peer,
        NotebookPeer.connect(url, "runner-token") as runner_peer,
    ):
        # The reader sees the notebook, but an edit closes its connection and reaches nobody.
        assert str(reader_peer.notebook.ycells[1]["source"]) == "x = 1"
        reader_peer.notebook.set_cell(1, source="x = 'reader was here'")
        with pytest.raises(ConnectionError):
            await reader_peer.wait_until(lambda p: False)
        # The editor edits; everyone else sees it.
        editor_peer.notebook.set_cell(1, source="x = 'editor'")
        await runner_peer.wait_until(
            lambda p: str(p.notebook.ycells[1]["source"]) == "x = 'editor'")
        async with as_role("reader") as reader, as_role("editor") as editor:
            assert (await reader.post(execute, json=body)).status_code == 403
            assert (await editor.post(execute, json=body)).status_code == 403
            interrupt = "/api/kernel-collab/rooms/nb.ipynb/interrupt"
            assert (await editor.post(interrupt)).status_code == 403
        async with as_role("runner") as runner:
            assert (await runner.post(execute, json=body)).status_code == 202

        def ran(p: NotebookPeer) -> bool:
            cell = p.notebook.get()["cells"][0]
            return (cell["metadata"].get("kernel_collab", {}).get("last_run", {})
                    .get("by", {}).get("username")) == "runner" and bool(cell["outputs"])

        await editor_peer.wait_until(ran)
        assert "reader was here" not in str(runner_peer.notebook.get())
        # The editor's name on its awareness comes from the server, not from the peer.
        editor_peer.set_awareness({"user": {"name": "Runner"}})
        await runner_peer.wait_until(lambda p: any(
            s.get("user", {}).get("username") == "editor" for s in p.peers.values()))
        names = [s["user"].get("name") for s in runner_peer.peers.values() if "user" in s]
        assert names.count("Runner") == 0


async def test_a_script_racing_a_browser_gets_the_same_room(server: JupyterServer) -> None:
    write_notebook(server.root / "nb.ipynb", ["x = 1"])
    rooms: list[dict[str, Any]] = []

    async def opener() -> None:
        rooms.append(await server.open_room("nb.ipynb"))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(opener)
    assert len({(r["document_id"], r["kernel_id"]) for r in rooms}) == 1
    assert len(server.sidecars()) == 1
    async with server.client() as http:
        sessions = (await http.get("/api/sessions")).json()
    assert len(sessions) == 1


async def test_a_second_kernel_for_the_same_notebook_is_refused(server: JupyterServer) -> None:
    nb = write_notebook(server.root / "nb.ipynb", ["x = 1"])
    room = await server.open_room("nb.ipynb")
    async with server.client() as http:
        # A bare kernel told to serve the same notebook (as a second session would be).
        second = await http.post("/api/sessions", json={
            "path": "elsewhere/nb.ipynb", "name": "nb.ipynb", "type": "notebook",
            "kernel": {"name": "python3-collab"}})  # fmt: skip
    assert second.status_code >= 400
    assert "already has a collaborative kernel" in second.text
    assert room["kernel_id"] in second.text
    assert [r["notebook"] for r in server.sidecars()] == [str(nb.resolve())]


async def test_jupyter_collaboration_cannot_open_a_second_room_on_our_notebook(
    server: JupyterServer,
) -> None:
    write_notebook(server.root / "nb.ipynb", ["x = 1"])
    write_notebook(server.root / "other.ipynb", ["y = 1"])
    body = {"format": "json", "type": "notebook"}
    async with server.client() as http:
        # Indexed by jupyter-collaboration before our room exists (as if opened earlier).
        before = await http.put("/api/collaboration/session/nb.ipynb", json=body)
        assert before.status_code in (200, 201), before.text
        file_id = before.json()["fileId"]
        await server.open_room("nb.ipynb")
        refused = await http.put("/api/collaboration/session/nb.ipynb", json=body)
        assert refused.status_code == 409
        assert "kernel_collab" in refused.text
        untouched = await http.put("/api/collaboration/session/other.ipynb", json=body)
        assert untouched.status_code in (200, 201)
    their_room = (server.url.replace("http", "ws", 1)
                  + f"/api/collaboration/room/json:notebook:{file_id}")
    with pytest.raises(InvalidStatus) as refused_ws:
        async with NotebookPeer.connect(their_room, server.token):
            pass
    assert refused_ws.value.response.status_code == 409


async def test_a_killed_sidecar_drops_browsers_who_reconnect_and_comes_back(
    server: JupyterServer,
) -> None:
    nb = write_notebook(server.root / "nb.ipynb", ["x = 1"])
    room = await server.open_room("nb.ipynb")
    url = server.sync_url(room["document_id"])
    old = server.sidecar(nb)
    async with NotebookPeer.connect(url, server.token) as peer, NotebookPeer.connect(
        url, server.token
    ) as other:
        peer.notebook.set_cell(0, source="x = 'acknowledged before the crash'")
        # Once another peer has it, it is in the store (apply, commit, then relay).
        await other.wait_until(
            lambda p: str(p.notebook.ycells[0]["source"]) == "x = 'acknowledged before the crash'")
        os.kill(old["pid"], signal.SIGKILL)
        with pytest.raises(ConnectionError) as gone:
            await peer.wait_until(lambda p: False)
        closed = gone.value.__cause__
        # Handed over, the connection was the sidecar's own: it drops without a close frame
        # (1006; the proxy route says 1013). Browsers reconnect on any close but 4403/4409.
        assert isinstance(closed, ConnectionClosed)
        assert closed.rcvd is None or closed.rcvd.code == 1013
    # The server's supervisor starts a new sidecar from the store; the kernel lives on.
    def restarted() -> bool:
        return any(r["pid"] != old["pid"] for r in server.sidecars())

    # Supervision runs on the server's restarter poll; the new runtime file is the event.
    await wait_for_file(server.runtime / "kernel_collab" / "x", restarted, timeout=30)
    record = server.sidecar(nb)
    async with NotebookPeer.connect(url, server.token) as back:
        assert str(back.notebook.ycells[0]["source"]) == "x = 'acknowledged before the crash'"
        # The same kernel is re-attached to the new sidecar (a moment after it starts).
        await back.wait_until(lambda p: (p.notebook.ystate.get("kernel_collab") or {})
                              .get("kernel_id") == room["kernel_id"])  # fmt: skip
        async with server.client() as http:
            again = (await http.get("/api/kernel-collab/rooms/nb.ipynb")).json()
    assert again["document_id"] == room["document_id"]
    assert again["kernel_id"] == room["kernel_id"]
    assert record["pid"] != old["pid"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ServerApp.contents_manager_class=tests.memory_contents.NoFilesContentsManager"],
         "kernel_collab needs a file-based ContentsManager"),
        (["--ServerApp.jpserver_extensions=tests.clashing_extension=True"],
         "which kernel_collab serves: disable one of the two extensions"),
    ],
)
async def test_an_unsupported_setup_is_refused_at_start_up_with_a_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    root, runtime = tmp_path / "root", tmp_path / "runtime"
    root.mkdir()
    runtime.mkdir()
    with running_server(root, runtime, *args) as srv:
        assert message in srv.log


async def test_mode_says_which_notebooks_open_collaboratively(server: JupyterServer) -> None:
    async def mode(path: str) -> dict[str, Any]:
        async with server.client() as http:
            response = await http.get(f"/api/kernel-collab/mode/{path}")
            assert response.status_code == 200, response.text
            result: dict[str, Any] = response.json()
            return result

    write_notebook(server.root / "plain.ipynb", ["1"])
    collab = write_notebook(server.root / "collab.ipynb", ["2"])
    nb = collab.read_text().replace('"name": "python3"', '"name": "python3-collab"')
    collab.write_text(nb)
    (server.root / "broken.ipynb").write_text('{"cells": [')
    assert await mode("plain.ipynb") == {
        "collaborative": False, "reason": "kernelspec", "kernel_name": "python3"}
    assert await mode("collab.ipynb") == {
        "collaborative": True, "reason": "kernelspec", "kernel_name": "python3-collab"}
    assert (await mode("broken.ipynb"))["collaborative"] is False  # unreadable: opens as a file
    # A running session decides, whatever the file says.
    await server.start_session("plain.ipynb", kernel="python3")
    assert await mode("plain.ipynb") == {
        "collaborative": False, "reason": "session", "kernel_name": "python3"}
    room = await server.open_room("collab.ipynb")  # answered while its kernel launches
    assert room["permissions"] == {"write": True, "execute": True}
    opened = await mode("collab.ipynb")
    assert opened["collaborative"] is True
    assert opened["room"]["document_id"] == room["document_id"]  # join without a PUT
    async with server.client() as http:  # the listing waits for the kernel's start
        sessions = (await http.get("/api/sessions")).json()
    assert sorted(s["path"] for s in sessions) == ["collab.ipynb", "plain.ipynb"]
    opened = await mode("collab.ipynb")
    assert (opened["collaborative"], opened["reason"]) == (True, "session")
    assert opened["room"]["document_id"] == room["document_id"]
    async with server.client() as http:
        assert (await http.get("/api/kernel-collab/mode/../x.ipynb")).status_code in (400, 403, 404)
        assert (await http.get("/api/kernel-collab/mode/notes.txt")).status_code == 400


async def test_the_servers_own_requests_do_not_join_the_room(server: JupyterServer) -> None:
    nb = write_notebook(server.root / "nb.ipynb", ["x = 1"])
    await server.open_room("nb.ipynb")
    await server.open_room("nb.ipynb")  # its requests: room info, the kernel's attach
    record = server.sidecar(nb)
    received: list[bytes] = []
    async with ws_connect(f"{record['url']}?{protocol.REQUESTS_ONLY_QUERY}",
                          additional_headers={"Authorization": f"token {record['admin_token']}"}
                          ) as ws:  # fmt: skip
        await ws.send(protocol.encode_request({"type": "room_info", "id": "r1"}))
        async for data in ws:
            assert isinstance(data, bytes)
            received.append(data)
            if data[:1] == bytes([protocol.REQUEST]):
                break
    # Only the reply: no sync step, no presence of the others.
    [reply] = received
    assert (protocol.decode(reply).request or {}).get("reply_to") == "r1"
    assert "kernel_collab#" not in server.log  # no 'joined'/'left' lines for them
