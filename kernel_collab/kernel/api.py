"""``kernel_collab.notebook()``: the notebook this kernel runs in, for code in the kernel.

The replica lives on a background thread with its own event loop, connected to the sidecar
on loopback (not over comms: a thread's WebSocket never makes the kernel look busy or idle,
never spends IOPub's rate limit, keeps the idle culler honest, and receives others' edits
while a cell runs a blocking loop). Every use from cell code is carried to that thread, so
the pycrdt document is only ever touched by one thread.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from anyio.from_thread import start_blocking_portal

from ..client.blocking import Blocking
from ..client.connection import join
from ..protocol import POINTER_ENV
from ..shared_notebook import Cell, RunHandle

_lock = threading.Lock()
_notebook: KernelNotebook | None = None


class KernelNotebook(Blocking):
    """The shared notebook as code in the kernel sees it."""

    @property
    def current_cell(self) -> Any:
        """The cell now running (from the running request's cell id), or None."""
        cell_id = _calling_cell_id()
        return None if cell_id is None else Blocking(Cell(self._target, cell_id), self._portal)

    def run(self, cell: Any) -> Any:
        """Queue a cell on the shared queue; returns a handle (see :class:`KernelRunHandle`)."""
        target = cell._target if isinstance(cell, Blocking) else cell
        self._portal.call(setattr, self._target, "calling_cell_id", _calling_cell_id())
        handle = self._portal.call(self._target.run_async, target)
        return KernelRunHandle(handle, self._portal)


class KernelRunHandle(Blocking):
    """A run asked from the kernel."""

    def wait(self) -> list[dict[str, Any]]:
        """Wait for the run's outputs — not from a running cell, which would deadlock."""
        if threading.current_thread() is threading.main_thread():
            raise RuntimeError(
                "waiting for a run from inside a running cell would deadlock the kernel: it "
                "runs one cell at a time, so the queued cell starts only after this one ends. "
                "Let this cell finish, or wait from another thread."
            )
        handle: RunHandle = self._target
        return list(self._portal.call(handle.wait))


def _calling_cell_id() -> str | None:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return None
    parent = kernel.get_parent("shell") or {}
    cell_id = (parent.get("metadata") or {}).get("cellId")
    return cell_id if isinstance(cell_id, str) else None


def notebook() -> KernelNotebook:
    """The shared notebook this kernel belongs to (connected on first use)."""
    global _notebook
    with _lock:
        if _notebook is None:
            _notebook = _connect()
        return _notebook


def _connect() -> KernelNotebook:
    pointer = os.environ.get(POINTER_ENV)
    if not pointer:
        raise RuntimeError(
            "kernel_collab.notebook() works in a collaborative kernel (kernelspec "
            "'Python 3 (collaborative)' or the server-wide mode); this kernel is not one"
        )
    try:
        where = json.loads(Path(pointer).read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot find this kernel's sidecar ({pointer}): {exc}") from exc
    stack = contextlib.ExitStack()
    portal = stack.enter_context(start_blocking_portal())
    url = f"{where['url']}?name=kernel"
    target = stack.enter_context(
        portal.wrap_async_context_manager(
            join(url, {"Authorization": f"token {where['token']}"}, "kernel")
        )
    )
    atexit.register(stack.close)
    return KernelNotebook(target, portal)
