"""Kernel iopub messages written into a live YNotebook, checked on real pycrdt docs.

Every test ends by validating the notebook with nbformat and by checking that a second doc,
synced from the first by updates, reads the same.
"""

from __future__ import annotations

import time
from typing import Any

import nbformat
import pytest
from jupyter_ydoc import YNotebook
from pycrdt import Doc, Map, Text

from kernel_collab.sidecar.outputs import ERROR_NAME, OutputWriter

Output = dict[str, Any]


def code(cid: str) -> dict[str, Any]:
    return {
        "id": cid,
        "cell_type": "code",
        "source": "",
        "metadata": {},
        "outputs": [],
        "execution_count": None,
    }


def live(*ids: str) -> YNotebook:
    ynb = YNotebook()
    ynb.set(
        {"cells": [code(cid) for cid in ids], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    )
    return ynb


class Peer:
    """A second document kept in sync by incremental updates."""

    def __init__(self, source: YNotebook) -> None:
        self.source = source
        self.notebook = YNotebook(Doc())
        self.last_update = b""
        self.sync()

    def sync(self) -> None:
        update = self.source.ydoc.get_update(self.notebook.ydoc.get_state())
        self.last_update = update
        self.notebook.ydoc.apply_update(update)


def check(ynb: YNotebook, peer: Peer | None = None) -> dict[str, Any]:
    """The notebook is valid nbformat and a synced peer reads the same; returns it."""
    nb: dict[str, Any] = ynb.get()
    nbformat.validate(nbformat.from_dict(nb))
    peer = peer or Peer(ynb)
    peer.sync()
    assert peer.notebook.get() == nb
    return nb


def outputs(ynb: YNotebook, cid: str) -> list[Output]:
    cell = next(c for c in ynb.get()["cells"] if c["id"] == cid)
    result: list[Output] = cell["outputs"]
    return result


def ycell(ynb: YNotebook, cid: str) -> Map[Any]:
    cell: Map[Any] = next(c for c in ynb.ycells if c["id"] == cid)
    return cell


def stdout(text: str) -> dict[str, Any]:
    return {"name": "stdout", "text": text}


def display(data: dict[str, Any], display_id: str | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"data": data, "metadata": {}}
    if display_id is not None:
        content["transient"] = {"display_id": display_id}
    return content


def streamed(writer: OutputWriter, ynb: YNotebook, *chunks: str, name: str = "stdout") -> str:
    """Write chunks to cell c1 and return the text of its single output."""
    for chunk in chunks:
        assert writer.handle("c1", "stream", {"name": name, "text": chunk})
    [out] = outputs(ynb, "c1")
    check(ynb)
    text: str = out["text"]
    return text


@pytest.fixture
def ynb() -> YNotebook:
    return live("c1", "c2", "c3")


@pytest.fixture
def writer(ynb: YNotebook) -> OutputWriter:
    return OutputWriter(ynb)


# --- streams ----------------------------------------------------------------------------


def test_stream_appends_to_the_last_output_of_the_same_name(
    ynb: YNotebook, writer: OutputWriter
) -> None:
    writer.clear("c1")
    for name, text in [("stdout", "a"), ("stdout", "b\n"), ("stderr", "oops\n"), ("stdout", "c")]:
        assert writer.handle("c1", "stream", {"name": name, "text": text})
    assert outputs(ynb, "c1") == [
        {"output_type": "stream", "name": "stdout", "text": "ab\n"},
        {"output_type": "stream", "name": "stderr", "text": "oops\n"},
        {"output_type": "stream", "name": "stdout", "text": "c"},
    ]
    assert all(isinstance(o["text"], Text) for o in ycell(ynb, "c1")["outputs"])
    check(ynb)


def test_progress_bar_with_carriage_returns_stays_one_line(
    ynb: YNotebook, writer: OutputWriter
) -> None:
    peer = Peer(ynb)
    bars = [f"\r{i / 10:5.1f}%|{'#' * (i // 50):<20}| {i}/1000 😀" for i in range(1, 1001)]
    for bar in bars:
        writer.handle("c1", "stream", stdout(bar))
        peer.sync()
        assert len(peer.last_update) < 200  # only the end of the line is edited
    writer.handle("c1", "stream", stdout("\ndone\n"))
    [out] = outputs(ynb, "c1")
    assert out["text"] == bars[-1][1:] + "\ndone\n"
    check(ynb, peer)


def test_carriage_return_overwrites_like_a_terminal(ynb: YNotebook, writer: OutputWriter) -> None:
    assert streamed(writer, ynb, "abcdef\rXY") == "XYcdef"
    writer.clear("c1")
    assert streamed(writer, ynb, "10%", "\r", "20%") == "20%"
    writer.clear("c1")
    assert streamed(writer, ynb, "😀😀😀 é\rab") == "ab😀 é"
    writer.clear("c1")
    assert streamed(writer, ynb, "first\nhéllo\rHÉ", "\rh") == "first\nhÉllo"


def test_trailing_carriage_return_keeps_the_line_until_more_text(
    ynb: YNotebook, writer: OutputWriter
) -> None:
    assert streamed(writer, ynb, "50%\r") == "50%"
    assert streamed(writer, ynb, "\n") == "50%\n"
    writer.clear("c1")
    assert streamed(writer, ynb, "one\r\ntwo\r\n", "three\r", "\n") == "one\ntwo\nthree\n"


def test_backspace_erases_at_the_end_and_moves_back_inside_a_line(
    ynb: YNotebook, writer: OutputWriter
) -> None:
    assert streamed(writer, ynb, "abc\b\bX\n") == "aX\n"
    assert streamed(writer, ynb, "|", "\b/", "\b-", "\b\\") == "aX\n\\"
    assert streamed(writer, ynb, "\n\b\bline") == "aX\n\\\nline"
    writer.clear("c1")
    assert streamed(writer, ynb, "abcdef\rab\bX") == "aXcdef"


def test_hundred_thousand_lines_are_appended_cheaply(ynb: YNotebook, writer: OutputWriter) -> None:
    lines = [f"line {i} ✓\n" for i in range(100_000)]
    chunks = ["".join(lines[i : i + 50]) for i in range(0, len(lines), 50)]
    peer = Peer(ynb)
    started = time.perf_counter()
    with ynb.ydoc.transaction():  # the bridge batches what has arrived
        for chunk in chunks[:1000]:
            writer.handle("c1", "stream", stdout(chunk))
    for chunk in chunks[1000:]:
        writer.handle("c1", "stream", stdout(chunk))
    elapsed = time.perf_counter() - started
    print(f"100,000 lines in {len(chunks)} messages: {elapsed:.3f}s")
    [out] = outputs(ynb, "c1")
    assert out["text"] == "".join(lines)
    check(ynb, peer)


def test_unpaired_surrogates_are_replaced(ynb: YNotebook, writer: OutputWriter) -> None:
    assert streamed(writer, ynb, "a\ud800b") == "a?b"


# --- rich outputs and display ids -------------------------------------------------------


def test_display_updates_reach_every_output_with_the_id(
    ynb: YNotebook, writer: OutputWriter
) -> None:
    writer.handle("c1", "display_data", display({"text/plain": "0"}, "bar"))
    writer.handle("c2", "stream", stdout("before\n"))
    writer.handle("c2", "display_data", display({"text/plain": "0"}, "bar"))
    result = {**display({"text/plain": "r0"}, "res"), "execution_count": 3}
    writer.handle("c3", "execute_result", result)
    for i in range(1, 1001):
        update = display({"text/plain": f"{i}", "text/html": f"<b>{i}</b>"}, "bar")
        writer.handle("c3", "update_display_data", update)
    writer.handle("c1", "update_display_data", display({"text/plain": "r1"}, "res"))
    final = {"text/plain": "1000", "text/html": "<b>1000</b>"}
    assert outputs(ynb, "c1") == [{"output_type": "display_data", "data": final, "metadata": {}}]
    assert outputs(ynb, "c2")[1] == {"output_type": "display_data", "data": final, "metadata": {}}
    assert outputs(ynb, "c3") == [
        {
            "output_type": "execute_result",
            "data": {"text/plain": "r1"},
            "metadata": {},
            "execution_count": 3,
        }
    ]
    check(ynb)


def test_clearing_a_cell_forgets_its_display_ids(ynb: YNotebook, writer: OutputWriter) -> None:
    writer.handle("c1", "display_data", display({"text/plain": "0"}, "d"))
    writer.handle("c2", "display_data", display({"text/plain": "0"}, "d"))
    assert writer.clear("c1")
    writer.handle("c1", "stream", stdout("new run\n"))
    writer.handle("c1", "update_display_data", display({"text/plain": "1"}, "d"))
    assert outputs(ynb, "c1") == [{"output_type": "stream", "name": "stdout", "text": "new run\n"}]
    assert outputs(ynb, "c2")[0]["data"] == {"text/plain": "1"}
    assert writer.handle("c2", "clear_output", {"wait": False})
    assert writer.handle("c2", "update_display_data", display({"text/plain": "2"}, "d"))
    assert outputs(ynb, "c2") == []
    check(ynb)


def test_clear_output_wait_keeps_only_the_last_frame(ynb: YNotebook, writer: OutputWriter) -> None:
    writer.handle("c2", "stream", stdout("other cell\n"))
    for frame in range(50):
        writer.handle("c1", "clear_output", {"wait": True})
        writer.handle("c1", "stream", stdout(f"frame {frame}\n"))
        writer.handle("c1", "display_data", display({"text/plain": f"plot {frame}"}))
    writer.handle("c1", "clear_output", {"wait": True})
    writer.handle("c1", "execute_input", {"code": "", "execution_count": 7})
    assert [o.get("text") or o["data"]["text/plain"] for o in outputs(ynb, "c1")] == [
        "frame 49\n",
        "plot 49",
    ]
    writer.handle("c1", "error", {"ename": "E", "evalue": "v", "traceback": ["tb"]})
    assert [o["output_type"] for o in outputs(ynb, "c1")] == ["error"]
    assert outputs(ynb, "c2") == [
        {"output_type": "stream", "name": "stdout", "text": "other cell\n"}
    ]
    check(ynb)


def test_error_output(ynb: YNotebook, writer: OutputWriter) -> None:
    traceback = ["\x1b[0;31mZeroDivisionError\x1b[0m", "----> 1 1/0", "division by zero"]
    content = {"ename": "ZeroDivisionError", "evalue": "division by zero", "traceback": traceback}
    assert writer.handle("c1", "error", content)
    assert outputs(ynb, "c1") == [{"output_type": "error", **content}]
    check(ynb)


def test_execute_result_and_execute_input_counts(ynb: YNotebook, writer: OutputWriter) -> None:
    assert writer.handle("c1", "execute_input", {"code": "1+1", "execution_count": 4})
    result = {"data": {"text/plain": "2"}, "metadata": {}, "execution_count": 4}
    assert writer.handle("c1", "execute_result", result)
    [cell] = [c for c in check(ynb)["cells"] if c["id"] == "c1"]
    assert cell["execution_count"] is None  # shown when the run ends, with the idle state
    assert cell["outputs"] == [{"output_type": "execute_result", **result}]
    assert writer.take_count("c1") == 4
    assert writer.take_count("c1") is None


def test_json_mime_types_take_any_json(ynb: YNotebook, writer: OutputWriter) -> None:
    data = {"application/json": {"a": [1, None]}, "application/vnd.x+json": [1], "text/plain": []}
    writer.handle("c1", "display_data", {"data": data, "metadata": {"isolated": True}})
    assert outputs(ynb, "c1")[0]["data"] == data
    check(ynb)


@pytest.mark.parametrize(
    ("msg_type", "content", "reason"),
    [
        ("display_data", {"data": "text", "metadata": {}}, "data must be a dict"),
        ("display_data", {"data": {"image/png": {"x": 1}}}, "data['image/png'] is a dict"),
        ("display_data", {"data": {"text/plain": ["a", 1]}}, "not a string or list of str"),
        ("display_data", {"metadata": {}}, "data must be a dict"),
        ("display_data", {"data": {}, "metadata": []}, "metadata must be a dict"),
        ("display_data", {"data": {"text/plain": {1, 2}}}, "is a set"),
        ("execute_result", {"data": {}, "metadata": {}}, "execution_count"),
        ("execute_result", {"data": {}, "execution_count": -1}, "execution_count"),
        ("error", {"ename": "E", "evalue": "v"}, "traceback must be a list"),
        ("error", {"ename": None, "evalue": "v", "traceback": []}, "ename and evalue"),
        ("stream", {"name": "stdout", "text": 5}, "text must be a string"),
        ("stream", {"text": "x"}, "name must be a string"),
        ("update_display_data", {"data": {}}, "display_id is missing"),
        ("clear_output", ["not", "a", "dict"], "content is a list"),
        ("display_data", {"data": {"text/plain": "\ud800"}}, "not storable as JSON"),
    ],
)
def test_malformed_messages_become_error_outputs(
    ynb: YNotebook, writer: OutputWriter, msg_type: str, content: Any, reason: str
) -> None:
    writer.handle("c1", "stream", stdout("before\n"))
    assert writer.handle("c1", msg_type, content)
    writer.handle("c1", "stream", stdout("after\n"))
    before, error, after = outputs(ynb, "c1")
    assert before["text"] == "before\n" and after["text"] == "after\n"
    assert error["output_type"] == "error" and error["ename"] == ERROR_NAME
    assert error["evalue"].startswith(f"malformed {msg_type} message")
    assert reason in error["evalue"] and reason in error["traceback"][0]
    check(ynb)


def test_transient_is_not_stored(ynb: YNotebook, writer: OutputWriter) -> None:
    writer.handle("c1", "display_data", display({"text/plain": "x"}, "d"))
    assert "transient" not in ycell(ynb, "c1")["outputs"][0]
    check(ynb)


# --- size limits ------------------------------------------------------------------------


def test_large_rich_output_becomes_a_note(ynb: YNotebook) -> None:
    writer = OutputWriter(ynb, max_output_bytes=1000)
    big = {"image/png": "A" * 2000, "text/plain": "<Figure>"}
    writer.handle("c1", "execute_result", {**display(big, "fig"), "execution_count": 1})
    [out] = outputs(ynb, "c1")
    note = out["data"]["text/plain"]
    assert note.startswith("[output too large: ") and "(image/png, text/plain)" in note
    assert note.endswith("limit 1000 bytes]")
    assert out["metadata"] == {} and out["execution_count"] == 1
    writer.handle("c1", "update_display_data", display({"text/plain": "small"}, "fig"))
    assert outputs(ynb, "c1")[0]["data"] == {"text/plain": "small"}
    writer.handle("c1", "update_display_data", display(big, "fig"))
    assert outputs(ynb, "c1")[0]["data"]["text/plain"].startswith("[output too large: ")
    check(ynb)


def test_stream_is_cut_with_a_note_that_keeps_counting(ynb: YNotebook) -> None:
    writer = OutputWriter(ynb, max_stream_bytes=100)
    line = "x" * 49 + "\n"
    for _ in range(5):
        writer.handle("c1", "stream", stdout(line))
    writer.handle("c1", "display_data", display({"text/plain": "plot"}))
    writer.handle("c1", "stream", {"name": "stderr", "text": "abc"})
    note = "[output truncated: 153 bytes dropped, limit 100 bytes]\n"
    assert outputs(ynb, "c1") == [
        {"output_type": "stream", "name": "stdout", "text": line * 2 + note},
        {"output_type": "display_data", "data": {"text/plain": "plot"}, "metadata": {}},
    ]
    writer.handle("c1", "clear_output", {"wait": False})  # the budget starts over
    assert streamed(writer, ynb, "é" * 60) == "é" * 50 + "\n" + note.replace("153", "20")
    check(ynb)


def test_stream_cut_in_the_middle_of_a_line(ynb: YNotebook) -> None:
    writer = OutputWriter(ynb, max_stream_bytes=10)
    text = streamed(writer, ynb, "abc", "defghijklmno")
    assert text == "abcdefghij\n[output truncated: 5 bytes dropped, limit 10 bytes]\n"


def test_raised_limits_keep_everything(ynb: YNotebook) -> None:
    writer = OutputWriter(ynb, max_output_bytes=10**8, max_stream_bytes=10**8)
    big = {"image/png": "A" * 2_000_000}
    writer.handle("c1", "display_data", display(big))
    text = "y" * 999 + "\n"
    for _ in range(2000):
        writer.handle("c1", "stream", stdout(text))
    image, stream = outputs(ynb, "c1")
    assert image["data"] == big
    assert stream["text"] == text * 2000
    check(ynb)


# --- the document changing under the writer ---------------------------------------------


def test_messages_for_a_deleted_cell_are_ignored(ynb: YNotebook, writer: OutputWriter) -> None:
    writer.clear("c2")
    writer.handle("c2", "display_data", display({"text/plain": "0"}, "d"))
    writer.handle("c2", "stream", stdout("running\n"))
    del ynb.ycells[1]
    assert not writer.handle("c2", "stream", stdout("more\n"))
    assert not writer.handle("c2", "display_data", display({"text/plain": "x"}))
    assert not writer.handle("c2", "error", {"ename": "E"})
    assert not writer.clear("c2")
    assert writer.handle("c3", "update_display_data", display({"text/plain": "1"}, "d"))
    assert writer.handle("c3", "stream", stdout("c3 still works\n"))
    assert [c["id"] for c in check(ynb)["cells"]] == ["c1", "c3"]
    assert outputs(ynb, "c3")[0]["text"] == "c3 still works\n"
    assert not writer.handle("c1", "comm_msg", {})


def test_cells_inserted_or_moved_by_peers_are_found(ynb: YNotebook, writer: OutputWriter) -> None:
    writer.handle("c3", "stream", stdout("a"))
    ynb.ycells.insert(0, ynb.create_ycell(code("new")))
    writer.handle("c3", "stream", stdout("b"))
    moved = ynb.get()["cells"][3]
    del ynb.ycells[3]
    ynb.ycells.insert(1, ynb.create_ycell(moved))  # a move, as yjs peers do it
    writer.handle("c3", "stream", stdout("c"))
    assert outputs(ynb, "c3") == [{"output_type": "stream", "name": "stdout", "text": "abc"}]
    check(ynb)


def test_outputs_cleared_or_edited_by_a_peer(ynb: YNotebook, writer: OutputWriter) -> None:
    writer.handle("c1", "stream", stdout("one\n"))
    ycell(ynb, "c1")["outputs"].clear()
    writer.handle("c1", "stream", stdout("two\n"))
    assert outputs(ynb, "c1") == [{"output_type": "stream", "name": "stdout", "text": "two\n"}]
    youtput = ycell(ynb, "c1")["outputs"][0]
    text = youtput["text"]
    text.insert(0, "peer: ")
    writer.handle("c1", "stream", stdout("three\rTHREE"))
    youtput["text"] = "plain string\n"
    writer.handle("c1", "stream", stdout("four\n"))
    assert outputs(ynb, "c1") == [
        {"output_type": "stream", "name": "stdout", "text": "plain string\nfour\n"}
    ]
    check(ynb)


def test_forget_cell_drops_display_targets(ynb: YNotebook, writer: OutputWriter) -> None:
    writer.handle("c1", "display_data", display({"text/plain": "0"}, "d"))
    writer.forget_cell("c1")
    writer.handle("c1", "update_display_data", display({"text/plain": "1"}, "d"))
    assert outputs(ynb, "c1")[0]["data"] == {"text/plain": "0"}
    check(ynb)
