"""``input()`` and ``getpass()`` go to the person whose run asked, and only to them, never
stored nor shown to anyone else (docs/architecture.md, "Execution").
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskStatus
from traitlets import Float
from traitlets.config import LoggingConfigurable

from .. import protocol
from .bridge import KernelBridge
from .peer import Peer
from .requests import RequestError, require
from .room import Room


@dataclass
class Prompt:
    """A pending ``input_request``."""

    request_id: int
    cell_id: str
    prompt: str
    password: bool
    asker: dict[str, Any]
    target: dict[str, Any]


def _same_person(peer: Peer, person: dict[str, Any]) -> bool:
    return not peer.admin and peer.identity.get("username") == person.get("username")


class StdinRelay(LoggingConfigurable):
    """Relays kernel prompts to the right person and their answer back."""

    handover_timeout = Float(
        60.0,
        help="Seconds a prompt waits while the person it is for is not connected, before it "
        "passes to another runner (never a password) or the kernel is interrupted.",
    ).tag(config=True)

    def __init__(self, room: Room, bridge: KernelBridge, **kwargs: Any):
        super().__init__(**kwargs)
        self.room = room
        self.bridge = bridge
        self.pending: Prompt | None = None
        self._ids = itertools.count(1)
        self._changed = anyio.Event()

    def wake(self, _peer: Peer | None = None) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def on_join(self, peer: Peer) -> None:
        if self.pending is not None and _same_person(peer, self.pending.target):
            peer.send(self._message(self.pending))
        self.wake()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve prompts of each attached kernel until cancelled."""
        task_status.started()
        while True:
            client = await self.bridge.wait_attached()
            detached = self.bridge.detached
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read, client)
                await detached.wait()
                tg.cancel_scope.cancel()
            if self.pending is not None:  # the kernel that asked is gone
                self.pending = None
                self._publish()

    async def _read(self, client: Any) -> None:
        while True:
            msg = await client.stdin_channel.get_msg()
            if msg.get("msg_type") == "input_request":
                await self._serve(msg)

    async def _serve(self, msg: dict[str, Any]) -> None:
        parent = (msg.get("parent_header") or {}).get("msg_id", "")
        run = self.bridge.runs.get(parent)
        content = msg.get("content") or {}
        asker = run.by if run is not None else {"name": "unknown"}
        prompt = Prompt(next(self._ids), run.cell_id if run else "", str(content.get("prompt", "")),
                        bool(content.get("password")), asker, asker)  # fmt: skip
        self.pending = prompt
        self._publish()
        self._deliver(prompt)
        answered_id = prompt.request_id
        while self.pending is not None and self.pending.request_id == answered_id:
            if self._connected(prompt.target):
                await self._changed.wait()
                continue
            with anyio.move_on_after(self.handover_timeout):
                while not self._connected(prompt.target) and self.pending is not None:
                    await self._changed.wait()
                continue
            self._hand_over(prompt)

    def _connected(self, person: dict[str, Any]) -> bool:
        return any(_same_person(p, person) for p in self.room.peers)

    def _hand_over(self, prompt: Prompt) -> None:
        runners = [p for p in self.room.peers if not p.admin and p.may("execute")]
        if prompt.password or not runners:
            why = (f"input() waited {self.handover_timeout:g} s for "
                   f"{prompt.asker.get('name')}, who left; the kernel was interrupted")  # fmt: skip
            self.log.warning("cell %s: %s", prompt.cell_id, why)
            self.pending = None
            self.room.set_status("waiting_for_input", None)
            self.room.set_status("input_interrupted", {"cell_id": prompt.cell_id, "reason": why,
                                                       "at": time.time()})  # fmt: skip
            self.bridge.interrupt()
            return
        prompt.target = runners[0].public_identity
        self.log.info("cell %s: input() passed to %s", prompt.cell_id, prompt.target.get("name"))
        self._publish()
        self._deliver(prompt)

    def _message(self, prompt: Prompt) -> bytes:
        return protocol.encode_request({
            "type": "input_request", "request_id": prompt.request_id, "cell_id": prompt.cell_id,
            "prompt": prompt.prompt, "password": prompt.password,
        })  # fmt: skip

    def _deliver(self, prompt: Prompt) -> None:
        message = self._message(prompt)
        for peer in list(self.room.peers):
            if _same_person(peer, prompt.target):
                peer.send(message)

    def _publish(self) -> None:
        prompt = self.pending
        self.room.set_status("waiting_for_input", None if prompt is None else {
            "cell_id": prompt.cell_id, "from": prompt.target.get("name"),
            "username": prompt.target.get("username"), "password": prompt.password,
        })  # fmt: skip

    async def handle_reply(self, peer: Peer, request: dict[str, Any]) -> dict[str, Any]:
        # Answering feeds the running code: the sidecar holds it to the right to run, whoever
        # the prompt names (the UI only ever prompts runners, but the sidecar is the guard).
        require(peer, "execute", "answer input(): it needs the right to run")
        prompt = self.pending
        if prompt is None or request.get("request_id") != prompt.request_id:
            raise RequestError("no such input request is waiting")
        if not _same_person(peer, prompt.target):
            raise RequestError("this input request is not for you")
        client = self.bridge.client
        if client is None:
            raise RequestError("the kernel is gone")
        self.pending = None
        self._publish()
        self.wake()
        if "error" in request:  # the person's client cannot answer
            self.room.set_status("input_interrupted", {
                "cell_id": prompt.cell_id, "at": time.time(),
                "reason": f"{peer.identity.get('name')} could not answer: {request['error']}"})
            self.bridge.interrupt()
            return {"ok": True}
        client.input(str(request.get("value", "")))
        return {"ok": True}
