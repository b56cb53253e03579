"""kernel_collab's requests (message type 100): a typed registry, filled in one place
(``service.py``), and its dispatch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .. import protocol
from .peer import Peer

RequestHandler = Callable[[Peer, dict[str, Any]], Awaitable[dict[str, Any]]]


class RequestError(Exception):
    """A request cannot be served; the message goes back to the peer that sent it."""


def require(peer: Peer, permission: str, refusal: str) -> None:
    """Refuse (``NAME may not REFUSAL``) unless the peer has ``permission``."""
    if not peer.may(permission):
        raise RequestError(f"{peer.identity.get('name', 'you')} may not {refusal}")


@dataclass(frozen=True, slots=True)
class _Route:
    handler: RequestHandler
    admin: bool


class Requests:
    """The requests a sidecar serves, by type."""

    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}

    def register(self, kind: str, handler: RequestHandler, *, admin: bool = False) -> None:
        """Serve requests of type ``kind`` with ``handler`` (only admin connections: ``admin``)."""
        if kind in self._routes:
            raise ValueError(f"request type {kind!r} is already served")
        self._routes[kind] = _Route(handler, admin)

    async def dispatch(self, peer: Peer, request: dict[str, Any]) -> None:
        """Serve one request and send the reply (``ok: false`` and why, when refused)."""
        kind = request.get("type")
        reply: dict[str, Any] = {"reply_to": request.get("id"), "type": kind}
        route = self._routes.get(kind) if isinstance(kind, str) else None
        if route is None:
            reply.update(ok=False, error=f"unknown request type {kind!r}")
        elif route.admin and not peer.admin:
            reply.update(ok=False, error=f"{kind!r} needs the sidecar's admin token")
        else:
            try:
                reply.update(await route.handler(peer, request))
            except RequestError as exc:
                reply.update(ok=False, error=str(exc))
        peer.send(protocol.encode_request(reply))
