"""Who may do what, enforced where it matters, and what a hostile peer or page cannot do:
roles on every sidecar request, jupyter_server's own kernel routes for collaborative kernels,
no connections from web pages to a sidecar, no token in any log, awareness names from the
server only (and of bounded size), and runtime files outside what the server serves."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from pycrdt import create_awareness_message
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from kernel_collab import protocol
from kernel_collab.sidecar.awareness import awareness_user
from kernel_collab.sidecar.peer import Peer
from kernel_collab.sidecar.server import redact_url
from tests.files import write_notebook
from tests.integration.test_stdin import Person
from tests.jupyter_server_process import JupyterServer, running_server
from tests.kernel_helpers import write_cells
from tests.peers import NotebookPeer, url_with_token

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]


def _state(peer: NotebookPeer) -> dict[str, Any]:
    value = peer.notebook.ystate.get("kernel_collab")
    return value.to_py() if value is not None else {}


def _cell(peer: NotebookPeer, cell_id: str) -> dict[str, Any]:
    return next(c for c in peer.notebook.get()["cells"] if c["id"] == cell_id)


def _last_run(peer: NotebookPeer, cell_id: str) -> dict[str, Any]:
    return dict(_cell(peer, cell_id)["metadata"].get("kernel_collab", {}).get("last_run") or {})


def _running(cell_id: str) -> Any:
    """A condition: ``cell_id`` runs in the kernel and has printed (it is past its start)."""
    return lambda p: ((_state(p).get("running") or {}).get("cell_id") == cell_id
                      and bool(_cell(p, cell_id)["outputs"]))  # fmt: skip


async def _logged(srv: JupyterServer, pattern: str, timeout: float = 15) -> re.Match[str]:
    """The first match of ``pattern`` in the log of the server and its sidecars, once there."""
    with anyio.fail_after(timeout):
        # Lines come from the server's pipe through a reader thread: there is no event.
        while (found := re.search(pattern, srv.log)) is None:  # noqa: ASYNC110
            await anyio.sleep(0.02)
    return found


async def _refused(person: Person, request: dict[str, Any]) -> str:
    """Send a request that must be refused; return the sidecar's reason."""
    request_id = await person.send(request)
    await person.wait(lambda: person.reply(request_id) is not None)
    reply = person.reply(request_id)
    assert reply is not None and reply["ok"] is False, reply
    return str(reply["error"])


# -- 1. roles on every request -----------------------------------------------------------------


async def test_only_runners_may_interrupt_restart_or_answer_input(
    roles_server: JupyterServer,
) -> None:
    srv = roles_server
    write_notebook(srv.root / "nb.ipynb", ["print('hello', input('name? '))"])
    room = await srv.open_room("nb.ipynb", token="runner-token")
    url = srv.sync_url(room["document_id"])
    async with (
        ws_connect(f"{url}?token=runner-token") as ws_runner,
        ws_connect(f"{url}?token=editor-token") as ws_editor,
        ws_connect(f"{url}?token=reader-token") as ws_reader,
        NotebookPeer.connect(url, "runner-token") as watcher,
        anyio.create_task_group() as tg,
    ):
        runner, editor, reader = Person(ws_runner), Person(ws_editor), Person(ws_reader)
        for person in (runner, editor, reader):
            tg.start_soon(person.collect)
        for person, name in ((reader, "Reader"), (editor, "Editor")):
            for action in ("interrupt", "restart"):
                error = await _refused(person, {"type": "kernel_action", "action": action})
                assert error == f"{name} may not {action} the kernel"

        await runner.send({"type": "execute", "cell_id": "cell-0"})
        await runner.wait(lambda: runner.prompts())
        prompt = runner.prompts()[0]
        for person, name in ((reader, "Reader"), (editor, "Editor")):
            error = await _refused(person, {"type": "input_reply", "value": "intruder",
                                            "request_id": prompt["request_id"]})  # fmt: skip
            assert error == f"{name} may not answer input(): it needs the right to run"
        answered = await runner.send({"type": "input_reply", "value": "Ada",
                                      "request_id": prompt["request_id"]})  # fmt: skip
        await runner.wait(lambda: (runner.reply(answered) or {}).get("ok") is True)
        await watcher.wait_until(lambda p: _last_run(p, "cell-0").get("status") == "ok")
        assert _cell(watcher, "cell-0")["outputs"][-1]["text"].endswith("hello Ada\n")
        assert "last_kernel_event" not in _state(watcher)  # nothing refused was recorded
        tg.cancel_scope.cancel()


# -- 2. jupyter_server's own interrupt and restart routes --------------------------------------


async def test_stock_interrupt_and_restart_of_a_collaborative_kernel_need_execute(
    roles_server: JupyterServer,
) -> None:
    srv = roles_server
    write_cells(srv.root / "nb.ipynb", {
        "setup": "x = 41",
        "slow": "import time\nprint('started', flush=True)\ntime.sleep(2)\nprint('slept', x + 1)",
        "forever": "import time\nprint('started', flush=True)\ntime.sleep(60)",
    })  # fmt: skip
    room = await srv.open_room("nb.ipynb", token="runner-token")
    kernel = f"/api/kernels/{room['kernel_id']}"

    def cell(cell_id: str) -> dict[str, str]:
        return {"cell_id": cell_id, "document_id": room["document_id"]}

    async with (
        NotebookPeer.connect(srv.sync_url(room["document_id"]), "runner-token") as watcher,
        srv.client("runner-token") as runner,
        srv.client("editor-token") as editor,
    ):
        for cell_id in ("setup", "slow"):
            assert (await runner.post(f"{kernel}/execute", json=cell(cell_id))).status_code == 202
        await watcher.wait_until(_running("slow"))
        # The editor has kernels:write, all jupyter_server itself asks for, but not execute.
        for action in ("interrupt", "restart"):
            response = await editor.post(f"{kernel}/{action}")
            assert response.status_code == 403, response.text
            assert "kernels:execute" in response.json()["message"]
        # Neither happened: the cell slept to its end, in the same kernel (x still defined).
        await watcher.wait_until(lambda p: _last_run(p, "slow").get("status") == "ok")
        assert "slept 42" in _cell(watcher, "slow")["outputs"][-1]["text"]
        assert "last_kernel_event" not in _state(watcher)

        # A runner may, and the document says who, as for our own routes.
        assert (await runner.post(f"{kernel}/execute", json=cell("forever"))).status_code == 202
        await watcher.wait_until(_running("forever"))
        response = await runner.post(f"{kernel}/interrupt")
        assert response.status_code == 204, response.text
        await watcher.wait_until(lambda p: _last_run(p, "forever").get("status") == "error")
        event = _state(watcher)["last_kernel_event"]
        assert (event["event"], event["by"]["username"]) == ("interrupt", "runner")
        response = await runner.post(f"{kernel}/restart")
        assert response.status_code == 200, response.text
        await watcher.wait_until(lambda p: (_state(p).get("last_kernel_event") or {})
                                 .get("event") == "restart")  # fmt: skip
        assert _state(watcher)["last_kernel_event"]["by"]["username"] == "runner"

        # A kernel that is not collaborative keeps jupyter_server's own rule (kernels:write).
        plain = await runner.post("/api/kernels", json={"name": "python3"})
        assert plain.status_code == 201, plain.text
        response = await editor.post(f"/api/kernels/{plain.json()['id']}/interrupt")
        assert response.status_code == 204, response.text
        assert (await runner.delete(f"/api/kernels/{plain.json()['id']}")).status_code == 204


# -- 3. no connections from web pages ------------------------------------------------------


async def test_the_sidecar_refuses_connections_that_carry_an_origin(
    server: JupyterServer,
) -> None:
    nb = write_notebook(server.root / "nb.ipynb", ["x = 1"])
    room = await server.open_room("nb.ipynb")
    record = server.sidecar(nb)
    for token in (record["token"], record["admin_token"]):
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(url_with_token(record["url"], token),
                                  origin=Origin("http://evil.example")):
                pass
        response = refused.value.response
        assert response.status_code == 403
        assert response.body is not None
        assert b"connections from web pages are refused" in response.body
    line = (await _logged(server, r".*it carries an Origin header.*")).group(0)
    assert "'http://evil.example'" in line and "token=[redacted]" in line
    assert record["token"] not in server.log and record["admin_token"] not in server.log
    # The same connection without an Origin works.
    async with NotebookPeer.connect(record["url"], record["token"]) as direct:
        assert direct.notebook.cell_number == 1
    # A browser's connection goes through the server (which checks its Origin), and the
    # server's own connection to the sidecar carries none.
    browser_origin = Origin(server.url)  # the page's own origin: what Jupyter accepts
    async with ws_connect(url_with_token(server.sync_url(room["document_id"]), server.token),
                          origin=browser_origin) as browser:
        first = await browser.recv()
        assert isinstance(first, bytes) and first[:1] == bytes([0])  # the sidecar's sync step 1


# -- 4. tokens never in logs ---------------------------------------------------------------


async def test_no_sidecar_or_admin_token_reaches_a_log(tmp_path: Path) -> None:
    root, runtime = tmp_path / "root", tmp_path / "runtime"
    root.mkdir()
    runtime.mkdir()
    nb = write_notebook(root / "nb.ipynb", ["print('ran')"])
    with running_server(root, runtime, "--ServerApp.log_level=DEBUG",
                        "--CollabProvisioner.sidecar_args=--debug") as srv:  # fmt: skip
        room = await srv.open_room("nb.ipynb")
        record = srv.sidecar(nb)
        secrets = {"sidecar token": record["token"], "admin token": record["admin_token"]}
        url = srv.sync_url(room["document_id"])
        async with NotebookPeer.connect(url, srv.token) as peer, srv.client() as http:
            # A session: an edit and a run through the server.
            peer.notebook.set_cell(0, source="print('ran', 2)")
            execute = f"/api/kernels/{room['kernel_id']}/execute"
            body = {"cell_id": "cell-0", "document_id": room["document_id"]}
            assert (await http.post(execute, json=body)).status_code == 202
            await peer.wait_until(lambda p: _last_run(p, "cell-0").get("status") == "ok")
            # Requests that fail, through the server and directly.
            assert (await http.post(execute, json={**body, "cell_id": "nope"})).status_code == 400
            assert (await http.put("/api/kernel-collab/rooms/missing.ipynb")).status_code == 404
            assert (await http.get(f"/api/kernels/{room['kernel_id']}x")).status_code == 404
            async with ws_connect(url_with_token(url, srv.token)) as ws, \
                    anyio.create_task_group() as tg:  # fmt: skip
                person = Person(ws)
                tg.start_soon(person.collect)
                assert "admin token" in await _refused(person, {"type": "attach_kernel"})
                assert "interrupt" in await _refused(person, {"type": "kernel_action"})
                tg.cancel_scope.cancel()
            for token in ("wrong", None):
                with pytest.raises(InvalidStatus):
                    async with ws_connect(url_with_token(record["url"], token)):
                        pass
            async with ws_connect(url_with_token(record["url"], record["token"])) as bad:
                await bad.send(b"\xff\x01garbage")  # closed with 1002, and logged
                with contextlib.suppress(ConnectionClosed):
                    async for _ in bad:
                        pass
            await _logged(srv, r"refused a connection from .*: wrong token")
            await _logged(srv, r"refused a connection from .*: missing token")
            await _logged(srv, r"closing peer .*: protocol error")
            await _logged(srv, r"404 PUT /api/kernel-collab/rooms/missing.ipynb")
        log = srv.log
        assert "[D " in log  # debug logging was on
        for what, secret in secrets.items():
            assert secret not in log, f"the {what} is in the log"
    for what, secret in secrets.items():  # and nothing at shutdown either
        assert secret not in srv.log, f"the {what} is in the log"


def test_urls_are_logged_with_their_tokens_redacted() -> None:
    assert redact_url("/?token=s3cret&epoch=4") == "/?token=[redacted]&epoch=4"
    assert redact_url("ws://127.0.0.1:1/?name=k&admin_token=x") == (
        "ws://127.0.0.1:1/?name=k&admin_token=[redacted]")  # fmt: skip
    assert redact_url("/?epoch=4") == "/?epoch=4" and redact_url("/") == "/"


# -- 5. awareness: who the server says, and bounded ----------------------------------------


async def test_awareness_names_and_roles_come_from_the_server(roles_server: JupyterServer) -> None:
    srv = roles_server
    write_notebook(srv.root / "nb.ipynb", ["x = 1"])
    room = await srv.open_room("nb.ipynb", token="runner-token")
    url = srv.sync_url(room["document_id"])
    mallory = {"name": "Mallory", "username": "runner", "display_name": "Mallory",
               "color": "#ff0000", "role": "run", "avatar_url": "javascript:alert(1)",
               "permissions": {"write": True, "execute": True}}  # fmt: skip
    async with (
        NotebookPeer.connect(url, "runner-token") as runner,
        NotebookPeer.connect(url, "editor-token") as editor,
        NotebookPeer.connect(url, "reader-token") as reader,
    ):
        editor.set_awareness({"user": mallory, "cursors": [{"anchor": 1}]})
        reader.set_awareness({"user": mallory})
        await runner.wait_until(lambda p: len(p.peers) == 2)
        users = sorted((s["user"] for s in runner.peers.values()), key=lambda u: u["username"])
        person = {"color": "var(--jp-collaborator-color1)"}
        assert users == [
            {**person, "username": "editor", "name": "Editor", "display_name": "Editor",
             "initials": "E", "role": "edit"},
            {**person, "username": "reader", "name": "Reader", "display_name": "Reader",
             "initials": "R", "role": "read"},
        ]  # fmt: skip
        seen = json.dumps(runner.peers)
        assert "Mallory" not in seen and "javascript:" not in seen and "permissions" not in seen
        [cursors] = [s["cursors"] for s in runner.peers.values() if "cursors" in s]
        assert cursors == [{"anchor": 1}]  # the rest of a state is the peer's own


async def test_an_oversized_awareness_state_is_not_shared_and_its_sender_is_told(
    roles_server: JupyterServer,
) -> None:
    srv = roles_server
    write_notebook(srv.root / "nb.ipynb", ["x = 1"])
    room = await srv.open_room("nb.ipynb", token="runner-token")
    url = srv.sync_url(room["document_id"])
    big_id, small_id = 3_141_592, 2_718_281
    big = json.dumps({"user": {"name": "big"}, "blob": "x" * 100_000})
    size = len(big.encode())
    async with (
        NotebookPeer.connect(url, "runner-token") as runner,
        ws_connect(f"{url}?token=editor-token") as ws,
        anyio.create_task_group() as tg,
    ):
        sender = Person(ws)
        tg.start_soon(sender.collect)

        def notices() -> list[dict[str, Any]]:
            return [m for m in sender.messages if m.get("type") == "notice"]

        message = create_awareness_message(protocol.encode_awareness([(big_id, 1, big)]))
        await ws.send(message)
        await ws.send(message)
        await sender.wait(lambda: len(notices()) == 2)
        assert notices()[0] == {"type": "notice", "ok": False, "error": (
            f"awareness state of {size} bytes is over the 16384-byte limit; not shared")}
        # Relayed in order: once a later, small state arrives, the big one would have too.
        small = json.dumps({"user": {"name": "small"}, "hello": True})
        await ws.send(create_awareness_message(protocol.encode_awareness([(small_id, 1, small)])))
        await runner.wait_until(lambda p: small_id in p.peers)
        assert big_id not in runner.peers and "xxxxxxxx" not in json.dumps(runner.peers)
        assert runner.peers[small_id]["user"]["username"] == "editor"
        await ws.close()
        tg.cancel_scope.cancel()
    # Logged once for this peer, however often it tries (lines before its "left" are in).
    name = (await _logged(srv, rf"refused awareness of client {big_id} from (\S+):")).group(1)
    await _logged(srv, rf"{re.escape(name)} left")
    assert srv.log.count(f"refused awareness of client {big_id}") == 1


@pytest.mark.parametrize(("avatar", "shown"), [
    ("https://example.org/a.png", True), ("http://example.org/a.png", True),
    ("/avatars/u.png", True), ("javascript:alert(1)", False), ("JavaScript:alert(1)", False),
    ("data:text/html,<script>alert(1)</script>", False), (42, False),
])  # fmt: skip
def test_only_web_avatars_are_shown(avatar: Any, shown: bool) -> None:
    identity = {"username": "u", "name": "U", "avatar_url": avatar,
                "permissions": {"write": True, "execute": False}}  # fmt: skip
    peer = Peer(NotImplemented, name="u#1", queue_size=1, identity=identity,
                log=logging.getLogger("test"))  # fmt: skip
    user = awareness_user(peer, {"avatar_url": "https://evil.example/a.png", "role": "run"})
    expected = {"username": "u", "name": "U", "role": "edit"}
    assert user == ({**expected, "avatar_url": avatar} if shown else expected)


# -- 6. runtime files outside the served directory -----------------------------------------


def _shell_values(script: str) -> dict[str, str]:
    """``NAME="value"`` assignments of a shell script (``export`` or not), expanded with the
    earlier ones and ``$PWD`` (scripts/run runs from the repository's root)."""
    values = {"PWD": str(REPO)}
    for name, raw in re.findall(r'^(?:export )?(\w+)="([^"]*)"$', script, re.MULTILINE):
        values[name] = re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], raw)
    return values


def test_scripts_run_keeps_runtime_files_outside_what_it_serves() -> None:
    script = (REPO / "scripts" / "run").read_text()
    values = _shell_values(script)

    def option(name: str) -> Path:
        found = re.search(rf'--{re.escape(name)}="([^"]+)"', script)
        assert found, f"scripts/run no longer passes --{name}"
        return Path(re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], found.group(1)))

    served = option("ServerApp.root_dir")
    runtime = Path(values["JUPYTER_RUNTIME_DIR"])
    assert served == REPO / "examples"
    for path in (runtime, option("SQLiteYStore.db_path")):
        assert not path.is_relative_to(served), f"{path} is served by the server"
    assert runtime == REPO / ".runtime"
    assert "/.runtime/" in (REPO / ".gitignore").read_text().splitlines()
    assert re.search(r'chmod 700 "\$runtime"', script), "the runtime dir is not made private"

    spec = importlib.util.spec_from_file_location("watch_demo", REPO / "examples" / "watch_demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert served == demo.HERE and not demo.RUNTIME.is_relative_to(served)
