"""One connected peer: its identity, its awareness client ids, and an ordered, bounded send queue
(one that fills closes the peer: nothing is dropped silently)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import anyio

from ..protocol import CLOSE_TRY_AGAIN


class Transport(Protocol):
    """What the room needs of a connection (a ``websockets`` connection fits)."""

    async def send(self, message: bytes) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


MAX_CLOSE_REASON = 123
"""Bytes of UTF-8 a WebSocket close reason may have (RFC 6455); a longer one made the close
itself fail (1011) instead of saying why."""


def fit_close_reason(reason: str) -> str:
    """``reason`` cut to fit a close frame, at a whole character."""
    return reason.encode()[:MAX_CLOSE_REASON].decode(errors="ignore")


class Peer:
    """A peer of a room, wrapping its transport."""

    def __init__(
        self,
        transport: Transport,
        *,
        name: str,
        queue_size: int,
        identity: dict[str, Any] | None = None,
        admin: bool = False,
        log: logging.Logger,
        write_now: Callable[[bytes], bool] | None = None,
    ):
        self.transport = transport
        self._write_now = write_now
        """Writes a message at once if the transport can take it without waiting (True), so
        an idle peer's message skips the queue and its sender task."""
        self._unsent = 0
        """Messages given to the queue and not yet written (one handed straight to a waiting
        sender counts: the queue's own statistics do not show it)."""
        self.name = name
        self.identity = identity or {}
        self.admin = admin
        """Connected with the admin token (the provisioner or the server extension)."""
        self.awareness_ids: set[int] = set()
        self.warned: set[str] = set()
        """Kinds of warning already logged about this peer (each is logged once)."""
        scripted = admin or self.identity.get("anonymous") or self.client_name
        self.kind = "script" if scripted else "person"
        """What the peer is in the notebook's history: ``person``, ``script`` or ``kernel``."""
        self.closed = False
        self.close_reason = ""
        self._log = log
        self._send, self._recv = anyio.create_memory_object_stream[bytes](queue_size)
        self._close_code = 1000

    def may(self, permission: str) -> bool:
        """Whether this peer's identity grants ``write`` or ``execute``."""
        permissions = self.identity.get("permissions") or {}
        return bool(permissions.get(permission, False))

    @property
    def role(self) -> str:
        """``"run"``, ``"edit"`` or ``"read"``: what this peer may do, as others see it."""
        return "run" if self.may("execute") else "edit" if self.may("write") else "read"

    @property
    def public_identity(self) -> dict[str, Any]:
        """What others may see of this peer (no permissions, nothing secret)."""
        keys = ("username", "name", "display_name", "initials", "color", "avatar_url")
        return {k: self.identity[k] for k in keys if k in self.identity}

    @property
    def client_name(self) -> str | None:
        """The name a script gave itself, when it connects through the server as a person
        (the server vouches for the person, not for the name)."""
        name = self.identity.get("client_name")
        return name[:64] if isinstance(name, str) and name.strip() else None

    @property
    def author(self) -> dict[str, Any]:
        """Who this peer is in the notebook's history: from its connection (the server's
        word), never from its awareness or its Y client ids, which peers choose."""
        ident = self.public_identity
        name = self.client_name or ident.get("display_name") or ident.get("name") or ident.get(
            "username")  # fmt: skip
        author = {"kind": self.kind, "name": str(name or self.name)}
        if isinstance(ident.get("username"), str) and not self.identity.get("anonymous"):
            author["username"] = ident["username"]
        return author

    def send(self, message: bytes) -> None:
        """Queue a message; disconnect the peer if it has fallen too far behind."""
        if self.closed:
            return
        if self._write_now is not None and not self._unsent and self._write_now(message):
            return  # nothing queued or being sent before it: order is kept
        try:
            self._send.send_nowait(message)
            self._unsent += 1
        except anyio.WouldBlock:
            self.close(CLOSE_TRY_AGAIN, "peer fell behind: send queue full, reconnect to resync")

    def close(self, code: int, reason: str) -> None:
        """Stop sending and close the connection once queued messages are out."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._close_code = code
        if code != 1000:
            self._log.warning("closing peer %s: %s (code %d)", self.name, reason, code)
        self._send.close()

    async def run_sender(self) -> None:
        """Write queued messages in order until the peer is closed, then close the transport.
        A transport that breaks ends it too, and the peer is closed from then on: a commit
        relayed to it before the room hears it left is dropped, not raised into the room."""
        try:
            async with self._recv:
                async for message in self._recv:
                    if self.closed and self._close_code != 1000:
                        break  # an error close does not wait for the backlog
                    try:
                        await self.transport.send(message)
                    finally:
                        self._unsent -= 1
                    del message  # a joining peer's sync reply is the whole document: not kept
        finally:
            self.closed = True  # its queue's reader is gone: sending to it would raise
            self._send.close()
        await self.transport.close(self._close_code, fit_close_reason(self.close_reason))
