"""How late the sidecar's event loop runs: whatever blocks it (a save, a compaction, encoding a
whole document for a joining peer) delays every peer's edits and the kernel's outputs.

Sampled while peers are connected and the room is busy (otherwise checked once a second),
reported in the room's ``stats`` reply, and logged when one stall passes ``WARN_AFTER``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

import anyio

PERIOD: Final = 0.05
"""Seconds between two samples while the room is busy."""
WARN_AFTER: Final = 0.25
"""A stall of the loop this long (seconds) is logged."""


def quantile(ordered: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of sorted values (``None`` for none)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


class LoopLag:
    """The event loop's lateness: each sample is how much later than asked a sleep returned."""

    def __init__(self, log: logging.Logger, where: Callable[[], str]):
        self.log = log
        self.where = where
        self.samples: deque[float] = deque(maxlen=10_000)

    async def run(self, active: Callable[[], bool]) -> None:
        """Sample while ``active()`` (peers are connected and busy); until cancelled."""
        while True:
            if not active():
                await anyio.sleep(1.0)
                continue
            started = time.perf_counter()
            await anyio.sleep(PERIOD)
            lag = time.perf_counter() - started - PERIOD
            self.samples.append(lag)
            if lag > WARN_AFTER:
                self.log.warning("%s: the event loop was blocked for %.0f ms (every peer's "
                                 "edits waited)", self.where(), lag * 1e3)  # fmt: skip
