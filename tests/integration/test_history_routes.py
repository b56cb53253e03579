"""The history routes of the server extension, through a real server with roles: a reader lists
the versions, reads one and sees what changed since; only people who may edit restore and
purge (the server refuses a reader with 403, and so does the sidecar on the WebSocket)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect

from kernel_collab.client import connect
from tests.files import write_notebook
from tests.integration.test_stdin import Person
from tests.jupyter_server_process import JupyterServer
from tests.peers import NotebookPeer

pytestmark = pytest.mark.anyio
HISTORY = "/api/kernel-collab/rooms/nb.ipynb/history"
AGENT = "tidy-agent"


def _sources(notebook: dict[str, Any]) -> list[str]:
    return ["".join(cell["source"]) for cell in notebook["cells"]]


def _by(name: str, kind: str) -> Callable[[dict[str, Any]], bool]:
    """A condition on a version: ``name`` (a ``kind`` of author) made it."""
    return lambda v: any(a.get("name") == name and a.get("kind") == kind for a in v["authors"])


async def _versions(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await http.get(HISTORY)
    assert response.status_code == 200, response.text
    versions: list[dict[str, Any]] = response.json()["versions"]
    return versions


async def _version_where(http: httpx.AsyncClient,
                         condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The newest listed version that meets ``condition``, once there is one."""
    with anyio.fail_after(15):
        while True:
            found = [v for v in await _versions(http) if condition(v)]
            if found:
                return found[-1]
            await anyio.sleep(0.1)  # a route, no event to wait on


async def test_readers_read_the_history_and_writers_restore_and_purge(
    roles_server: JupyterServer,
) -> None:
    srv = roles_server
    write_notebook(srv.root / "nb.ipynb", ["x = 1", "y = 2", "z = 3"])
    room = await srv.open_room("nb.ipynb", token="runner-token")
    url = srv.sync_url(room["document_id"])
    async with (
        NotebookPeer.connect(url, "editor-token") as editor,
        srv.client("reader-token") as reader,
        srv.client("editor-token") as writer,
    ):
        versions = await _versions(reader)
        assert versions[0]["kind"] == "created"
        first = versions[0]["version"]
        for version in versions:
            assert set(version) >= {"version", "first_at", "at", "kind", "pinned", "authors",
                                    "label", "outputs_dropped"}  # fmt: skip

        # A person edits, then a script.
        editor.notebook.set_cell(0, source="x = 10")
        by_editor = await _version_where(reader, _by("Editor", "person"))
        async with connect(srv.url, "nb.ipynb", token="runner-token", name=AGENT) as nb:
            nb.cells[1].source = "y = 20"
            await nb.sync()
        by_script = await _version_where(reader, _by(AGENT, "script"))
        assert by_script["version"] > by_editor["version"] > first

        # A reader reads the first version and sees what changed since.
        old = (await reader.get(f"{HISTORY}/{first}")).json()
        assert old["version"] == first
        assert _sources(old["notebook"]) == ["x = 1", "y = 2", "z = 3"]
        assert old["trusted"] == [] and old["outputs_dropped"] is False
        diff = (await reader.get(f"{HISTORY}/{first}/diff")).json()
        assert diff["version"] == first and diff["against"] == by_script["version"]
        assert [(c["id"], c["status"]) for c in diff["cells"]] == [
            ("cell-0", "modified"), ("cell-1", "modified"), ("cell-2", "unchanged")]  # fmt: skip
        assert diff["cells"][0]["source_diff"] == "@@ -1 +1 @@\n-x = 1\n+x = 10"
        assert diff["cells"][0]["outputs_changed"] is False
        between = (await reader.get(f"{HISTORY}/{by_editor['version']}/diff",
                                    params={"against": by_script["version"]})).json()
        assert [c["status"] for c in between["cells"]] == ["unchanged", "modified", "unchanged"]

        # A reader may not restore or purge.
        refused = await reader.post(f"{HISTORY}/{first}/restore")
        assert refused.status_code == 403, refused.text
        refused = await reader.post(f"{HISTORY}/purge", json={"before": by_editor["version"]})
        assert refused.status_code == 403, refused.text

        # An editor restores the first version: a new version, everyone converges on it.
        restored = await writer.post(f"{HISTORY}/{first}/restore")
        assert restored.status_code == 200, restored.text
        new = restored.json()["version"]
        assert new > by_script["version"]
        await editor.wait_until(
            lambda p: [str(c["source"]) for c in p.notebook.ycells] == ["x = 1", "y = 2", "z = 3"])
        newest = (await _versions(reader))[-1]
        assert (newest["version"], newest["kind"]) == (new, "restore")
        assert _by("Editor", "person")(newest)
        since = (await reader.get(f"{HISTORY}/{first}/diff")).json()
        assert {c["status"] for c in since["cells"]} == {"unchanged"}

        # An editor purges one version; it is gone.
        purged = await writer.post(f"{HISTORY}/purge", json={"version": by_editor["version"]})
        assert purged.status_code == 200, purged.text
        assert purged.json()["removed"] == 1
        gone = await reader.get(f"{HISTORY}/{by_editor['version']}")
        assert gone.status_code == 404, gone.text
        assert by_editor["version"] not in [v["version"] for v in await _versions(reader)]


async def test_the_sidecar_refuses_a_reader_too(roles_server: JupyterServer) -> None:
    srv = roles_server
    write_notebook(srv.root / "nb.ipynb", ["x = 1"])
    room = await srv.open_room("nb.ipynb", token="runner-token")
    url = srv.sync_url(room["document_id"])
    async with ws_connect(f"{url}?token=reader-token") as ws, anyio.create_task_group() as tg:
        reader = Person(ws)
        tg.start_soon(reader.collect)
        listed = await reader.send({"type": "history"})
        await reader.wait(lambda: reader.reply(listed) is not None)
        first = (reader.reply(listed) or {})["versions"][0]["version"]
        for request in ({"type": "restore", "version": first},
                        {"type": "purge", "before": first}):  # fmt: skip
            sent = await reader.send(request)
            await reader.wait(lambda: reader.reply(sent) is not None)  # noqa: B023
            reply = reader.reply(sent) or {}
            assert reply.get("ok") is False, reply
        tg.cancel_scope.cancel()


async def test_bad_requests(roles_server: JupyterServer) -> None:
    srv = roles_server
    write_notebook(srv.root / "nb.ipynb", ["x = 1"])
    write_notebook(srv.root / "closed.ipynb", ["x = 1"])
    await srv.open_room("nb.ipynb", token="runner-token")
    async with srv.client("editor-token") as http:
        for route in ("history", "history/1", "history/1/diff"):
            missing = await http.get(f"/api/kernel-collab/rooms/closed.ipynb/{route}")
            assert missing.status_code == 404, (route, missing.text)
        assert (await http.post("/api/kernel-collab/rooms/closed.ipynb/history/1/restore")
                ).status_code == 404  # fmt: skip
        first = (await _versions(http))[0]["version"]
        bad = await http.get(f"{HISTORY}/{first}/diff", params={"against": "yesterday"})
        assert bad.status_code == 400, bad.text
        for body in ({}, {"before": "1"}, {"before": 1, "version": 1}, [1]):
            bad = await http.post(f"{HISTORY}/purge", json=body)
            assert bad.status_code == 400, (body, bad.text)
        unknown = await http.get(f"{HISTORY}/99999")
        assert unknown.status_code == 404, unknown.text
        unauthenticated = await http.get(HISTORY, headers={"Authorization": "token nobody"})
        assert unauthenticated.status_code == 403, unauthenticated.text
