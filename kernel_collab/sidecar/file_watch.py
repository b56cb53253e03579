"""Watching the notebook's file with watchfiles, woken only by a change (docs/architecture.md,
"The file on disk")."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import watchfiles
from anyio.abc import TaskStatus

STEP_MS = 50
"""How often watchfiles' thread looks for events and for the stop request (its default)."""
DEBOUNCE_MS = 100
"""Changes closer together than this arrive as one."""
RUST_TIMEOUT_MS = 3_600_000
"""watchfiles' thread returns to Python only on a change or a stop: an idle sidecar is not
woken (a 100 ms timeout, which cancellation needed before, cost 0.5 % of a core per
notebook)."""


class _Control:
    """The stop event that watchfiles' thread polls every ``STEP_MS``: set it to stop the
    watch; its first poll tells that the watcher is armed (it polls only once its inotify
    watch is in place)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.armed = threading.Event()

    def is_set(self) -> bool:
        self.armed.set()
        return self.stop.is_set()

    def set(self) -> None:
        self.stop.set()


async def _stop_when_cancelled(control: _Control) -> None:
    try:
        await anyio.sleep_forever()
    finally:
        control.set()  # the thread stops within STEP_MS, so cancelling never waits long


async def _consume(path: Path, control: _Control, on_change: Callable[[], Awaitable[None]]) -> None:
    target = str(path)
    try:
        async for _changes in watchfiles.awatch(
            path.parent,
            watch_filter=lambda _change, changed: changed == target,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=control,
            rust_timeout=RUST_TIMEOUT_MS,
        ):
            await on_change()
    finally:
        control.armed.set()  # never armed (the folder vanished): whoever waits goes on


async def watch_file(
    path: Path, on_change: Callable[[], Awaitable[None]], *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Await ``on_change()`` after each change to ``path`` until cancelled. Started at once:
    the watcher arms within ``STEP_MS``, then ``on_change()`` runs once more, for a change made
    before it was armed (waiting for it instead would delay every sidecar's start)."""
    control = _Control()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_stop_when_cancelled, control)
        tg.start_soon(_consume, path, control, on_change)
        task_status.started()
        await anyio.to_thread.run_sync(control.armed.wait)
        await on_change()
