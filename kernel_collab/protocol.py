"""Everything two processes of kernel_collab must agree on (the wire, close codes, headers,
environment, ready line, runtime records, kernel_collab's fields in the document), in one place:
every side imports it, no side imports another's internals. No sockets, no files but
:func:`write_private_json`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Final

from pycrdt import YMessageType, YSyncMessageType, write_message, write_var_uint

# --- the wire ---------------------------------------------------------------------------------
# docs/architecture.md, "Messages". Decoded strictly: pycrdt's decoder tolerates truncated
# input.

REQUEST: Final = 100
"""kernel_collab's request/reply message type."""

# --- close codes (WebSocket) --------------------------------------------------------------------
CLOSE_GOING_AWAY: Final = 1001
"""The sidecar is stopping."""
CLOSE_PROTOCOL_ERROR: Final = 1002
"""Malformed message, or an update that broke the notebook's schema (repaired): reload."""
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL_ERROR: Final = 1011
"""The sidecar failed handling the peer's message (its log says how): reconnect."""
CLOSE_TRY_AGAIN: Final = 1013
"""Reconnect: the peer fell behind, or the sidecar is restarting."""
CLOSE_REFUSED: Final = 4403
"""The peer may not edit, or wrote a field only the sidecar writes (the reason says which):
its update was undone; drop local changes and reload."""
CLOSE_NOT_FOUND: Final = 4404
"""No room for that document (server extension)."""
CLOSE_STALE_EPOCH: Final = 4409
"""The peer's copy is of an older epoch of the document: drop it and reload."""

# --- headers, environment, ready line, runtime records -----------------------------------------
IDENTITY_HEADER: Final = "X-Kernel-Collab-Identity"
"""JSON identity of the person a server-proxied connection speaks for (with the admin token)."""
TOKEN_ENV: Final = "KERNEL_COLLAB_TOKEN"
"""The sidecar's peer token (in its environment: argv is readable by every user)."""
ADMIN_TOKEN_ENV: Final = "KERNEL_COLLAB_ADMIN_TOKEN"
"""The sidecar's admin token (kernel lifecycle requests, proxied people)."""
REQUESTS_ONLY_QUERY: Final = "requests=only"
"""Query of an admin connection that only makes requests (the server's lifecycle and room
requests): it does not join the room (no sync, no relayed updates, no presence)."""
NOTEBOOK_ENV: Final = "KERNEL_COLLAB_NOTEBOOK"
"""The notebook's absolute path, set by the server extension for the provisioner."""
READY_PREFIX: Final = "kernel_collab sidecar ready at "
"""The sidecar prints this line, then its URL, once it accepts peers."""
ERROR_PREFIX: Final = "kernel_collab sidecar error: "
"""... or this line, then one line saying why it could not start."""
CELL_MESSAGE: Final = "kernel_collab_cell"
"""iopub message the kernel extension sends when a run of another client names its cell."""

# --- the kernel's comm (the in-kernel API's replica, on the kernel's own channels) -------------
# A comm message's ``buffers`` are wire messages, its ``data`` an :class:`Envelope` (the
# exchange: docs/architecture.md, "The kernel's comm").
COMM_TARGET: Final = "kernel_collab"
JOIN_MESSAGE: Final = "kernel_collab_join"
"""iopub message (``{"v", "nonce"}``) by which the kernel asks its sidecar for the comm."""
COMM_VERSION: Final = 1
"""Version of the comm envelope; a sidecar refuses a join of another version, saying so."""
SYNC_MARK: Final = "kernel_collab_sync"
KERNEL_FEATURE: Final = "kernel_collab"
"""In ``supported_features`` of the kernel_info reply of a kernel with our extension: the room
then says ``kernel_api: true`` (``kernel_collab.notebook()`` works there)."""

# --- kernel_collab's fields in the document ----------------------------------------------------
STATE_KEY: Final = "kernel_collab"
"""kernel_collab's map inside the document's ``state`` map (the sidecar's alone)."""
METADATA_KEY: Final = "kernel_collab"
"""kernel_collab's key in a cell's metadata (run records: the sidecar's alone)."""
TRUST_KEY: Final = "trusted"
"""The trust record inside ``state.kernel_collab``: cell id → digest of vouched outputs."""


def ready_line(url: str, document_id: str, room: dict[str, Any] | None = None) -> str:
    """The line the sidecar prints once it serves ``url``: the document's id after it, and
    the room as it is then (what the room request answers; asking cost a round trip to a
    sidecar busy with its first moments, on every first open)."""
    described = f" room={json.dumps(room, separators=(',', ':'))}" if room is not None else ""
    return f"{READY_PREFIX}{url} document={document_id}{described}\n"


@dataclass(frozen=True)
class Ready:
    """What a ready line says."""

    url: str
    document_id: str | None
    room: dict[str, Any] | None
    """The room as the sidecar started (``None``: not said)."""


def parse_ready_line(line: str) -> Ready | None:
    """What a ready line says; ``None`` for any other line."""
    if not line.startswith(READY_PREFIX):
        return None
    url, _, rest = line[len(READY_PREFIX):].strip().partition(" ")
    document, _, described = rest.partition(" room=")  # JSON, to the end of the line
    document_id = document[len("document="):] if document.startswith("document=") else None
    room = None
    if described:
        try:
            room = json.loads(described)
        except ValueError:
            room = None
    return Ready(url, document_id or None, room if isinstance(room, dict) else None)


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write a runtime record atomically, readable by its user only (0600): records hold tokens
    (docs/architecture.md, "Environment, ready line, runtime records")."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


# --- the sidecars' fork server (docs/architecture.md, "The fork server") -----------------------
FORK_FDS: Final = 4
"""Descriptors sent with each fork request (SCM_RIGHTS), in order: the child's stdin, stdout
and stderr, and the pipe the fork server writes its exit code to when it has reaped it."""
FORK_FRAME_LIMIT: Final = 1 << 20
"""Largest fork request or reply (a length-prefixed JSON object)."""


def encode_frame(obj: dict[str, Any]) -> bytes:
    """A fork server request or reply: 4-byte big-endian length, then JSON."""
    body = json.dumps(obj).encode()
    return len(body).to_bytes(4, "big") + body


def frame_length(head: bytes) -> int:
    """The body length announced by a frame's first 4 bytes (``ValueError`` past the limit)."""
    length = int.from_bytes(head[:4], "big")
    if length > FORK_FRAME_LIMIT:
        raise ValueError(f"a fork server frame of {length} bytes (limit {FORK_FRAME_LIMIT})")
    return length


def decode_frame(data: bytes) -> dict[str, Any] | None:
    """The object of the frame ``data`` holds (and nothing after it); ``None`` while ``data``
    falls short of it, for the reader to receive more (``ValueError`` past the limit or for a
    body that is not a JSON object)."""
    if len(data) < 4 or len(data) < 4 + frame_length(data):
        return None
    obj = json.loads(data[4:])
    if not isinstance(obj, dict):
        raise ValueError("a fork server frame that is not a JSON object")
    return obj


# --- browser connections handed to a sidecar (docs/architecture.md, "The sync route") --------
HANDOFF_LIMIT: Final = 64 * 1024
"""Largest handed-over handshake (the browser's request, rebuilt by the server)."""


def handoff_address(name: str) -> str:
    """The Linux abstract Unix socket a sidecar takes browser connections on (``name`` is its
    ``--handoff-socket``): no file to clean up, and no path length to outgrow."""
    return "\0" + name


def encode_handoff(request: bytes) -> bytes:
    """The message sent with a browser's socket (SCM_RIGHTS): 4-byte big-endian length, then
    the WebSocket handshake the sidecar answers on that socket."""
    if len(request) > HANDOFF_LIMIT:
        raise ValueError(f"a handshake of {len(request)} bytes (limit {HANDOFF_LIMIT})")
    return len(request).to_bytes(4, "big") + request


def handoff_length(head: bytes) -> int:
    """The handshake length announced by a handover's first 4 bytes (``ValueError`` past the
    limit)."""
    length = int.from_bytes(head[:4], "big")
    if length > HANDOFF_LIMIT:
        raise ValueError(f"a handshake of {length} bytes (limit {HANDOFF_LIMIT})")
    return length


class ProtocolError(ValueError):
    """A peer sent bytes that are not a valid message."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """The ``data`` of a comm message on the kernel's comm (see COMM_TARGET)."""

    seq: int = 0
    ack: int | None = None
    probe: bool = False
    resync: int | None = None
    resend_from: int | None = None
    close: int | None = None
    reason: str = ""


def decode_envelope(data: Any) -> Envelope:
    """Check a comm message's ``data``, raising :class:`ProtocolError` on anything malformed."""
    if not isinstance(data, dict):
        raise ProtocolError("comm data must be a JSON object")
    if data.get("v") != COMM_VERSION:
        raise ProtocolError(f"comm protocol version {data.get('v')!r}, expected {COMM_VERSION}")
    ints = {}
    for key in ("seq", "ack", "resync", "resend_from", "close"):
        value = data.get(key)
        if value is not None and (type(value) is not int or value < 0):
            raise ProtocolError(f"comm field {key!r} must be a non-negative integer")
        ints[key] = value
    return Envelope(seq=ints["seq"] or 0, ack=ints["ack"], probe=data.get("probe") is True,
                    resync=ints["resync"], resend_from=ints["resend_from"], close=ints["close"],
                    reason=str(data.get("reason", ""))[:500])  # fmt: skip


def encode_envelope(**fields: Any) -> dict[str, Any]:
    """A comm message's ``data``: the version, then ``fields`` that are set."""
    return {"v": COMM_VERSION, **{k: v for k, v in fields.items() if v is not None}}


class Kind(IntEnum):
    """What a decoded message is (the sync kinds numbered as y-protocols' sync messages)."""

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


def decode(data: bytes) -> Message:
    """Decode one WebSocket message, raising :class:`ProtocolError` on anything malformed."""
    if not isinstance(data, bytes):
        raise ProtocolError("text frames are not part of the protocol")
    mtype, pos = read_var_uint(data, 0)
    request: dict[str, Any] | None = None
    if mtype == YMessageType.SYNC:
        sub, pos = read_var_uint(data, pos)
        if sub > Kind.SYNC_UPDATE:
            raise ProtocolError(f"unknown sync message type {sub}")
        kind = Kind(sub)
        payload, pos = read_var_bytes(data, pos)
    elif mtype == YMessageType.AWARENESS:
        kind = Kind.AWARENESS
        payload, pos = read_var_bytes(data, pos)
    elif mtype == REQUEST:
        kind = Kind.REQUEST
        payload, pos = read_var_bytes(data, pos)
        try:
            request = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"request is not UTF-8 JSON: {exc}") from exc
        if not isinstance(request, dict):
            raise ProtocolError("request must be a JSON object")
    else:
        raise ProtocolError(f"unknown message type {mtype}")
    if pos != len(data):
        raise ProtocolError("trailing bytes after message")
    return Message(kind, payload, request)


def encode_sync_step2(update: bytes) -> bytes:
    """Encode a sync step 2 message (the reply to a peer's state vector). pycrdt 0.14 has this
    as ``pycrdt._sync.create_sync_step2_message`` but does not export it."""
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
