"""Property-based fuzzing of the kernel's comm, both ways, as ``test_fuzz_wire`` fuzzes the
WebSocket: whatever code holding the kernel's key sends, only the replica concerned is closed
(with the reason), and the room, its other peers, the kernel and its other comms go on.

Kernel → sidecar: one cell publishes each generated comm payload on the replica's channel
(random ``data``, garbage ``buffers``, batches numbered out of order) and asks for a sync; then
it sends malformed joins. Sidecar → kernel: a client holding the kernel's connection file
sends ``SYNC_MARK``-marked ``comm_open``/``comm_msg``/``comm_close`` messages and, after each,
has the kernel check its replica. The hypothesis seed is printed (``figures``);
``KERNEL_COLLAB_FUZZ_SEED=N`` replays a run.
"""

from __future__ import annotations

import base64
import json
import os
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from jupyter_client.asynchronous.client import AsyncKernelClient
from pycrdt import (
    Awareness,
    Doc,
    Text,
    create_awareness_message,
    create_sync_message,
    create_update_message,
    write_var_uint,
)

from kernel_collab import protocol
from kernel_collab.notebook_core.schema import cell_problem
from kernel_collab.protocol import COMM_TARGET, SYNC_MARK
from tests.files import write_notebook
from tests.jupyter_server_process import JupyterServer
from tests.peers import NotebookPeer

pytestmark = pytest.mark.anyio

SEED = int(os.environ.get("KERNEL_COLLAB_FUZZ_SEED") or random.randrange(2**32))
KERNEL_EXAMPLES = 100
"""Comm payloads the kernel's code publishes."""
SIDECAR_EXAMPLES = 50
"""Marked shell messages a client with the kernel's key sends."""
SYNC_TIMEOUT = 5.0
"""Seconds the kernel's code gives a sync before taking its replica for hung."""

# --- what is sent ---------------------------------------------------------------------------

_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip
_not_a_count = st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=5), st.booleans(),
                         st.floats(allow_nan=False, allow_infinity=False), st.none(),
                         st.lists(st.integers(), max_size=2))  # fmt: skip
_envelope_keys = ("seq", "ack", "resync", "resend_from", "close")
#: Envelopes of every shape: wrong or missing version, fields of the wrong type, huge, nested.
_envelope = st.fixed_dictionaries({}, optional={
    "v": st.one_of(st.just(1), st.just(1), _json),
    **{key: _not_a_count for key in _envelope_keys},
    "probe": _json, "reason": _json,
})  # fmt: skip


def _y_update(text: str) -> bytes:
    doc: Doc[Text] = Doc()
    doc.get("other", type=Text).insert(0, text)
    return create_update_message(doc.get_update())


def _awareness() -> bytes:
    awareness = Awareness(Doc())
    awareness.set_local_state({"user": {"name": "fuzz"}})
    return create_awareness_message(awareness.encode_awareness_update([awareness.client_id]))


_VALID = [
    _y_update("hello"),
    create_sync_message(Doc()),
    protocol.encode_request({"type": "stats"}),
    _awareness(),
]
_REQUEST_TYPES = ["sync", "stats", "execute", "input_reply", "save", "trust", "kernel_action",
                  "room_info", "attach_kernel", "rename", "detach_kernel"]  # fmt: skip
_REQUEST_KEYS = ["cell_id", "as_cell", "force", "action", "request_id", "value", "error",
                 "record_timing", "path", "kernel_id", "connection_info", "reason"]  # fmt: skip


def _framed(kind: bytes, payload: bytes) -> bytes:
    return kind + write_var_uint(len(payload)) + payload


#: Wire messages, mostly malformed: random bytes, truncated or extended valid messages, sync
#: messages with garbage payloads, requests that are not JSON objects or carry garbage fields
#: (never an integer ``id``: a forged reply must not answer the replica's own request),
#: awareness garbage, and valid updates outside the notebook's schema.
_buffer = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda m, n, b: m[:n] + b, st.sampled_from(_VALID), st.integers(0, 80),
              st.binary(max_size=8)),
    st.builds(lambda sub, b: _framed(bytes([0, sub]), b), st.integers(0, 3),
              st.binary(max_size=80)),
    st.builds(lambda b: _framed(write_var_uint(protocol.REQUEST), b), st.one_of(
        st.binary(max_size=60),
        _json.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()))),
    st.builds(lambda t, extra: protocol.encode_request({**extra, "type": t}),
              st.sampled_from(_REQUEST_TYPES) | st.text(max_size=10),
              st.dictionaries(st.sampled_from(_REQUEST_KEYS), _json, max_size=3)),
    st.builds(lambda b: _framed(b"\x01", b), st.binary(max_size=60)),
    st.builds(lambda cid, clock, state: _framed(b"\x01", protocol.encode_awareness(
        [(cid, clock, state)])), st.integers(0, 2**53), st.integers(0, 2**53),
        st.text(max_size=20) | _json.map(json.dumps)),
    st.builds(_y_update, st.text(max_size=30)),
)  # fmt: skip


def _b64(buffers: list[bytes]) -> list[str]:
    return [base64.b64encode(b).decode() for b in buffers]


_buffers = st.lists(_buffer, max_size=3).map(_b64)

#: What the kernel's code publishes on its replica's channel. ``raw``: any ``data``, as is.
#: ``batch``: the replica's next number (taken from it), garbage wire messages inside.
#: ``order``: a valid envelope numbered relative to the replica's last batch (out of order,
#: repeated, ahead, a resync or a probe), with harmless or garbage messages.
_payload = st.one_of(
    st.fixed_dictionaries({"kind": st.just("raw"), "data": _json | _envelope,
                           "buffers": st.lists(_buffer, max_size=2).map(_b64)}),
    st.fixed_dictionaries({"kind": st.just("batch"), "buffers": _buffers.filter(bool)}),
    st.fixed_dictionaries({"kind": st.just("order"), "seq": st.integers(-5, 5) | st.integers(
        -(2**40), 2**70), "resync": st.none() | st.integers(-3, 3), "probe": st.booleans(),
        "buffers": st.sampled_from([[], *([m] for m in _VALID[:3])]).map(_b64) | _buffers}),
)  # fmt: skip


_garbage_update = _framed(b"\x00\x02", b"\x01\x01\x01\x01\x01")
_input_request = protocol.encode_request({"type": "input_request", "prompt": "?"})
#: Cases every run sends, before the drawn ones.
KERNEL_CASES: list[dict[str, Any]] = [
    # Harmless, in order, so that every run exercises both outcomes whatever is drawn.
    *({"kind": "batch", "buffers": _b64([valid])} for valid in _VALID),
    {"kind": "raw", "data": {"v": 1, "seq": "x"}, "buffers": []},
    {"kind": "raw", "data": {"v": 1}, "buffers": []},  # no number
    {"kind": "raw", "data": {"v": 1, "seq": 2**70}, "buffers": []},
    {"kind": "batch", "buffers": _b64([b"\xff\xff"])},
    {"kind": "batch", "buffers": _b64([_garbage_update])},
    *({"kind": "order", "seq": seq, "resync": resync, "probe": probe, "buffers": []}
      for seq, resync, probe in [(1, None, False), (0, None, False), (-1, None, False),
                                 (2**40, 0, False), (3, None, False), (0, None, True)]),
]  # fmt: skip
SIDECAR_CASES: list[dict[str, Any]] = [
    {"msg_type": "comm_msg", "comm": "replica", "data": {"v": 1}, "buffers": buffers}
    for buffers in ([b"\xff\xff"], [_garbage_update], [_framed(b"\x01", b"\x01")],
                    [_input_request], [_framed(b"\x00\x00", b"\xff")])
] + [
    {"msg_type": "comm_msg", "comm": "replica", "data": {"v": 1, "resend_from": 1},
     "buffers": buffers} for buffers in ([], [b"\xff"], [_framed(b"\x00\x00", b"\xff")])
] + [
    {"msg_type": "comm_open", "comm": comm, "target_name": target, "data": {"nonce": "x"}}
    for comm, target in [("replica", COMM_TARGET), ("widget", COMM_TARGET),
                         ("missing", COMM_TARGET), ("number", COMM_TARGET),
                         ("replica", "jupyter.widget")]
] + [
    {"msg_type": "comm_open", "comm": "fresh", "target_name": COMM_TARGET, "data": [1]},
    {"msg_type": "comm_close", "comm": "replica", "data": {}},
    {"msg_type": "comm_msg", "comm": "replica", "data": {"v": 1, "close": 4000,
                                                        "reason": "told to"}},
]  # fmt: skip


def _draw(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` examples of ``strategy``, reproducible from ``SEED``."""
    drawn: list[Any] = []

    @seed(SEED)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def collect(example: Any) -> None:
        drawn.append(example)

    collect()
    return drawn


# --- what must happen -------------------------------------------------------------------------


def _undecodable(buffers: list[bytes]) -> str | None:
    for buffer in buffers:
        try:
            protocol.decode(buffer)
        except protocol.ProtocolError as exc:
            return str(exc)
    return None


def _kernel_batch_must_close(data: Any, buffers: list[bytes], expected: int,
                             numbered_by_replica: bool) -> bool | None:  # fmt: skip
    """Whether the sidecar must close the replica after this batch (``expected``: the number
    it expects next; ``numbered_by_replica``: the replica took the number, so its own next
    batch has the next one); None: either is right (it depends on what the messages do)."""
    try:
        envelope = protocol.decode_envelope(data)
    except protocol.ProtocolError:
        return True
    seq = envelope.seq
    taken_as_repair = envelope.resync == expected and seq >= expected
    taken_as_next = envelope.resync is None and not envelope.probe and seq == expected
    if taken_as_repair or taken_as_next:
        # Taken: its messages are handled, and the number is used. Unless the replica took it
        # itself, its own next batch repeats a number: a protocol error.
        return True if _undecodable(buffers) or not numbered_by_replica else None
    # A probe of a number seen is acknowledged, a gap resynced; any other number was used.
    return not ((envelope.probe and seq < expected) or seq >= expected)


def _replica_must_close(data: Any, buffers: list[bytes]) -> bool | None:
    """Whether a marked ``comm_msg`` on the replica's comm must close it."""
    try:
        envelope = protocol.decode_envelope(data)
    except protocol.ProtocolError:
        return True
    if envelope.close is not None:
        return True
    if envelope.resend_from is not None:
        try:
            step1 = protocol.decode(buffers[0])
            Doc().get_update(step1.payload)
        except (IndexError, ValueError):
            return True
        return step1.kind is not protocol.Kind.SYNC_STEP1
    return True if _undecodable(buffers) else None


def _clear(reason: str) -> bool:
    """A close reason that says what happened (not just that the connection ended)."""
    return reason.startswith("the connection to the notebook's sidecar ended (") and any(
        said in reason for said in ("protocol error: ", "invalid notebook", "refused",
                                    "malformed comm message", "closed the kernel's comm"))


# --- the kernel's code ----------------------------------------------------------------------

KERNEL_HELPERS = f"""
import base64, json, time, anyio, kernel_collab
SETTLE_TIMEOUT = {SYNC_TIMEOUT}
from kernel_collab.kernel import api

def timed_sync(nb):
    async def sync():
        with anyio.fail_after({SYNC_TIMEOUT}):
            await nb._target.sync()
    try:
        nb._portal.run(sync)
        return {{"closed": False}}
    except ConnectionError as e:
        return {{"closed": True, "reason": str(e)}}
    except TimeoutError:
        try:
            nb.stack.close()
        except BaseException as e:
            exit_error = repr(e)
        else:
            exit_error = None
        api._notebook = None
        return {{"closed": False, "hung": True, "exit_error": exit_error}}

def comm_id_of(nb):
    channel = nb._target.transport.channel
    return next(i for i, c in api._comms.channels.items() if c is channel)
"""

KERNEL_FUZZ = """
def inject(channel, p):
    base = channel.seq
    data = p.get("data")
    if p["kind"] == "batch":
        channel.seq += 1
        data = {"v": 1, "seq": channel.seq}
    elif p["kind"] == "order":
        data = {"v": 1, "seq": base + p["seq"]}
        if p["resync"] is not None:
            data["resync"] = base + 1 + p["resync"]
        if p["probe"]:
            data["probe"] = True
    channel.publish(data, [base64.b64decode(b) for b in p["buffers"]])
    return base + 1, data

def settled(nb):
    # Wait until the sidecar has acknowledged every batch, so that it expects the replica's
    # next number (a resync the last payload started may still be under way).
    channel = nb._target.transport.channel
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not nb._portal.call(lambda: channel.acked >= channel.seq):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True

results, last = [], None
for p in json.load(open(PAYLOADS)):
    nb = kernel_collab.notebook()
    if nb is not last:  # a fresh replica: let its join settle first
        assert not timed_sync(nb)["closed"]
        last = nb
    if not settled(nb):
        results.append({"unsettled": True, "closed": False})
        continue
    expected, data = nb._portal.call(inject, nb._target.transport.channel, p)
    results.append({"expected": expected, "data": data, **timed_sync(nb)})

# Malformed joins: ignored or answered with an error; the replica is undisturbed.
nb = kernel_collab.notebook()
kernel, parent = api._kernel(), api._kernel().get_parent("shell")
for content in JOINS:  # not an object: packed here (Session.send takes only dicts)
    packed = content if isinstance(content, dict) else json.dumps(content).encode()
    kernel.session.send(kernel.iopub_socket, "kernel_collab_join", packed, parent=parent,
                        ident=b"kernel_collab")
joins = {"replica": timed_sync(nb), "same_replica": kernel_collab.notebook() is nb}
import kernel_collab.kernel.comms as kernel_comms
kernel_comms.COMM_VERSION = 99  # a kernel_collab of another version joins
try:
    api._connect()
except RuntimeError as e:
    joins["other_version"] = str(e)
finally:
    kernel_comms.COMM_VERSION = 1
joins["after"] = timed_sync(nb)
json.dump({"results": results, "joins": joins}, open(RESULTS, "w"))
print("fuzz done")
"""

JOINS: list[Any] = [
    {"v": 1, "nonce": 12345}, {"v": 1, "nonce": ["a"]}, {"v": 1, "nonce": None},
    {"v": 1, "nonce": {"a": 1}}, {"v": 1, "nonce": "x" * 10_240}, {"v": 1, "nonce": ""},
    {"v": 1}, {}, {"v": 2, "nonce": "0123456789abcdef"}, {"v": "1", "nonce": "abc"},
    {"nonce": "abc"}, {"v": 2**70, "nonce": "abc"}, [1, 2, 3], "a string", 42,
]  # fmt: skip


def _cell(peer: NotebookPeer, cell_id: str) -> dict[str, Any]:
    return next(c for c in peer.notebook.get()["cells"] if c["id"] == cell_id)


def _stdout(cell: dict[str, Any]) -> str:
    return "".join(o.get("text", "") for o in cell["outputs"] if o.get("name") == "stdout")


def _errors(cell: dict[str, Any]) -> str:
    return "".join("\n".join(o.get("traceback", [])) for o in cell["outputs"]
                   if o.get("output_type") == "error")  # fmt: skip


async def _run(server: JupyterServer, room: dict[str, Any], cell_id: str) -> None:
    async with server.client() as http:
        response = await http.post(f"/api/kernels/{room['kernel_id']}/execute",
                                   json={"cell_id": cell_id, "document_id": room["document_id"]})
        assert response.status_code == 202, response.text


async def _peer_still_edits(server: JupyterServer, room: dict[str, Any], peer: NotebookPeer,
                            sources: list[str]) -> None:  # fmt: skip
    """The peer connected throughout edits, sees the kernel's edit, and the notebook is the
    one it expects: every cell valid, ids and sources as written."""
    peer.notebook.set_cell(2, source="edited by the peer")
    await peer.flush()
    await _run(server, room, "cell-3")
    await peer.wait_until(lambda p: "kernel saw: edited by the peer" in _stdout(
        _cell(p, "cell-3")) and str(p.notebook.ycells[4]["source"]) == "edited by the kernel")
    cells = peer.notebook.ycells
    assert [cell_problem(c) for c in cells] == [None] * len(cells)
    expected = [*sources[:2], "edited by the peer", sources[3], "edited by the kernel"]
    assert [(c["id"], c["source"]) for c in peer.notebook.get()["cells"]] == [
        (f"cell-{i}", s) for i, s in enumerate(expected)]
    assert peer.close_code is None
    async with NotebookPeer.connect(server.sync_url(room["document_id"]), server.token) as late:
        assert str(late.notebook.ycells[2]["source"]) == "edited by the peer"


CHECK_CELL = (
    "import kernel_collab\n"
    "nb = kernel_collab.notebook()\n"
    "nb.sync()\n"
    "print('kernel saw:', nb.cells[2].source)\n"
    "nb.cells[4].source = 'edited by the kernel'\n"
    "nb.sync()\n"
)


def _log_problems(log: str) -> list[str]:
    """What escaped into ipykernel's threads or the sidecar's tasks (nothing may)."""
    found = []
    for sign in ("Traceback", "Uncaught exception", "Exception opening comm"):
        at = log.find(sign)
        if at >= 0:
            found.append(f"{sign!r} in the log:\n{log[max(0, at - 1500):at + 2500]}")
    return found


async def test_garbage_from_the_kernels_code_closes_only_its_replica(
    server: JupyterServer, tmp_path: Path, report_figure: Callable[[str], None]
) -> None:
    payloads = KERNEL_CASES + _draw(_payload, KERNEL_EXAMPLES)
    report_figure(f"comm fuzz, kernel → sidecar: {len(payloads)} comm payloads and "
                  f"{len(JOINS)} malformed joins (hypothesis seed {SEED}): only the replica "
                  "closed, with the reason; room, peers and kernel unaffected")  # fmt: skip
    payload_file, results_file = tmp_path / "payloads.json", tmp_path / "results.json"
    payload_file.write_text(json.dumps(payloads))
    sources = [
        f"PAYLOADS, RESULTS, JOINS = {str(payload_file)!r}, {str(results_file)!r}, {JOINS!r}\n"
        + KERNEL_HELPERS + KERNEL_FUZZ,
        "kept = True", "edit me", CHECK_CELL, "kernel edits this",
    ]
    write_notebook(server.root / "nb.ipynb", sources)
    room = await server.open_room("nb.ipynb")
    sidecar_pid = _sidecar_pid(server)
    async with NotebookPeer.connect(server.sync_url(room["document_id"]), server.token) as peer:
        peer.wait_timeout = 80
        await _run(server, room, "cell-0")
        await peer.wait_until(lambda p: "fuzz done" in _stdout(_cell(p, "cell-0"))
                              or bool(_errors(_cell(p, "cell-0"))))  # fmt: skip
        assert not _errors(_cell(peer, "cell-0")), _errors(_cell(peer, "cell-0"))
        report = json.loads(results_file.read_text())
        problems = []
        for i, (payload, result) in enumerate(zip(payloads, report["results"], strict=True)):
            if result.get("unsettled"):
                problems.append(f"#{i}: the previous payload left batches unacknowledged")
                continue
            buffers = [base64.b64decode(b) for b in payload["buffers"]]
            must = _kernel_batch_must_close(result["data"], buffers, result["expected"],
                                            payload["kind"] == "batch")
            wrong = (
                "hung" if result.get("hung")
                else f"closed={result['closed']}, expected {must}" if must not in (
                    None, result["closed"])
                else f"unclear reason {result.get('reason')!r}" if result["closed"]
                and not _clear(result["reason"]) else None
            )  # fmt: skip
            if wrong:
                problems.append(f"#{i} {wrong}: {payload!r} -> {result!r}")
        problems += _log_problems(server.log)
        assert not problems, f"hypothesis seed {SEED}:\n" + "\n".join(problems)
        closed = sum(r["closed"] for r in report["results"])
        report_figure(f"  {closed} replicas closed with the reason, {len(payloads) - closed} "
                      "payloads harmless")  # fmt: skip
        harmless = [not r["closed"] for r in report["results"][: len(KERNEL_CASES)]]
        assert harmless.count(True) >= len(_VALID), report["results"][: len(_VALID)]
        assert harmless.count(False) >= 5, harmless
        joins = report["joins"]
        assert joins["replica"] == {"closed": False} and joins["same_replica"], joins
        assert "speaks version 99 of the kernel's comm, this sidecar version 1" in joins.get(
            "other_version", ""), joins
        assert joins["after"] == {"closed": False}, joins
        await _peer_still_edits(server, room, peer, sources)
    log = server.log
    # JOINS with a bad nonce or content (content that is not an object is dropped by the
    # bridge before any join is looked at).
    not_object = log.count("ignored an iopub kernel_collab_join whose content is not an object")
    assert log.count("ignored a malformed join") + not_object == 11, log
    assert log.count("refused its replica") == 5, log  # JOINS: version bad; version 99
    assert not _log_problems(log), _log_problems(log)
    assert _sidecar_pid(server) == sidecar_pid


def _sidecar_pid(server: JupyterServer) -> int:
    """The notebook's sidecar process, which must be running."""
    pid = int(server.sidecar(server.root / "nb.ipynb")["pid"])
    os.kill(pid, 0)  # raises ProcessLookupError if it is gone
    return pid


# --- sidecar → kernel -------------------------------------------------------------------------

_comm_target = st.sampled_from(["replica", "replica", "replica", "widget", "fresh", "missing",
                                "number"])  # fmt: skip
_sidecar_envelope = st.fixed_dictionaries({"v": st.just(1)}, optional={
    "ack": st.integers(0, 2**70), "resend_from": st.integers(0, 10),
    "close": st.integers(0, 5000), "reason": _json,
})  # fmt: skip
_sidecar_message = st.fixed_dictionaries({
    "msg_type": st.sampled_from(["comm_msg", "comm_msg", "comm_msg", "comm_open", "comm_close"]),
    "comm": _comm_target,
    "target_name": st.sampled_from([COMM_TARGET, COMM_TARGET, "jupyter.widget", ""]),
    "data": st.one_of(_sidecar_envelope, _sidecar_envelope, _envelope, _json,
                      st.fixed_dictionaries({"nonce": _json | st.text(max_size=16)},
                                            optional={"v": _json, "error": _json})),
    "buffers": st.one_of(st.just([]), st.lists(_buffer, max_size=2),
                         st.lists(st.sampled_from(_VALID), max_size=2)),
    "content": st.sampled_from(["object"] * 9 + ["list"]),
})  # fmt: skip

SETUP_CELL = KERNEL_HELPERS + """
import ipywidgets
slider = ipywidgets.IntSlider(value=1)
nb = kernel_collab.notebook()
def probe():
    out = timed_sync(api._notebook) if api._notebook is not None else {"closed": True}
    try:
        nb = kernel_collab.notebook()
    except Exception as e:  # reported; the next probe starts afresh
        out["error"] = f"kernel_collab.notebook() raised {e!r}"
        api._notebook = None
        nb = kernel_collab.notebook()
    assert not timed_sync(nb)["closed"]
    print(json.dumps({**out, "comm_id": comm_id_of(nb)}))
print(json.dumps({"comm_id": comm_id_of(nb), "widget": slider.comm.comm_id}))
"""


async def _execute(client: AsyncKernelClient, code: str) -> tuple[str, str]:
    """Run code from this client (not through the sidecar); return its stdout and its stderr
    (with any error's traceback)."""
    out: list[str] = []
    err: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        content = msg["content"]
        if msg["msg_type"] == "stream":
            (out if content["name"] == "stdout" else err).append(content["text"])
        elif msg["msg_type"] == "error":
            err.append("\n".join(content["traceback"]))

    await client.execute_interactive(code, timeout=30, output_hook=hook)
    return "".join(out), "".join(err)


async def test_garbage_from_a_client_with_the_kernels_key_closes_only_its_replica(
    server: JupyterServer, report_figure: Callable[[str], None]
) -> None:
    messages = [{"target_name": COMM_TARGET, "buffers": [], "content": "object", **case}
                for case in SIDECAR_CASES] + _draw(_sidecar_message, SIDECAR_EXAMPLES)
    report_figure(f"comm fuzz, sidecar → kernel: {len(messages)} marked comm messages "
                  f"(hypothesis seed {SEED}): only the replica closed, with the reason; "
                  "kernel, widget and room unaffected")  # fmt: skip
    sources = ["print('ran')", "kept = True", "edit me", CHECK_CELL, "kernel edits this"]
    write_notebook(server.root / "nb.ipynb", sources)
    room = await server.open_room("nb.ipynb")
    sidecar_pid = _sidecar_pid(server)
    client = AsyncKernelClient()
    client.load_connection_file(await server.kernel_connection_file(room["kernel_id"]))
    client.start_channels()
    try:
        async with NotebookPeer.connect(server.sync_url(room["document_id"]),
                                        server.token) as peer:  # fmt: skip
            peer.wait_timeout = 30
            printed, errors = await _execute(client, SETUP_CELL)
            assert not errors, errors
            ids = json.loads(printed)
            problems, closed = [], 0
            for i, message in enumerate(messages):
                comm_id: Any = {"replica": ids["comm_id"], "widget": ids["widget"],
                                "fresh": uuid.uuid4().hex, "number": 7}.get(message["comm"])
                content: Any = {"data": message["data"]}
                if message["comm"] != "missing":
                    content["comm_id"] = comm_id
                if message["msg_type"] == "comm_open":
                    content["target_name"] = message["target_name"]
                if message["content"] == "list":  # packed here: Session.msg takes only dicts
                    content = json.dumps(list(content.values())).encode()
                msg = client.session.msg(message["msg_type"], content,
                                         metadata={SYNC_MARK: True})  # fmt: skip
                msg["buffers"] = message["buffers"]
                client.shell_channel.send(msg)
                printed, errors = await _execute(client, "probe()")
                if errors:
                    problems.append(f"#{i} the kernel's stderr: {errors[-2000:]}: {message!r}")
                if not printed:
                    continue  # the probe failed (its error is the problem reported)
                result = json.loads(printed)
                # Only a comm_msg or comm_close on the replica's comm concerns it (a comm_open
                # of an id already taken is not a new comm).
                must = (
                    False if message["comm"] != "replica" or message["content"] == "list"
                    else _replica_must_close(message["data"], message["buffers"])
                    if message["msg_type"] == "comm_msg"
                    else message["msg_type"] == "comm_close"
                )  # fmt: skip
                wrong = (
                    result["error"] if "error" in result
                    else "hung" if result.get("hung")
                    else f"closed={result['closed']}, expected {must}" if must not in (
                        None, result["closed"])
                    else f"unclear reason {result.get('reason')!r}" if result["closed"]
                    and not _clear(result["reason"]) else None
                )  # fmt: skip
                if wrong:
                    problems.append(f"#{i} {wrong}: {message!r} -> {result!r}")
                closed += result["closed"]
                ids["comm_id"] = result["comm_id"]
            problems += _log_problems(server.log)
            assert not problems, f"hypothesis seed {SEED}:\n" + "\n".join(problems)
            report_figure(f"  {closed} replicas closed with the reason, "
                          f"{len(messages) - closed} messages harmless")  # fmt: skip
            assert closed > 5, closed
            # The widget's comm still works: an ordinary update reaches it.
            update = client.session.msg("comm_msg", {"comm_id": ids["widget"], "data": {
                "method": "update", "state": {"value": 42}, "buffer_paths": []}})  # fmt: skip
            client.shell_channel.send(update)
            assert await _execute(client, "print(slider.value, slider.comm.comm_id in "
                                  "api._kernel().comm_manager.comms)") == ("42 True\n", "")
            # The kernel still runs the shared queue's cells.
            await _run(server, room, "cell-0")
            await peer.wait_until(lambda p: _stdout(_cell(p, "cell-0")) == "ran\n")
            await _peer_still_edits(server, room, peer, sources)
    finally:
        client.stop_channels()
    assert not _log_problems(server.log), _log_problems(server.log)
    assert _sidecar_pid(server) == sidecar_pid
