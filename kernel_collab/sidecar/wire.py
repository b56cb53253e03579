"""Pure parsing and encoding of the messages peers and the sidecar exchange.

The wire is y-websocket's: a message is ``varuint type`` then a payload. Type 0 is Y sync
(step 1, step 2, update), type 1 is awareness. kernel_collab adds type 100, a request
(peer → sidecar) or reply (sidecar → peer) carrying one UTF-8 JSON object. pycrdt encodes;
this module decodes strictly, because pycrdt's decoder tolerates truncated input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from pycrdt import YMessageType, YSyncMessageType, write_message, write_var_uint

REQUEST = 100
"""kernel_collab's request/reply message type (documented in the README)."""


class ProtocolError(ValueError):
    """A peer sent bytes that are not a valid message."""


class Kind(IntEnum):
    """What a decoded message is."""

    SYNC_STEP1 = 0
    SYNC_STEP2 = 1
    SYNC_UPDATE = 2
    AWARENESS = 3
    REQUEST = 4


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded message: its kind and its payload (a state vector, an update, an awareness
    update, or a request object)."""

    kind: Kind
    payload: bytes
    request: dict[str, Any] | None = None


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    """Read a lib0 variable-length unsigned integer; return it and the next position."""
    value = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ProtocolError("truncated integer")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ProtocolError("integer too long")


def read_var_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    """Read a length-prefixed byte string; return it and the next position."""
    length, pos = read_var_uint(data, pos)
    end = pos + length
    if end > len(data):
        raise ProtocolError(f"truncated payload: {length} bytes announced, {len(data) - pos} sent")
    return data[pos:end], end


_SYNC_KINDS = {
    YSyncMessageType.SYNC_STEP1: Kind.SYNC_STEP1,
    YSyncMessageType.SYNC_STEP2: Kind.SYNC_STEP2,
    YSyncMessageType.SYNC_UPDATE: Kind.SYNC_UPDATE,
}


def decode(data: bytes) -> Message:
    """Decode one WebSocket message, raising :class:`ProtocolError` on anything malformed."""
    if not isinstance(data, bytes):
        raise ProtocolError("text frames are not part of the protocol")
    mtype, pos = read_var_uint(data, 0)
    if mtype == YMessageType.SYNC:
        sub, pos = read_var_uint(data, pos)
        kind = _SYNC_KINDS.get(sub)  # type: ignore[call-overload]
        if kind is None:
            raise ProtocolError(f"unknown sync message type {sub}")
        payload, pos = read_var_bytes(data, pos)
    elif mtype == YMessageType.AWARENESS:
        kind = Kind.AWARENESS
        payload, pos = read_var_bytes(data, pos)
    elif mtype == REQUEST:
        payload, pos = read_var_bytes(data, pos)
        try:
            request = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"request is not UTF-8 JSON: {exc}") from exc
        if not isinstance(request, dict):
            raise ProtocolError("request must be a JSON object")
        if pos != len(data):
            raise ProtocolError("trailing bytes after message")
        return Message(Kind.REQUEST, payload, request)
    else:
        raise ProtocolError(f"unknown message type {mtype}")
    if pos != len(data):
        raise ProtocolError("trailing bytes after message")
    return Message(kind, payload)


def encode_sync_step2(update: bytes) -> bytes:
    """Encode a sync step 2 message (the reply to a peer's state vector)."""
    return bytes([YMessageType.SYNC, YSyncMessageType.SYNC_STEP2]) + write_message(update)


def encode_request(obj: dict[str, Any]) -> bytes:
    """Encode a kernel_collab request or reply."""
    payload = json.dumps(obj, separators=(",", ":")).encode()
    return write_var_uint(REQUEST) + write_var_uint(len(payload)) + payload


def encode_awareness(entries: list[tuple[int, int, str]]) -> bytes:
    """Encode ``(client_id, clock, state_json)`` entries as an awareness update."""
    out = bytearray(write_var_uint(len(entries)))
    for client_id, clock, state in entries:
        raw = state.encode()
        out += write_var_uint(client_id) + write_var_uint(clock) + write_var_uint(len(raw)) + raw
    return bytes(out)


def parse_awareness_clients(update: bytes) -> list[tuple[int, int, str]]:
    """Return ``(client_id, clock, state_json)`` for each entry of an awareness update."""
    count, pos = read_var_uint(update, 0)
    entries = []
    for _ in range(count):
        client_id, pos = read_var_uint(update, pos)
        clock, pos = read_var_uint(update, pos)
        raw, pos = read_var_bytes(update, pos)
        try:
            state = raw.decode("utf-8")
            if state:
                json.loads(state)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"awareness state is not JSON: {exc}") from exc
        entries.append((client_id, clock, state))
    if pos != len(update):
        raise ProtocolError("trailing bytes after awareness update")
    return entries
