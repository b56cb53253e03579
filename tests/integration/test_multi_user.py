"""Several people, a script and the kernel itself share one kernel's queue, through the server."""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import connect as ws_connect

from kernel_collab.client import connect
from tests.integration.test_stdin import Person
from tests.jupyter_server_process import JupyterServer
from tests.kernel_helpers import write_cells
from tests.peers import NotebookPeer

pytestmark = pytest.mark.anyio

STEP = "import time\ntime.sleep(0.1)\nprint('{name}')"


def _cell(peer: NotebookPeer, cell_id: str) -> dict[str, Any]:
    return next(c for c in peer.notebook.get()["cells"] if c["id"] == cell_id)


def _last_run(peer: NotebookPeer, cell_id: str) -> dict[str, Any]:
    return dict(_cell(peer, cell_id)["metadata"].get("kernel_collab", {}).get("last_run") or {})


def _state(peer: NotebookPeer) -> dict[str, Any]:
    value = peer.notebook.ystate.get("kernel_collab")
    return value.to_py() if value is not None else {}


async def test_three_people_a_script_and_the_kernel_share_one_attributed_queue(
    roles_server: JupyterServer,
) -> None:
    srv = roles_server
    names = ["a0", "a1", "b0", "b1", "c0", "c1"]
    write_cells(srv.root / "nb.ipynb", {
        **{n: STEP.format(name=n) for n in names},
        "k": "import kernel_collab\nnb = kernel_collab.notebook()\nh = nb.run('k2')",
        "k2": "print('asked by the kernel')",
        "slow": "import time\nprint('slow', flush=True)\ntime.sleep(60)",
        "after": "print('never')",
    })  # fmt: skip
    room = await srv.open_room("nb.ipynb", token="runner-token")
    url = srv.sync_url(room["document_id"])
    async with (
        NotebookPeer.connect(url, "runner-token") as watcher,
        ws_connect(f"{url}?token=runner-token") as ws_a,
        ws_connect(f"{url}?token=runner2-token") as ws_b,
        ws_connect(f"{url}?token=editor-token") as ws_editor,
        connect(srv.url, "nb.ipynb", token="runner3-token", name="agent") as agent,
        anyio.create_task_group() as tg,
    ):
        alice, bob, editor = Person(ws_a), Person(ws_b), Person(ws_editor)
        for person in (alice, bob, editor):
            tg.start_soon(person.collect)

        async def ask(person: Person, cell_ids: list[str]) -> None:
            for cell_id in cell_ids:
                request_id = await person.send({"type": "execute", "cell_id": cell_id})
                await person.wait(lambda rid=request_id: person.reply(rid) is not None)
                assert person.reply(request_id)["ok"], person.reply(request_id)  # type: ignore[index]

        async def ask_agent() -> None:
            for cell_id in ("c0", "c1"):
                await agent.run_async(cell_id)

        async with anyio.create_task_group() as askers:  # all at once
            askers.start_soon(ask, alice, ["a0", "a1", "k"])
            askers.start_soon(ask, bob, ["b0", "b1"])
            askers.start_soon(ask_agent)
        refused = await editor.send({"type": "execute", "cell_id": "a0"})
        await editor.wait(lambda: editor.reply(refused) is not None)
        assert editor.reply(refused)["ok"] is False  # type: ignore[index]
        assert "may not run" in editor.reply(refused)["error"]  # type: ignore[index]

        await watcher.wait_until(lambda p: all(
            _last_run(p, c).get("status") == "ok" for c in [*names, "k", "k2"]))  # fmt: skip
        who = {c: _last_run(watcher, c)["by"]["username"] for c in [*names, "k", "k2"]}
        assert who == {"a0": "runner", "a1": "runner", "b0": "runner2", "b1": "runner2",
                       "c0": "runner3", "c1": "runner3", "k": "runner",
                       "k2": "runner"}  # the kernel's run: whoever ran the calling cell
        start = {c: _last_run(watcher, c)["start"] for c in [*names, "k2"]}
        for first, then in (("a0", "a1"), ("b0", "b1"), ("c0", "c1"), ("a1", "k2")):
            assert start[first] < start[then]  # each asker's order is kept
        ends = sorted((_last_run(watcher, c)["start"], _last_run(watcher, c)["end"])
                      for c in names)  # fmt: skip
        assert all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(ends))  # one at a time
        for c in names:
            assert _cell(watcher, c)["outputs"][0]["text"] == f"{c}\n"

        # Interrupt (by anyone allowed to run) stops the running cell and cancels the queue.
        await ask(alice, ["slow"])
        await watcher.wait_until(lambda p: (_state(p).get("running") or {}).get("cell_id")
                                 == "slow" and bool(_cell(p, "slow")["outputs"]))  # fmt: skip
        await ask(bob, ["after"])
        async with srv.client("runner2-token") as http:
            response = await http.post("/api/kernel-collab/rooms/nb.ipynb/interrupt")
            assert response.status_code == 200, response.text
        await watcher.wait_until(lambda p: _last_run(p, "slow").get("status") == "error")
        state = _state(watcher)
        assert state["last_kernel_event"]["event"] == "interrupt"
        assert state["last_kernel_event"]["by"]["username"] == "runner2"
        [cancelled] = [e for e in state["cancelled"] if e["cell_id"] == "after"]
        assert "Runner2" in cancelled["reason"] and cancelled["by"]["username"] == "runner2"
        assert not state.get("queue") and not _cell(watcher, "after")["outputs"]
        tg.cancel_scope.cancel()
