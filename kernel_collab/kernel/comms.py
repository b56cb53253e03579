"""The kernel's comms with its sidecar: asking for one, and taking the sidecar's messages off
ipykernel's shell channel thread, never dispatched; replies go out on iopub with the comm's open
message as parent (why: docs/architecture.md, "The kernel's comm")."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import hostpatches
from ..protocol import COMM_TARGET, COMM_VERSION, JOIN_MESSAGE, SYNC_MARK
from .channel import CommChannel

log = logging.getLogger("kernel_collab")


@dataclass
class Join:
    """A join waiting for the sidecar's comm."""

    nonce: str
    channel: CommChannel
    """Takes the comm's messages from the moment it opens."""
    opened: Callable[[], object]
    """Called (from the shell channel thread) once the comm is open or refused."""
    comm: Any = None
    error: str | None = None


class KernelComms:
    """This kernel's end: joins in flight and the open channels, by comm id."""

    def __init__(self, kernel: Any):
        self.kernel = kernel
        self.session = kernel.session
        self._lock = threading.Lock()
        self._joins: dict[str, Join] = {}
        self.channels: dict[str, CommChannel] = {}
        kernel.comm_manager.register_target(COMM_TARGET, self._opened)
        self.unavailable = hostpatches.take_sync_messages(kernel, self.take)
        """Why the in-kernel API cannot work in this kernel (None: it can)."""

    def ask(self, join: Join, parent: dict[str, Any]) -> None:
        """Ask the sidecar for a comm (on iopub, as a reply to ``parent``)."""
        with self._lock:
            self._joins[join.nonce] = join
        self.session.send(self.kernel.iopub_socket, JOIN_MESSAGE,
                          {"v": COMM_VERSION, "nonce": join.nonce}, parent=parent,
                          ident=b"kernel_collab")  # fmt: skip

    def forget(self, join: Join) -> None:
        """Stop waiting for a join (timed out)."""
        with self._lock:
            self._joins.pop(join.nonce, None)

    # -- ipykernel's shell channel thread ----------------------------------------------------

    def take(self, frames: list[Any]) -> bool:
        """Take the sidecar's comm messages (``SYNC_MARK``); leave every other message."""
        try:
            idents, parts = self.session.feed_identities(frames, copy=False)
            msg = self.session.deserialize(parts, content=False, copy=False)
        except (ValueError, KeyError, TypeError):
            return False  # ipykernel's own handling logs it
        metadata = msg.get("metadata")
        if not isinstance(metadata, dict) or not metadata.get(SYNC_MARK):
            return False
        msg_type = msg["header"]["msg_type"]
        if msg_type not in ("comm_open", "comm_msg", "comm_close"):
            return False
        try:  # nothing may escape into ipykernel's shell channel thread
            self._take(msg_type, idents, msg)
        except Exception:
            log.exception("kernel_collab: a %s marked as the sidecar's failed", msg_type)
        return True

    def _take(self, msg_type: str, idents: list[Any], msg: dict[str, Any]) -> None:
        try:
            content = self.session.unpack(msg["content"])
        except ValueError as exc:
            log.error("kernel_collab: undecodable comm message from the sidecar: %s", exc)
            return
        if not isinstance(content, dict):
            return
        msg["content"] = content
        msg["buffers"] = [bytes(b.bytes if hasattr(b, "bytes") else b) for b in msg["buffers"]]
        comm_id = content.get("comm_id")
        if msg_type == "comm_open":
            if content.get("target_name") != COMM_TARGET:
                return
            if (not isinstance(comm_id, str) or not comm_id or not isinstance(
                    content.get("data"), dict) or comm_id in self.kernel.comm_manager.comms):
                # Opening it would replace (then close) a comm of that id (a widget's, say).
                log.error("kernel_collab: ignored a malformed comm_open from the sidecar: "
                          "%.200r", content)  # fmt: skip
                return
            self.kernel.comm_manager.comm_open(None, idents, msg)
            return
        channel = self.channels.get(str(comm_id))
        if channel is None:
            return  # a comm of a replica that is gone
        if msg_type == "comm_msg":
            channel.deliver(content.get("data"), msg["buffers"])
        else:
            channel.close_from_sidecar()

    def _opened(self, comm: Any, msg: dict[str, Any]) -> None:
        """The comm manager's target: the sidecar opened a comm for one of our joins."""
        data = (msg.get("content") or {}).get("data") or {}
        with self._lock:
            join = self._joins.pop(str(data.get("nonce")), None)
        if join is None:
            comm.close()
            return
        join.comm = comm
        error = data.get("error")
        join.error = str(error) if error else None
        if join.error is None:

            def publish(data: dict[str, Any], buffers: list[bytes]) -> None:
                """A comm message on iopub, as a reply to the comm's open message."""
                self.session.send(self.kernel.iopub_socket, "comm_msg",
                                  {"comm_id": comm.comm_id, "data": data}, parent=msg,
                                  ident=comm.topic, buffers=buffers)  # fmt: skip

            join.channel.publish = publish
            self.channels[comm.comm_id] = join.channel
        join.opened()
