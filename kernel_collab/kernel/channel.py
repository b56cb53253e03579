"""The kernel's end of its comm with the sidecar, as a ``Channel`` (docs/architecture.md, "The
kernel's comm"). Everything here runs on the replica's event loop thread, except
:meth:`CommChannel.deliver`, which the shell channel thread calls."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from pycrdt import (
    Doc,
    YMessageType,
    YSyncMessageType,
    get_state,
)

from .. import protocol
from ..protocol import encode_envelope


class CommClosed(ConnectionError):
    """The sidecar closed the kernel's comm; the message says why (its close code and reason)."""


def _is_document(message: bytes) -> bool:
    """A sync step 2 or an update: what a state-vector resync carries again."""
    return message[:1] == bytes([YMessageType.SYNC]) and message[1:2] != bytes(
        [YSyncMessageType.SYNC_STEP1])


def check(message: bytes) -> None:
    """Raise :class:`~kernel_collab.protocol.ProtocolError` for a message from the sidecar
    that the replica could not handle (it would fail in the middle of handling it)."""
    decoded = protocol.decode(message)
    try:
        if decoded.kind is protocol.Kind.SYNC_STEP1:
            Doc().get_update(decoded.payload)  # a state vector
        elif decoded.kind in (protocol.Kind.SYNC_STEP2, protocol.Kind.SYNC_UPDATE):
            get_state(decoded.payload)  # an update
    except ValueError as exc:
        raise protocol.ProtocolError(f"{decoded.kind.name.lower()}: {exc}") from None
    if decoded.kind is protocol.Kind.AWARENESS:
        protocol.parse_awareness_clients(decoded.payload)
    request = decoded.request or {}
    if request.get("type") == "input_request" and type(request.get("request_id")) not in (int, str):
        raise protocol.ProtocolError("input_request without a request_id")


class CommChannel:
    """Batches over one comm (made before the comm opens, so nothing sent at once is lost);
    ``publish(data, buffers)``, set once it opens, sends a comm message on iopub."""

    ordered = False
    """iopub can drop a batch under bursts: its requests are sent again, its edits come back
    through Y sync, so a request can arrive before an edit sent earlier."""
    min_interval = 0.01
    """Seconds between two batches under load (at most 100 comm messages a second)."""
    first_probe = 0.3
    """Seconds a batch may stay unacknowledged before the first probe (doubling to 5 s)."""
    max_probes = 8
    """Unanswered probes (about 25 s) before the sidecar is taken for gone."""

    def __init__(self, document: Callable[[bytes], bytes]):
        self.publish: Callable[[dict[str, Any], list[bytes]], None] | None = None
        self._document = document
        self._loop = asyncio.get_running_loop()
        self._inbox_send, self._inbox = anyio.create_memory_object_stream[
            tuple[Any, list[bytes]]](math.inf)
        self.seq = 0
        self.acked = 0
        self._kept: list[tuple[int, bytes]] = []
        self._last_sent = 0.0
        self._changed = anyio.Event()
        """Set (and renewed) at each batch sent and each acknowledgement."""
        self.closed: CommClosed | None = None

    # -- from ipykernel's shell channel thread ------------------------------------------------

    def deliver(self, data: Any, buffers: list[bytes]) -> None:
        """A comm message from the sidecar (thread-safe, in order, never blocks)."""
        self._loop.call_soon_threadsafe(self._put, (data, buffers))

    def close_from_sidecar(self) -> None:
        """The sidecar closed the comm (thread-safe)."""
        self._loop.call_soon_threadsafe(self._inbox_send.close)

    def _put(self, message: tuple[Any, list[bytes]]) -> None:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._inbox_send.send_nowait(message)  # else the comm is closed: dropped

    # -- Channel -----------------------------------------------------------------------------

    async def pace(self) -> None:
        """At once when idle; under load, ``min_interval`` after the previous batch."""
        wait = self._last_sent + self.min_interval - time.monotonic()
        if wait > 0:
            await anyio.sleep(wait)

    async def send_batch(self, messages: list[bytes]) -> None:
        """Send one numbered batch, keeping what a state-vector resync would not carry."""
        if self.closed is not None:
            raise self.closed
        self.seq += 1
        self._kept += [(self.seq, m) for m in messages if not _is_document(m)]
        self._send(encode_envelope(seq=self.seq), messages)

    async def receive(self) -> AsyncIterator[bytes]:
        """The sidecar's messages; acknowledgements, resend requests and closes are handled
        here. Raises :class:`CommClosed` once the sidecar closes the comm."""
        async for data, buffers in self._inbox:
            try:
                envelope = protocol.decode_envelope(data)
                if envelope.close is None and envelope.resend_from is None:
                    for buffer in buffers:
                        check(buffer)
            except protocol.ProtocolError as exc:
                self.closed = CommClosed(f"the sidecar sent a malformed comm message: {exc}")
                raise self.closed from None
            if envelope.ack is not None and envelope.ack > self.acked:
                self.acked = envelope.ack
                self._kept = [(seq, m) for seq, m in self._kept if seq > envelope.ack]
                self._changed_now()
            if envelope.close is not None:
                self.closed = CommClosed(
                    f"the sidecar closed the kernel's comm ({envelope.close}): {envelope.reason}")
                raise self.closed
            if envelope.resend_from is not None:
                self._resync(envelope.resend_from, buffers)
                continue
            for buffer in buffers:
                yield buffer
        self.closed = self.closed or CommClosed("the sidecar closed the kernel's comm")
        raise self.closed

    def _resync(self, since: int, buffers: list[bytes]) -> None:
        try:
            step1 = protocol.decode(buffers[0]) if buffers else None
            if step1 is None or step1.kind is not protocol.Kind.SYNC_STEP1:
                raise protocol.ProtocolError("a resend request without a state vector")
            update = self._document(step1.payload)
        except (protocol.ProtocolError, ValueError) as exc:
            self.closed = CommClosed(f"the sidecar sent a malformed comm message: {exc}")
            raise self.closed from None
        repair = [protocol.encode_sync_step2(update)]
        repair += [m for seq, m in self._kept if seq >= since]
        self.seq += 1
        self._send(encode_envelope(seq=self.seq, resync=since), repair)

    def _send(self, data: dict[str, Any], buffers: list[bytes]) -> None:
        assert self.publish is not None, "the comm is not open yet"
        self.publish(data, buffers)
        self._last_sent = time.monotonic()
        self._changed_now()

    async def keep_alive(self) -> None:
        """Probe while a batch stays unacknowledged (iopub may have lost the last one); after
        ``max_probes`` unanswered probes the sidecar is gone: the channel closes, saying so."""
        delay, probes = self.first_probe, 0
        while self.closed is None:
            if self.acked >= self.seq:
                delay, probes = self.first_probe, 0
                await self._changed.wait()
                continue
            acked = self.acked
            with anyio.move_on_after(delay):
                while self.acked == acked:
                    await self._changed.wait()
            if self.acked != acked or self.closed is not None:
                delay, probes = self.first_probe, 0
                continue
            if probes == self.max_probes:
                self.closed = CommClosed(f"the sidecar stopped answering the kernel's comm "
                                         f"(batch {self.seq} unacknowledged)")  # fmt: skip
                self._inbox_send.close()
                return
            self._send(encode_envelope(seq=self.seq, probe=True), [])
            delay, probes = min(delay * 2, 5.0), probes + 1

    def _changed_now(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
