"""Strict decoding of peer messages."""

from __future__ import annotations

import pytest
from pycrdt import (
    Doc,
    Text,
    create_awareness_message,
    create_sync_message,
    create_update_message,
)

from kernel_collab import protocol


def test_decodes_the_y_websocket_messages() -> None:
    doc: Doc[Text] = Doc()
    doc.get("t", type=Text).insert(0, "x")
    step1 = protocol.decode(create_sync_message(doc))
    assert step1.kind is protocol.Kind.SYNC_STEP1
    update = protocol.decode(create_update_message(doc.get_update()))
    assert update.kind is protocol.Kind.SYNC_UPDATE and update.payload == doc.get_update()
    assert protocol.decode(protocol.encode_sync_step2(b"\x00\x00")).kind is protocol.Kind.SYNC_STEP2
    aw = protocol.decode(create_awareness_message(b"\x00"))
    assert aw.kind is protocol.Kind.AWARENESS


def test_requests_round_trip() -> None:
    message = protocol.decode(protocol.encode_request({"type": "save", "id": 3}))
    assert message.kind is protocol.Kind.REQUEST and message.request == {"type": "save", "id": 3}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated integer"),
        (b"\x00\x02\x05ab", "truncated payload"),
        (b"\x00\x07\x00", "unknown sync message type"),
        (b"\x09", "unknown message type"),
        (b"\x01\x01\x00\xff", "trailing bytes"),
        (b"\x64\x03[1]", "must be a JSON object"),
        (b"\x64\x02\xff\xfe", "not UTF-8 JSON"),
        (b"\xff" * 12, "integer too long"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(protocol.ProtocolError, match=reason):
        protocol.decode(data)


def test_awareness_entries_are_validated() -> None:
    good = b"\x01\x05\x01\x02{}"
    assert protocol.parse_awareness_clients(good) == [(5, 1, "{}")]
    with pytest.raises(protocol.ProtocolError, match="not JSON"):
        protocol.parse_awareness_clients(b"\x01\x05\x01\x02{x")


def test_the_ready_line_carries_the_room_as_it_started() -> None:
    room: dict[str, object] = {"path": "my notes/ü nb.ipynb", "kernel_status": "starting",
                               "queue": [], "peers": [], "running": None}  # fmt: skip
    line = protocol.ready_line("ws://127.0.0.1:5/", "doc-1", room)
    assert line.endswith("\n") and line.count("\n") == 1
    assert protocol.parse_ready_line(line) == protocol.Ready("ws://127.0.0.1:5/", "doc-1", room)
    plain = protocol.ready_line("ws://127.0.0.1:5/", "doc-1")  # an older sidecar's: asked
    assert protocol.parse_ready_line(plain) == protocol.Ready("ws://127.0.0.1:5/", "doc-1", None)
    cut = line[: line.index("room=") + 12]
    assert protocol.parse_ready_line(cut) == protocol.Ready("ws://127.0.0.1:5/", "doc-1", None)
    assert protocol.parse_ready_line("kernel_collab sidecar error: no") is None
