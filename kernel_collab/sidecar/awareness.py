"""Awareness (who is here, their carets), held to the server's word about who each peer is:
``user`` is replaced (:func:`awareness_user`), a client id belongs to the connection that
claimed it, oversized states are refused, and a peer's entries leave with it."""

from __future__ import annotations

import json
from typing import Any

from pycrdt import Awareness, create_awareness_message
from traitlets import Int
from traitlets.config import LoggingConfigurable

from .. import protocol
from .peer import Peer
from .room import Room

_AVATAR_PREFIXES = ("https://", "http://", "/")


class AwarenessRelay(LoggingConfigurable):
    """Relays the peers' awareness of one room."""

    max_awareness_bytes = Int(
        16 * 1024,
        help="Largest awareness state (JSON bytes) a peer may share; a larger one is refused "
        "and its sender told.",
    ).tag(config=True)

    def __init__(self, room: Room, **kwargs: Any):
        super().__init__(**kwargs)
        self.room = room
        self.awareness = Awareness(room.doc)
        self._owner: dict[int, Peer] = {}
        room.joined.subscribe(self._on_join)
        room.left.subscribe(self._on_leave)

    def _on_join(self, peer: Peer) -> None:
        states = [cid for cid in self.awareness.states if cid != self.awareness.client_id]
        if states:
            peer.send(create_awareness_message(self.awareness.encode_awareness_update(states)))

    def _on_leave(self, peer: Peer) -> None:
        gone = [cid for cid in peer.awareness_ids if cid in self.awareness.states]
        if gone:
            self.awareness.remove_awareness_states(gone, origin=peer)
            message = create_awareness_message(self.awareness.encode_awareness_update(gone))
            for other in list(self.room.peers):
                other.send(message)
        self._forget(peer)

    def _forget(self, peer: Peer) -> None:
        """Drop what was kept of a departed peer's client ids (their owner, their clocks): a
        room open for days sees thousands of page loads, each with a new client id."""
        for client_id in [cid for cid, owner in self._owner.items() if owner is peer]:
            del self._owner[client_id]
            if client_id not in self.awareness.states:
                self.awareness.meta.pop(client_id, None)

    def receive(self, peer: Peer, update: bytes) -> None:
        """One awareness update from ``peer``; raise ``protocol.ProtocolError`` if malformed."""
        kept = []
        for client_id, clock, state in protocol.parse_awareness_clients(update):
            size = len(state.encode())
            if size > self.max_awareness_bytes:
                self._refuse(peer, client_id, size)
                continue
            owner = self._owner.get(client_id)
            if owner is not None and owner is not peer and owner in self.room.peers:
                self.log.warning(
                    "dropped awareness of client %d from %s: it belongs to %s",
                    client_id, peer.name, owner.name,
                )  # fmt: skip
                continue
            self._owner[client_id] = peer
            if state:
                peer.awareness_ids.add(client_id)
            kept.append((client_id, clock, _stamp(peer, state)))
        self._relay(peer, kept)

    def _relay(self, peer: Peer, entries: list[tuple[int, int, str]]) -> None:
        """Apply ``peer``'s entries and send them to every other peer."""
        if not entries:
            return
        update = protocol.encode_awareness(entries)
        self.awareness.apply_awareness_update(update, origin=peer)
        message = create_awareness_message(update)
        for other in list(self.room.peers):
            if other is not peer:
                other.send(message)

    def renew(self, peer: Peer) -> None:
        """Renew ``peer``'s awareness entries for everyone, as the peer itself would every 15 s
        (browsers drop an entry not renewed for 30 s): the kernel's replica does not renew its
        own, so that a notebook people only edit costs the kernel no outgoing messages."""
        meta, states = self.awareness.meta, self.awareness.states
        self._relay(peer, [
            (cid, meta[cid]["clock"] + 1, json.dumps(states[cid], separators=(",", ":")))
            for cid in peer.awareness_ids if cid in states and cid in meta])  # fmt: skip

    def _refuse(self, peer: Peer, client_id: int, size: int) -> None:
        """Tell a peer its awareness state is too big to share (logged once per peer)."""
        error = (f"awareness state of {size} bytes is over the {self.max_awareness_bytes}-byte "
                 "limit; not shared")  # fmt: skip
        if "awareness_size" not in peer.warned:
            peer.warned.add("awareness_size")
            self.log.warning("refused awareness of client %d from %s: %s (logged once per peer)",
                             client_id, peer.name, error)  # fmt: skip
        peer.send(protocol.encode_request({"type": "notice", "ok": False, "error": error}))


def _stamp(peer: Peer, state: str) -> str:
    """A peer's awareness state with ``user`` replaced (:func:`awareness_user`)."""
    if not state or state == "null":
        return state
    value = json.loads(state)
    if not isinstance(value, dict):
        return state
    value["user"] = awareness_user(peer, value.get("user"))
    return json.dumps(value, separators=(",", ":"))


def awareness_user(peer: Peer, claimed: Any) -> dict[str, Any]:
    """The ``user`` of a peer's awareness: its identity as the server authenticated it, and its
    role (the rules: docs/architecture.md, "Connections and identity")."""
    user = {k: v for k, v in peer.public_identity.items() if isinstance(v, str)}
    if not user.get("avatar_url", "").lower().startswith(_AVATAR_PREFIXES):
        user.pop("avatar_url", None)
    if peer.identity.get("anonymous"):
        # Every anonymous peer has the username "anonymous": not a key to tell them apart.
        user.pop("username", None)
        name = claimed.get("name") if isinstance(claimed, dict) else None
        if isinstance(name, str) and name.strip():
            user["name"] = user["display_name"] = name[:64]
    user["role"] = peer.role
    return user
