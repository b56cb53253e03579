"""Kernel lifecycle requests from the provisioner, and when the sidecar should stop.

Admin requests (only on connections made with the admin token):
``attach_kernel {kernel_id, connection_info}`` after every (re)launch,
``detach_kernel {reason: "restart" | "shutdown" | "dead", by?}`` before a restart, at shutdown,
or when the kernel died. After a shutdown the room stays open with no kernel until the last
person leaves; then the sidecar saves and exits. With ``--watch-stdin`` the sidecar also
saves and exits when its stdin closes (the Jupyter server that started it has died).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio

from .bridge import KernelBridge
from .execution_queue import ExecutionQueue
from .peer import Peer
from .room import RequestError, Room


class KernelControl:
    """Serves the provisioner's lifecycle requests and decides when to stop."""

    def __init__(
        self, room: Room, bridge: KernelBridge, queue: ExecutionQueue, stop: Callable[[], None]
    ):
        self.room = room
        self.bridge = bridge
        self.queue = queue
        self._stop = stop
        self.shut_down = False
        room.admin_handlers["attach_kernel"] = self._attach
        room.admin_handlers["detach_kernel"] = self._detach
        room.peer_listeners.append(self._maybe_stop)

    async def _attach(self, _peer: Peer, request: dict[str, Any]) -> dict[str, Any]:
        kernel_id, info = request.get("kernel_id"), request.get("connection_info")
        if not isinstance(kernel_id, str) or not isinstance(info, dict):
            raise RequestError("attach_kernel needs kernel_id and connection_info")
        try:
            self.bridge.attach(kernel_id, info)
        except (ValueError, KeyError, TypeError) as exc:
            raise RequestError(f"cannot connect to kernel {kernel_id}: {exc}") from exc
        self.shut_down = False
        self.queue.wake()
        return {"ok": True}

    async def _detach(self, _peer: Peer, request: dict[str, Any]) -> dict[str, Any]:
        reason = str(request.get("reason", "shutdown"))
        by = request.get("by") or {"name": "unknown"}
        event = {"event": reason, "by": by, "at": time.time(), "kernel_id": self.bridge.kernel_id}
        self.room.set_status("last_kernel_event", event)
        self.bridge.detach(reason)
        self.queue.clear(f"kernel {reason}")
        status = {"restart": "restarting", "dead": "dead"}.get(reason, "none")
        self.bridge.set_kernel_status(status)
        if reason == "shutdown":
            self.shut_down = True
            self._maybe_stop()
        return {"ok": True}

    def _maybe_stop(self) -> None:
        if self.shut_down and self.room.people == 0:
            self.room.log.info("kernel shut down and nobody is in the notebook: stopping")
            self._stop()


async def watch_stdin(stop: Callable[[], None]) -> None:
    """Stop when stdin reaches end of file (the parent process is gone)."""
    fd = sys.stdin.fileno()
    while await anyio.to_thread.run_sync(os.read, fd, 4096, abandon_on_cancel=True):
        pass
    stop()
