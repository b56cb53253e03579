"""Kernel lifecycle requests from the provisioner (admin only), people's kernel actions and room
requests, and when the sidecar stops, saving first (docs/architecture.md, "Lifecycle").
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from .bridge import KernelBridge
from .disk import DiskSync
from .execution_queue import ExecutionQueue
from .peer import Peer
from .requests import RequestError, require
from .room import Room

MAX_ERROR = 1000
"""Characters kept of why a kernel did not start (in the room's state)."""


class KernelControl:
    """Serves the provisioner's lifecycle requests and decides when to stop."""

    def __init__(
        self,
        room: Room,
        bridge: KernelBridge,
        queue: ExecutionQueue,
        disk: DiskSync,
        stop: Callable[[], None],
    ):
        self.room = room
        self.disk = disk
        self.bridge = bridge
        self.queue = queue
        self._stop = stop
        self.shut_down = False
        self._stopping = False
        self._pending_actor: tuple[str, dict[str, Any], float] | None = None

    def _identity(self) -> dict[str, Any]:
        state = self.room.notebook.ystate
        return {
            "document_id": state.get("document_id"),
            "path": state.get("path"),
            "epoch": self.room.status.get("epoch"),
        }

    async def room_info(self, _peer: Peer, _request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, **self.describe()}

    def describe(self) -> dict[str, Any]:
        """The room as the server's room routes answer it."""
        status = self.room.status
        queue: Any = status.get("queue")  # a shared array
        return {
            **self._identity(),
            "kernel_id": self.bridge.kernel_id if self.bridge.client is not None else None,
            "kernel_status": status.get("kernel_status"),
            "queue": (queue.to_py() if hasattr(queue, "to_py") else queue) or [],
            "running": status.get("running"),
            "peers": [p.public_identity for p in self.room.peers if not p.admin],
        }

    async def rename(self, _peer: Peer, request: dict[str, Any]) -> dict[str, Any]:
        """The notebook was renamed or moved through Jupyter: follow it."""
        path, absolute = request.get("path"), request.get("absolute")
        if not isinstance(path, str) or not isinstance(absolute, str):
            raise RequestError("rename needs path (relative to the root) and absolute")
        old = self.room.notebook.ystate.get("path")
        if isinstance(old, str) and old != path:
            await self.room.store.rename(old, path)
        await self.disk.move(Path(absolute))
        self.room.notebook.ystate["path"] = path
        return {"ok": True, **self._identity()}

    async def deleted(self, _peer: Peer, _request: dict[str, Any]) -> dict[str, Any]:
        self.disk.pause_deleted()
        return {"ok": True}

    async def kernel_action(self, peer: Peer, request: dict[str, Any]) -> dict[str, Any]:
        """A person interrupts or restarts the kernel (the server does it, we record who)."""
        action = request.get("action")
        if action not in ("interrupt", "restart"):
            raise RequestError("kernel_action needs action 'interrupt' or 'restart'")
        require(peer, "execute", f"{action} the kernel")
        by = peer.public_identity
        self._pending_actor = (str(action), by, time.time())
        if action == "interrupt":
            self._record_event("interrupt", by)
            self.queue.clear(f"interrupted by {by.get('name') or by.get('username')}")
        return {"ok": True}

    async def trust(self, peer: Peer, _request: dict[str, Any]) -> dict[str, Any]:
        """"Trust Notebook" by a person who may run code: their outputs render trusted for
        everyone who may run code (as running every cell again would make them)."""
        require(peer, "execute", "trust outputs: only people who may run code can")
        count = self.room.trust.vouch_all()
        self.room.log.info("%s trusted the outputs of %d cells of %s", peer.name, count,
                           self.room.notebook.ystate.get("path"))  # fmt: skip
        return {"ok": True, "cells": count}

    def _actor(self, action: str) -> dict[str, Any]:
        """Who asked for ``action`` through our routes in the last minute, else unknown."""
        pending = self._pending_actor
        if pending is not None and pending[0] == action and time.time() - pending[2] < 60:
            self._pending_actor = None
            return pending[1]
        return {"name": "unknown"}

    def _record_event(self, event: str, by: Any, error: str = "") -> None:
        record = {"event": event, "by": by, "at": time.time(), "kernel_id": self.bridge.kernel_id}
        if error:
            record["error"] = error[:MAX_ERROR]
        self.room.set_status("last_kernel_event", record)

    async def attach(self, _peer: Peer, request: dict[str, Any]) -> dict[str, Any]:
        kernel_id, info = request.get("kernel_id"), request.get("connection_info")
        if not isinstance(kernel_id, str) or not isinstance(info, dict):
            raise RequestError("attach_kernel needs kernel_id and connection_info")
        try:
            self.bridge.attach(kernel_id, info)
        except (ValueError, KeyError, TypeError) as exc:
            raise RequestError(f"cannot connect to kernel {kernel_id}: {exc}") from exc
        self.shut_down = False
        self.queue.wake()
        return {"ok": True, **self._identity()}

    async def detach(self, _peer: Peer, request: dict[str, Any]) -> dict[str, Any]:
        reason = str(request.get("reason", "shutdown"))
        by = request.get("by") or self._actor(reason)
        self._record_event(reason, by, str(request.get("error") or ""))
        if reason == "failed":
            self.room.log.error("the kernel for %s did not start: %s",
                                self.room.notebook.ystate.get("path"), request.get("error"))
        if reason == "restart":
            who = by.get("name") or by.get("username") if isinstance(by, dict) else None
            self.room.mark("restart", f"kernel restarted by {who or 'unknown'}")
        self.bridge.detach(reason)
        self.queue.clear(f"kernel {reason}")
        status = {"restart": "restarting", "dead": "dead"}.get(reason, "none")
        self.bridge.set_kernel_status(status)
        if reason == "shutdown":
            self.shut_down = True
            self.maybe_stop()
        return {"ok": True}

    def maybe_stop(self, _peer: Peer | None = None) -> None:
        if self.shut_down and self.room.people == 0 and not self._stopping:
            self._stopping = True
            self.room.log.info("kernel shut down and nobody is in the notebook: stopping")
            self._stop()


async def watch_stdin(stop: Callable[[], None], log: logging.Logger) -> None:
    """Stop when stdin reaches end of file (the parent process is gone)."""
    fd = sys.stdin.fileno()
    while True:  # the event loop watches the pipe: no thread left blocked in read() at exit
        await anyio.wait_readable(fd)
        if not os.read(fd, 4096):
            break
    log.info("stdin closed (the Jupyter server that started this sidecar is gone): saving "
             "and stopping")  # fmt: skip
    stop()
