"""The kernel's replica as a peer of the room, over a comm on the kernel's own channels: joins,
numbered batches, resends, and the awareness renewals the kernel never sends itself (why and
how: docs/architecture.md, "The kernel's comm").
"""

from __future__ import annotations

import math
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup, TaskStatus
from pycrdt import create_sync_message
from traitlets import Float
from traitlets.config import LoggingConfigurable

from .. import protocol
from ..protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TRY_AGAIN,
    COMM_TARGET,
    COMM_VERSION,
    JOIN_MESSAGE,
    SYNC_MARK,
    encode_envelope,
)
from .awareness import AwarenessRelay
from .inbound import Inbound
from .peer import Peer

if TYPE_CHECKING:
    from jupyter_client.asynchronous.client import AsyncKernelClient

ACK_DELAY = 0.02
"""Seconds an acknowledgement waits for a message to ride with (the kernel probes at 0.3 s)."""
KERNEL_IDENTITY = {"username": "anonymous", "name": "kernel", "display_name": "kernel",
                   "anonymous": True, "permissions": {"write": True, "execute": True}}  # fmt: skip
"""Who the kernel's replica is to others: the kernel, which may edit and run."""


class KernelLink(LoggingConfigurable):
    """Serves the kernel's joins: one comm peer per replica in the kernel."""

    renew_interval = Float(15.0, help="Seconds between renewals of the kernel replica's "
                           "awareness (browsers drop an entry not renewed for 30 s).",
                           ).tag(config=True)  # fmt: skip
    nack_interval = Float(0.5, help="Seconds before asking the kernel again to resend what "
                          "iopub lost.").tag(config=True)  # fmt: skip

    def __init__(self, inbound: Inbound, awareness: AwarenessRelay, **kwargs: Any):
        super().__init__(**kwargs)
        self.inbound = inbound
        self.awareness = awareness
        self.comms: dict[str, KernelComm] = {}
        self._client: AsyncKernelClient | None = None
        self._joins, self._join_queue = anyio.create_memory_object_stream[dict[str, Any]](100)

    def take(self, msg_type: str, msg: dict[str, Any]) -> bool:
        """Take an iopub message if it is the kernel's join or on one of our comms (called
        inside the bridge's document transaction: only queues)."""
        if msg_type == JOIN_MESSAGE:
            try:
                self._joins.send_nowait(msg)
            except anyio.WouldBlock:
                self.log.warning("dropped a join of the kernel's replica: 100 are waiting")
            return True
        if msg_type in ("comm_msg", "comm_close"):
            content = msg.get("content")
            if not isinstance(content, dict):
                return False
            comm = self.comms.get(str(content.get("comm_id")))
            if comm is not None:
                comm.inbox_send.send_nowait(msg)
                return True
            if msg_type == "comm_msg" and self._client is not None and _stale(content):
                # A replica joined to a sidecar before this one (restarted since): tell it.
                data = encode_envelope(close=CLOSE_TRY_AGAIN, reason="the sidecar restarted: "
                                       "call kernel_collab.notebook() again")  # fmt: skip
                send(self._client, "comm_msg", {"comm_id": content["comm_id"], "data": data})
                return True
        return False

    async def serve(self, client: AsyncKernelClient, kernel_id: str, *,
                    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Answer joins from this kernel until it is detached (cancelled)."""
        self._client = client
        try:
            async with anyio.create_task_group() as tg:
                task_status.started()
                async for msg in self._join_queue:
                    self._answer(client, kernel_id, msg, tg)
        finally:
            self._client = None
            for comm in list(self.comms.values()):
                comm.peer.close(CLOSE_GOING_AWAY, "kernel detached")

    def _answer(self, client: AsyncKernelClient, kernel_id: str, msg: dict[str, Any],
                tg: TaskGroup) -> None:  # fmt: skip
        content = msg.get("content")
        nonce = content.get("nonce") if isinstance(content, dict) else None
        if not isinstance(content, dict) or not isinstance(nonce, str) or not 0 < len(nonce) <= 64:
            self.log.warning("kernel %s: ignored a malformed join of its replica: %.200r",
                             kernel_id, content)  # fmt: skip
            return
        comm_id = uuid.uuid4().hex
        data: dict[str, Any] = {"v": COMM_VERSION, "nonce": nonce}
        version = content.get("v")
        if version != COMM_VERSION:
            data["error"] = (f"the kernel's kernel_collab speaks version {version!r} of the "
                             f"kernel's comm, this sidecar version {COMM_VERSION}: install the "
                             "same kernel_collab in the kernel as on the server")  # fmt: skip
            self.log.warning("kernel %s: refused its replica: %s", kernel_id, data["error"])
        else:
            for old in list(self.comms.values()):  # one replica per kernel process
                old.peer.close(CLOSE_GOING_AWAY, "replaced by a new join from the kernel")
            comm = KernelComm(self, client, comm_id, kernel_id)
            self.comms[comm_id] = comm
            self.inbound.room.set_status("kernel_api", True)
            tg.start_soon(comm.run)
        send(client, "comm_open", {"comm_id": comm_id, "target_name": COMM_TARGET, "data": data})


def _stale(content: dict[str, Any]) -> bool:
    """Whether a comm message on a comm we do not know is a replica's (our envelope)."""
    data = content.get("data")
    if not isinstance(data, dict) or not isinstance(content.get("comm_id"), str):
        return False
    return data.get("v") == COMM_VERSION and type(data.get("seq")) is int


def send(client: AsyncKernelClient, msg_type: str, content: dict[str, Any],
         buffers: list[bytes] | None = None) -> None:  # fmt: skip
    """Send one of our comm messages on the kernel's shell channel, marked as ours."""
    msg = client.session.msg(msg_type, content, metadata={SYNC_MARK: True})
    msg["buffers"] = buffers or []
    client.shell_channel.send(msg)


class KernelComm:
    """One replica in the kernel, as a peer (its transport: this comm)."""

    def __init__(self, link: KernelLink, client: AsyncKernelClient, comm_id: str,
                 kernel_id: str):  # fmt: skip
        self.link = link
        self.room = link.inbound.room
        self.client = client
        self.comm_id = comm_id
        self.kernel_id = kernel_id
        self.peer = Peer(self, name=f"kernel {kernel_id[:8]}", queue_size=self.room.peer_queue_size,
                         identity=KERNEL_IDENTITY, log=link.log)  # fmt: skip
        self.peer.kind = "kernel"
        self.inbox_send, self._inbox = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        self.expected = 1
        """The kernel's next batch number (every one before it is handled)."""
        self._outgoing: list[bytes] = []
        self._ack_due = False
        self._wake = anyio.Event()
        self._ack_wake = anyio.Event()
        self._nacked: tuple[int, float] = (0, 0.0)

    # -- Transport (what the peer's sender calls) ---------------------------------------------

    async def send(self, message: bytes) -> None:
        """Queue a message for the next batch (sent as soon as the flusher runs)."""
        self._outgoing.append(message)
        self._wake.set()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Tell the kernel why (its code sees the reason), then close the comm."""
        self._flush()
        self._send(encode_envelope(close=code, reason=reason))
        send(self.client, "comm_close", {"comm_id": self.comm_id, "data": {}})

    def _send(self, data: dict[str, Any], buffers: list[bytes] | None = None) -> None:
        send(self.client, "comm_msg", {"comm_id": self.comm_id, "data": data}, buffers)

    # -- lifetime ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Join the room, pump both ways until the comm closes, leave."""
        log, room = self.link.log, self.room
        room.join(self.peer)
        room.no_echo.add(self.peer)  # its batches are acknowledged by number
        log.info("kernel %s: its replica joined over comm %s (%d peers)", self.kernel_id,
                 self.comm_id[:8], len(room.peers))  # fmt: skip
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._flusher)
                tg.start_soon(self._receiver)
                tg.start_soon(self._renewer)
                tg.start_soon(self._acker)
                await self.peer.run_sender()
                tg.cancel_scope.cancel()
        finally:
            room.leave(self.peer)
            self.peer.close(1000, "")
            self.link.comms.pop(self.comm_id, None)
            log.info("kernel %s: its replica left (%s)", self.kernel_id,
                     self.peer.close_reason or "comm closed")  # fmt: skip

    def _flush(self) -> None:
        batch, self._outgoing = self._outgoing, []
        if not batch and not self._ack_due:
            return
        self._ack_due = False
        self._send(encode_envelope(ack=self.expected - 1), batch)

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            self._flush()

    async def _renewer(self) -> None:
        while True:
            await anyio.sleep(self.link.renew_interval)
            self.link.awareness.renew(self.peer)

    async def _receiver(self) -> None:
        async for msg in self._inbox:
            if self.peer.closed:
                return
            if msg.get("msg_type") == "comm_close":
                self.peer.close(1000, "the kernel closed its comm")
                return
            content = msg.get("content") or {}
            try:
                await self._receive(protocol.decode_envelope(content.get("data")),
                                    msg.get("buffers") or [])  # fmt: skip
            except protocol.ProtocolError as exc:
                self.link.log.error("kernel %s: comm %s: protocol error, closed: %s",
                                    self.kernel_id, self.comm_id[:8], exc)  # fmt: skip
                self.peer.close(CLOSE_PROTOCOL_ERROR, f"protocol error: {exc}")
                return

    async def _receive(self, envelope: protocol.Envelope, buffers: list[Any]) -> None:
        seq = envelope.seq
        fresh = envelope.resync is None and not envelope.probe and seq == self.expected
        repair = envelope.resync == self.expected and seq >= self.expected
        if fresh or repair:
            self.expected = seq + 1
            for buffer in buffers:
                await self.link.inbound.route(self.peer, protocol.decode(bytes(buffer)))
            self._ack()
        elif envelope.probe and seq < self.expected:
            self._ack()  # nothing was lost
        elif seq >= self.expected:
            self._ask_resend()
        else:  # iopub loses and never repeats: a number seen again is not the replica's batch
            raise protocol.ProtocolError(f"batch {seq} came after batch {self.expected - 1}: "
                                         "batches are numbered from 1, in order")  # fmt: skip

    def _ack(self) -> None:
        """Acknowledge with the next message to the kernel (the relayed commit usually comes
        within milliseconds), or alone ``ACK_DELAY`` later: one shell message fewer per batch."""
        self._ack_due = True
        self._ack_wake.set()

    async def _acker(self) -> None:
        while True:
            await self._ack_wake.wait()
            self._ack_wake = anyio.Event()
            await anyio.sleep(ACK_DELAY)
            if self._ack_due:
                self._flush()

    def _ask_resend(self) -> None:
        """iopub lost a batch: send our state vector and where to resend from (rate-limited)."""
        now = time.monotonic()
        expected, at = self._nacked
        if expected == self.expected and now - at < self.link.nack_interval:
            return
        self._nacked = (self.expected, now)
        self.link.log.info("kernel %s: iopub lost the kernel's batches from %d; resyncing",
                           self.kernel_id, self.expected)  # fmt: skip
        self._send(encode_envelope(ack=self.expected - 1, resend_from=self.expected),
                   [create_sync_message(self.room.doc)])
