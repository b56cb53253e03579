"""``kernel_collab.notebook()``: the notebook this kernel runs in, for code in the kernel (a
replica on a background thread, synced over the kernel's comm: docs/architecture.md, "The
kernel's comm"). Every use from cell code is carried to the replica's thread.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import secrets
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
from anyio.from_thread import start_blocking_portal

from ..client.blocking import Blocking, LoopCaller
from ..client.connection import ClientNotebook, SyncTransport, synced
from ..notebook_core.cells import shared_notebook
from ..shared_notebook import Cell, RunHandle
from . import cell_of
from .channel import CommChannel
from .comms import Join, KernelComms

JOIN_TIMEOUT = 15.0
"""Seconds ``notebook()`` waits for the sidecar to open the kernel's comm."""

_lock = threading.Lock()
_notebook: KernelNotebook | None = None
_comms_lock = threading.Lock()
_comms: KernelComms | None = None


class KernelNotebook(Blocking):
    """The shared notebook as code in the kernel sees it."""

    stack: contextlib.ExitStack
    """Its event loop thread and its connection, closed together."""

    @property
    def closed(self) -> bool:
        """Whether the sidecar closed this replica's comm (``notebook()`` then joins again)."""
        transport: SyncTransport = self._target.transport
        return bool(self._portal.call(lambda: transport.closed))

    @property
    def current_cell(self) -> Any:
        """The cell now running (from the running request's cell id), or None."""
        cell_id = _calling_cell_id()
        return None if cell_id is None else Blocking(Cell(self._target, cell_id), self._portal)

    def run(self, cell: Any) -> Any:
        """Queue a cell on the shared queue; returns a handle (see :class:`KernelRunHandle`)."""
        target = cell._target if isinstance(cell, Blocking) else cell
        self._portal.call(setattr, self._target, "calling_cell_id", _calling_cell_id())
        handle = self._portal.run(lambda: self._target.run_async(target))
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
        return list(self._portal.run(handle.wait))


def _kernel() -> Any:
    """The kernel running this code (None outside one)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return getattr(get_ipython(), "kernel", None)


def _calling_cell_id() -> str | None:
    kernel = _kernel()
    return None if kernel is None else cell_of(kernel.get_parent("shell") or {})


def notebook() -> KernelNotebook:
    """The shared notebook this kernel belongs to (joined on first use, and again after the
    sidecar closed the kernel's comm)."""
    global _notebook
    with _lock:
        if _notebook is not None and _notebook.closed:
            _notebook.stack.close()  # its thread and its comm's registration go
            _notebook = None
        if _notebook is None:
            _notebook = _connect()
        return _notebook


def kernel_comms(kernel: Any) -> KernelComms:
    """This kernel's comms with its sidecar (prepared once per kernel)."""
    global _comms
    with _comms_lock:
        if _comms is None or _comms.kernel is not kernel:
            _comms = KernelComms(kernel)
        return _comms


def _connect() -> KernelNotebook:
    kernel = _kernel()
    if kernel is None:
        raise RuntimeError("kernel_collab.notebook() works in code run by a Jupyter kernel")
    comms = kernel_comms(kernel)
    if comms.unavailable:
        raise RuntimeError(f"kernel_collab.notebook() is unavailable here: {comms.unavailable}")
    parent = kernel.get_parent("shell") or {}
    stack = contextlib.ExitStack()
    portal = stack.enter_context(start_blocking_portal())
    try:
        target = stack.enter_context(
            portal.wrap_async_context_manager(_join(comms, parent, JOIN_TIMEOUT)))
    except BaseException:
        stack.close()
        raise
    atexit.register(stack.close)
    notebook = KernelNotebook(target, LoopCaller(portal))
    object.__setattr__(notebook, "stack", stack)
    return notebook


@contextlib.asynccontextmanager
async def _join(comms: KernelComms, parent: dict[str, Any],
                timeout: float) -> AsyncIterator[ClientNotebook]:  # fmt: skip
    """Ask the sidecar for the comm, then sync a replica over it."""
    loop = asyncio.get_running_loop()
    opened = anyio.Event()
    ynb = shared_notebook()
    channel = CommChannel(ynb.ydoc.get_update)
    wake = functools.partial(loop.call_soon_threadsafe, opened.set)
    join = Join(secrets.token_hex(8), channel, wake)
    comms.ask(join, parent)
    with anyio.move_on_after(timeout):
        await opened.wait()
    if not opened.is_set():
        comms.forget(join)
        raise RuntimeError(
            f"no sidecar answered within {timeout:.0f} s: kernel_collab.notebook() works in a "
            "collaborative kernel (kernelspec 'Python 3 (collaborative)' or the server-wide "
            "mode) whose notebook is open on the server"
        )
    if join.error:
        join.comm.close()
        raise RuntimeError(join.error)
    comm_id = join.comm.comm_id
    try:
        async with synced(channel, ynb, "kernel", renew_presence=False,
                          also=channel.keep_alive) as notebook:  # fmt: skip
            yield notebook
    finally:
        comms.channels.pop(comm_id, None)
        join.comm.close()  # the sidecar drops its peer (if it has not closed the comm itself)
        with contextlib.suppress(KeyError):
            comms.kernel.comm_manager.unregister_comm(join.comm)
