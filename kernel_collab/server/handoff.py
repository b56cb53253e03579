"""Handing a browser's authenticated WebSocket connection to its notebook's sidecar, so the
server is not a second Python hop on every keystroke (docs/architecture.md, "The sync
route"): after jupyter_server's checks, the socket goes to the sidecar (SCM_RIGHTS) with the
handshake rebuilt for it, and the sidecar answers it. Not possible where this server
terminates TLS (the sidecar cannot continue its session): there the proxy relays."""

from __future__ import annotations

import logging
from typing import Any

import anyio
from tornado.iostream import IOStream
from tornado.web import RequestHandler
from websockets.datastructures import Headers
from websockets.http11 import Request

from ..protocol import encode_handoff, handoff_address
from ..provisioner.sidecars import SidecarHandle

log = logging.getLogger("kernel_collab")


def possible(handler: RequestHandler, handle: SidecarHandle) -> bool:
    """Whether this connection can be handed over: the sidecar takes handovers, and the
    browser's bytes reach this process unencrypted (a plain ``IOStream``, not TLS)."""
    stream = getattr(handler.request.connection, "stream", None)
    return bool(handle.handoff) and type(stream) is IOStream


def refusal(handler: Any) -> tuple[int, str] | None:
    """What tornado's ``WebSocketHandler.get`` refuses before it upgrades (status, reason)."""
    headers = handler.request.headers
    if headers.get("Upgrade", "").lower() != "websocket":
        return 400, 'Can "Upgrade" only to "WebSocket".'
    if "upgrade" not in (v.strip().lower() for v in headers.get("Connection", "").split(",")):
        return 400, '"Connection" must be "Upgrade".'
    origin = headers.get("Origin", headers.get("Sec-Websocket-Origin"))
    if origin is not None and not handler.check_origin(origin):
        return 403, "Cross origin websockets not allowed"
    if not headers.get("Sec-Websocket-Key"):
        return 400, "Missing/Invalid WebSocket headers"
    return None


def handshake(handler: RequestHandler, target: str, host: str,
              headers: dict[str, str]) -> bytes:  # fmt: skip
    """The browser's handshake as the sidecar must see it: its key and version, the
    identity and admin ``headers``; no cookie, token, ``Origin`` or extension offer."""
    theirs = handler.request.headers
    request = Request(target, Headers({
        "Host": host,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": theirs.get("Sec-Websocket-Key", ""),
        "Sec-WebSocket-Version": theirs.get("Sec-Websocket-Version", "13"),
        **headers,
    }))  # fmt: skip
    return request.serialize()


async def hand_over(handler: RequestHandler, handle: SidecarHandle, request: bytes) -> bool:
    """Pass the browser's socket and ``request`` to the sidecar; False (nothing done) when the
    sidecar takes no handovers now, so the caller can proxy instead."""
    try:
        link = await anyio.connect_unix(handoff_address(handle.handoff))
    except OSError as exc:
        log.warning("kernel_collab: the sidecar of %s takes no handovers (%s); proxying",
                    handle.notebook, exc)  # fmt: skip
        return False
    async with link:
        stream = handler.detach()
        try:
            await link.send_fds(encode_handoff(request), [stream.socket.fileno()])
        except (OSError, anyio.BrokenResourceError) as exc:
            # The browser sees its connection close, and reconnects.
            log.warning("kernel_collab: handing a connection to the sidecar of %s failed: %s",
                        handle.notebook, exc)  # fmt: skip
        finally:
            stream.close()  # this process's copy only: the sidecar holds its own
    return True
