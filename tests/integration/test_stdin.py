"""``input()`` goes to the person whose run asked, through the real server, and only to them."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from kernel_collab import protocol
from tests.files import write_notebook
from tests.jupyter_server_process import JupyterServer
from tests.peers import NotebookPeer

pytestmark = pytest.mark.anyio


class Person:
    """A raw connection of one user: sees directed messages, answers prompts."""

    def __init__(self, ws: ClientConnection):
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self._ids = iter(range(1, 1000))
        self._arrived = anyio.Event()

    async def collect(self) -> None:
        async for data in self.ws:
            if isinstance(data, bytes) and data[:1] == bytes([protocol.REQUEST]):
                request = protocol.decode(data).request
                assert request is not None
                self.messages.append(request)
                self._arrived.set()
                self._arrived = anyio.Event()

    async def wait(self, condition: Any, timeout: float = 30) -> None:
        """Return once ``condition()`` holds, re-checked as this person's messages arrive."""
        with anyio.fail_after(timeout):
            while not condition():
                await self._arrived.wait()

    def prompts(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == "input_request"]

    async def send(self, request: dict[str, Any]) -> int:
        request_id = next(self._ids)
        await self.ws.send(protocol.encode_request({**request, "id": request_id}))
        return request_id

    def reply(self, request_id: int) -> dict[str, Any] | None:
        return next((m for m in self.messages if m.get("reply_to") == request_id), None)


async def _open(srv: JupyterServer) -> str:
    room = await srv.open_room("nb.ipynb", token="runner-token")
    return srv.sync_url(room["document_id"])


def _state(peer: NotebookPeer) -> dict[str, Any]:
    value = peer.notebook.ystate.get("kernel_collab")
    return value.to_py() if value is not None else {}


async def test_input_prompts_only_the_person_who_ran_the_cell(roles_server: JupyterServer) -> None:
    srv = roles_server
    write_notebook(srv.root / "nb.ipynb", ["name = input('name? ')\nprint('hello', name)",
                                           "secret = __import__('getpass').getpass('pw? ')"])
    url = await _open(srv)
    async with (
        ws_connect(f"{url}?token=runner-token") as ws_runner,
        ws_connect(f"{url}?token=runner2-token") as ws_other,
        NotebookPeer.connect(url, "editor-token") as watcher,
        anyio.create_task_group() as tg,
    ):
        runner, other = Person(ws_runner), Person(ws_other)
        tg.start_soon(runner.collect)
        tg.start_soon(other.collect)
        await runner.send({"type": "execute", "cell_id": "cell-0"})
        await runner.wait(lambda: runner.prompts())
        prompt = runner.prompts()[0]
        assert prompt["prompt"] == "name? " and prompt["password"] is False
        assert other.prompts() == []  # nobody else is asked
        # The document says whom the kernel waits for (it arrives through the room, after
        # the directed prompt: wait for it rather than race it).
        await watcher.wait_until(lambda p: bool(_state(p).get("waiting_for_input")))
        waiting = _state(watcher)["waiting_for_input"]
        assert waiting.get("from") == "Runner" and waiting.get("cell_id") == "cell-0"
        assert "name? " not in str(watcher.notebook.ystate.to_py())  # the prompt is not stored
        refused = await other.send({"type": "input_reply", "request_id": prompt["request_id"],
                                    "value": "intruder"})  # fmt: skip
        await other.wait(lambda: other.reply(refused) is not None)
        assert other.reply(refused) == {"reply_to": refused, "type": "input_reply", "ok": False,
                                         "error": "this input request is not for you"}
        answered = await runner.send({"type": "input_reply", "request_id": prompt["request_id"],
                                      "value": "Ada"})  # fmt: skip
        await runner.wait(lambda: (runner.reply(answered) or {}).get("ok") is True)
        await watcher.wait_until(lambda p: any(
            o.get("text") == "hello Ada\n" for o in p.notebook.get()["cells"][0]["outputs"]))

        # A password prompt for someone who has left is never handed to anyone else:
        # after the hand-over time the kernel is interrupted, with the reason in the state.
        await runner.send({"type": "execute", "cell_id": "cell-1"})
        await runner.wait(lambda: len(runner.prompts()) == 2)
        assert runner.prompts()[1]["password"] is True
        await ws_runner.close()
        await watcher.wait_until(lambda p: (_state(p).get("input_interrupted") or {})
                                 .get("cell_id") == "cell-1")  # fmt: skip
        assert other.prompts() == []
        await watcher.wait_until(lambda p: (p.notebook.get()["cells"][1]["metadata"]
                                 .get("kernel_collab", {}).get("last_run", {})
                                 .get("status")) == "error")  # fmt: skip
        tg.cancel_scope.cancel()


async def test_a_prompt_passes_to_another_runner_when_its_person_leaves(
    roles_server: JupyterServer,
) -> None:
    srv = roles_server
    write_notebook(srv.root / "nb.ipynb", ["print('got', input('color? '))"])
    url = await _open(srv)
    async with (
        ws_connect(f"{url}?token=runner2-token") as ws_other,
        NotebookPeer.connect(url, "editor-token") as watcher,
        anyio.create_task_group() as tg,
    ):
        other = Person(ws_other)
        tg.start_soon(other.collect)
        async with ws_connect(f"{url}?token=runner-token") as ws_runner:
            runner = Person(ws_runner)
            tg.start_soon(runner.collect)
            await runner.send({"type": "execute", "cell_id": "cell-0"})
            await runner.wait(lambda: runner.prompts())
        await other.wait(lambda: other.prompts())  # handed over after ~1 s
        await watcher.wait_until(lambda p: (_state(p).get("waiting_for_input") or {})
                                 .get("from") == "Runner2")  # fmt: skip
        prompt = other.prompts()[0]
        await other.send({"type": "input_reply", "request_id": prompt["request_id"],
                          "value": "blue"})  # fmt: skip
        await watcher.wait_until(lambda p: any(
            o.get("text") == "got blue\n" for o in p.notebook.get()["cells"][0]["outputs"]))
        tg.cancel_scope.cancel()
