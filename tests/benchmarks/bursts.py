"""Burst capacity: single-character edits sent back to back by one writer or several at once,
timed until every peer (the writers included: the echo is their acknowledgement) has every
edit. Run against the bare relay too (``systems.floor``), the same peers show what they can
take themselves: all peers live in the benchmark's one process, so past some rate they, not
the server, are the bottleneck."""

from __future__ import annotations

import time

import anyio

from .peers import Peer

WARM_UP = 20
"""Edits each writer sends (and every peer receives) before the timing starts."""


async def burst_rate(writers: list[Peer], everyone: list[Peer], edits: int,
                     wait: float) -> tuple[float, float]:  # fmt: skip
    """``edits`` (in all, shared out) sent back to back by ``writers`` at once, into cell 0:
    (edits/s until every peer of ``everyone`` has every edit, edits/s the writers sent)."""
    last: dict[int, int] = {}

    async def write(writer: Peer, count: int, text: str) -> None:
        for _ in range(count):
            message, last[writer.client_id] = writer.edit(0, text)
            await writer.ws.send(message)

    async def everyone_has_all() -> float:
        return max([await peer.wait_clock(client, clock, wait)
                    for peer in everyone for client, clock in last.items()])  # fmt: skip

    async with anyio.create_task_group() as tg:
        for writer in writers:
            tg.start_soon(write, writer, WARM_UP, "w")
    await everyone_has_all()
    share, extra = divmod(edits, len(writers))
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i, writer in enumerate(writers):
            tg.start_soon(write, writer, share + (i < extra), "x")
    t_sent = time.perf_counter()
    t_all = await everyone_has_all()
    return edits / (t_all - t0), edits / (t_sent - t0)


PACE_TICK = 0.002
"""Seconds between the paced writer's wake-ups (it sends what is due at each)."""


async def paced_keepup(writer: Peer, everyone: list[Peer], edits: int, rate: float,
                       wait: float) -> tuple[float, float]:  # fmt: skip
    """``edits`` sent by ``writer`` into cell 0 at ``rate`` edits/s (what is due every
    ``PACE_TICK`` s): (time the writer took to send them / time until every peer of
    ``everyone`` had them, edits/s sent). 1.0: the server kept up with the writer."""
    clock = 0
    for _ in range(WARM_UP):
        message, clock = writer.edit(0, "w")
        await writer.ws.send(message)
    for peer in everyone:
        await peer.wait_clock(writer.client_id, clock, wait)
    t0 = time.perf_counter()
    sent = 0
    while sent < edits:
        due = min(edits, int((time.perf_counter() - t0) * rate) + 1)
        while sent < due:
            message, clock = writer.edit(0, "x")
            await writer.ws.send(message)
            sent += 1
        if sent < edits:
            await anyio.sleep(max(0.0, min(PACE_TICK, t0 + sent / rate - time.perf_counter())))
    t_sent = time.perf_counter()
    t_all = max([await peer.wait_clock(writer.client_id, clock, wait) for peer in everyone])
    return (t_sent - t0) / (t_all - t0), edits / (t_sent - t0)
