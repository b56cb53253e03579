"""Where a peer's messages go, whatever carries them (a WebSocket, the kernel's comm)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import protocol
from .awareness import AwarenessRelay
from .peer import Peer
from .requests import Requests
from .room import Room


@dataclass(frozen=True, slots=True)
class Inbound:
    """Sync to the room, awareness to the relay, requests to the services serving them."""

    room: Room
    awareness: AwarenessRelay
    requests: Requests

    async def route(self, peer: Peer, message: protocol.Message) -> None:
        """Handle one decoded message from ``peer`` (raises ``protocol.ProtocolError``)."""
        if message.kind is protocol.Kind.AWARENESS:
            self.awareness.receive(peer, message.payload)
        elif message.kind is protocol.Kind.REQUEST:
            assert message.request is not None
            await self.requests.dispatch(peer, message.request)
        else:
            await self.room.receive_sync(peer, message)
