"""Kernel iopub messages written into cells' outputs, as JupyterLab's output area (4.2+) shows
them (docs/architecture.md, "Execution", "Outputs"): stream text goes to a Y text edited only at
its end, whose last line is a terminal line (:func:`_overwrite`); every stored output is valid
nbformat.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from jupyter_ydoc import YNotebook
from pycrdt import Array, Map, Text

from ..notebook_core.cells import common_prefix, find_cell, nbytes
from ..notebook_core.outputs import (
    MalformedOutput,
    Output,
    display_id_of,
    error_output,
    is_count,
    json_size,
    message_content,
    rich_output,
    stream_content,
    utf8,
)

DEFAULT_MAX_OUTPUT_BYTES: Final = 5 * 1024 * 1024
DEFAULT_MAX_STREAM_BYTES: Final = 10 * 1024 * 1024
ERROR_NAME: Final = "kernel_collab"
"""The ``ename`` of the error output that stands for a malformed message."""

HANDLED: Final = frozenset({"stream", "display_data", "execute_result", "error", "clear_output",
                            "update_display_data", "execute_input"})  # fmt: skip
"""The iopub message types :meth:`OutputWriter.handle` acts on."""

_CONTROL: Final = re.compile("([\r\n\b])")


# --- the terminal line ------------------------------------------------------------------


class _Line:
    """The unfinished last line of a stream and the cursor in it: the only part that changes
    (kept as pieces, so that appending to a long line costs only the new text)."""

    __slots__ = ("_parts", "chars", "cursor", "nbytes")
    _parts: list[str]
    chars: int
    cursor: int
    nbytes: int

    def __init__(self, text: str = "") -> None:
        self._reset(text, len(text))

    def _reset(self, text: str, cursor: int) -> None:
        self._parts = [text] if text else []
        self.chars = len(text)
        self.nbytes = nbytes(text)
        self.cursor = cursor

    def feed(self, chunk: str) -> tuple[int, str]:
        """Write ``chunk``; return how many bytes of the old line stay and the text after them."""
        if self.cursor == self.chars and "\r" not in chunk and "\b" not in chunk:
            kept = self.nbytes
            newline = chunk.rfind("\n")
            if newline >= 0:
                last = chunk[newline + 1 :]
                self._reset(last, len(last))
            elif chunk:
                self._parts.append(chunk)
                self.chars += len(chunk)
                self.nbytes += nbytes(chunk)
                self.cursor = self.chars
            return kept, chunk
        old = "".join(self._parts)
        done, line, cursor = _overwrite(old, self.cursor, chunk)
        new = done + line
        keep = common_prefix(old, new)
        self._reset(line, cursor)
        return nbytes(old[:keep]), new[keep:]


def _overwrite(line: str, cursor: int, chunk: str) -> tuple[str, str, int]:
    """Apply ``chunk`` at ``cursor`` in ``line``: (finished lines, unfinished line, cursor)."""
    done: list[str] = []
    for piece in _CONTROL.split(chunk):
        if piece == "\n":  # ends the line wherever the cursor is, as JupyterLab does
            done.append(line + "\n")
            line, cursor = "", 0
        elif piece == "\r":
            cursor = 0
        elif piece == "\b":  # at the end of the line it erases, as in JupyterLab
            if cursor == len(line):
                line = line[:-1]
            cursor = max(cursor - 1, 0)
        elif piece:
            line = line[:cursor] + piece + line[cursor + len(piece) :]
            cursor += len(piece)
    return "".join(done), line, cursor


# --- per-cell bookkeeping ---------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Stream:
    """A stream output this writer appends to."""

    output: Map[Any]
    text: Text
    name: str
    position: int
    """Index in the cell's outputs."""
    nbytes: int
    """Bytes of kept text (not counting a truncation note)."""
    line: _Line = field(default_factory=_Line)
    dropped: int = 0
    """Bytes not stored since the cell's stream budget ran out."""
    note: str = ""
    """The truncation note ending the text, once there is one."""


@dataclass(eq=False, slots=True)
class _CellState:
    """What the writer remembers about one cell's outputs."""

    pending_clear: bool = False
    last: _Stream | None = None
    """The cell's last output, when it is a stream that text can be appended to."""
    stream_bytes: int = 0
    """Stream text stored in the cell since its outputs were last cleared."""
    execution_count: int | None = None
    """From ``execute_input``; written with the end of the run (see ``run_record``)."""
    cut: _Stream | None = None
    """The stream holding the truncation note, once the stream budget is spent."""
    display_ids: set[str] = field(default_factory=set)


def _alive(output: Map[Any]) -> bool:
    """Whether ``output`` is still in the document (a deleted map reads as empty)."""
    return "output_type" in output


# --- the writer -------------------------------------------------------------------------


class OutputWriter:
    """Writes kernel outputs into cells of one YNotebook; tracks display ids across cells."""

    def __init__(
        self,
        notebook: YNotebook,
        *,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        max_stream_bytes: int = DEFAULT_MAX_STREAM_BYTES,
    ) -> None:
        self.max_output_bytes = max_output_bytes
        self.max_stream_bytes = max_stream_bytes
        self._doc = notebook.ydoc
        self._notebook = notebook
        self._cells: dict[str, _CellState] = {}
        self._displays: dict[str, list[tuple[str, Map[Any]]]] = {}
        self.touched: set[str] = set()
        """Cells whose outputs were written since the owner last emptied this set."""

    def take_count(self, cell_id: str) -> int | None:
        """The execution count the kernel gave the cell's current run, if any."""
        state = self._cells.get(cell_id)
        count = state.execution_count if state is not None else None
        if state is not None:
            state.execution_count = None
        return count

    def clear(self, cell_id: str) -> bool:
        """Start of a run: empty the cell's outputs, forget their display ids and state; return
        whether the cell exists (as a code cell)."""
        with self._doc.transaction():
            self.forget_cell(cell_id)
            outputs = self._outputs(cell_id)
            if outputs is None:
                return False
            if len(outputs):
                outputs.clear()
            return True

    def forget_cell(self, cell_id: str) -> None:
        """Drop what is remembered about a cell (e.g. deleted); the document is not touched."""
        state = self._cells.pop(cell_id, None)
        if state is not None:
            self._unregister(cell_id, state)

    def handle(self, cell_id: str, msg_type: str, content: dict[str, Any]) -> bool:
        """Apply one iopub message of a run of ``cell_id``, in one transaction; False when the
        type is not handled or the cell is gone (``update_display_data`` updates its targets
        in any cell whether or not this one exists)."""
        if msg_type not in HANDLED:
            return False
        with self._doc.transaction():
            try:
                return self._dispatch(cell_id, msg_type, content)
            except MalformedOutput as exc:
                return self._report(cell_id, msg_type, str(exc))

    # -- dispatch ---------------------------------------------------------------------------

    def _dispatch(self, cell_id: str, msg_type: str, content: object) -> bool:
        self.touched.add(cell_id)
        if msg_type == "update_display_data":
            self._update_display(message_content(content))
            return True
        outputs = self._outputs(cell_id)
        if outputs is None:
            self.forget_cell(cell_id)
            return False
        content = message_content(content)
        state = self._state(cell_id)
        if msg_type == "stream":
            name, text = stream_content(content)
            self._stream(cell_id, state, outputs, name, text)
        elif msg_type in ("display_data", "execute_result"):
            output = self._capped(rich_output(msg_type, content))
            self._append(cell_id, state, outputs, output, display_id_of(content))
        elif msg_type == "error":
            self._append(cell_id, state, outputs, error_output(content))
        elif msg_type == "clear_output":
            if content.get("wait"):
                state.pending_clear = True
            else:
                self._clear_outputs(cell_id, state, outputs)
        else:  # execute_input: the count shows when the run ends, with the cell idle
            count = content.get("execution_count")
            if is_count(count) and count is not None:
                state.execution_count = count
        return True

    def _report(self, cell_id: str, msg_type: str, reason: str) -> bool:
        """Write a malformed message as an error output in its cell."""
        outputs = self._outputs(cell_id)
        if outputs is None:
            return False
        evalue = f"malformed {msg_type} message from the kernel: {reason}"
        output = {
            "output_type": "error",
            "ename": ERROR_NAME,
            "evalue": evalue,
            "traceback": [f"{ERROR_NAME}: {evalue}"],
        }
        self._append(cell_id, self._state(cell_id), outputs, output)
        return True

    # -- cells ------------------------------------------------------------------------------

    def _outputs(self, cell_id: str) -> Array[Any] | None:
        """The cell's outputs (None: no such code cell)."""
        ycell = find_cell(self._notebook, cell_id)
        outputs = ycell.get("outputs") if ycell is not None else None
        return outputs if isinstance(outputs, Array) else None

    def _state(self, cell_id: str) -> _CellState:
        state = self._cells.get(cell_id)
        if state is None:
            state = self._cells[cell_id] = _CellState()
        return state

    def _clear_outputs(self, cell_id: str, state: _CellState, outputs: Array[Any]) -> None:
        if len(outputs):
            outputs.clear()
        self._unregister(cell_id, state)
        state.pending_clear = False
        state.last = state.cut = None
        state.stream_bytes = 0

    def _append(
        self,
        cell_id: str,
        state: _CellState,
        outputs: Array[Any],
        output: Output,
        display_id: str | None = None,
    ) -> None:
        """Add a non-stream output (after a pending clear)."""
        if state.pending_clear:
            self._clear_outputs(cell_id, state, outputs)
        youtput: Map[Any] = Map(output)
        outputs.append(youtput)
        state.last = None
        if display_id is not None:
            self._displays.setdefault(display_id, []).append((cell_id, youtput))
            state.display_ids.add(display_id)

    # -- display ids ------------------------------------------------------------------------

    def _update_display(self, content: dict[str, Any]) -> None:
        display_id = display_id_of(content)
        if display_id is None:
            raise MalformedOutput("transient.display_id is missing")
        output = self._capped(rich_output("display_data", content))
        targets = self._keep_targets(display_id, lambda _cell_id, youtput: _alive(youtput))
        for target_id, youtput in targets:
            self.touched.add(target_id)
            youtput["data"] = output["data"]
            youtput["metadata"] = output["metadata"]

    def _unregister(self, cell_id: str, state: _CellState) -> None:
        for display_id in state.display_ids:
            self._keep_targets(display_id, lambda target_id, _youtput: target_id != cell_id)
        state.display_ids.clear()

    def _keep_targets(
        self, display_id: str, keep: Callable[[str, Map[Any]], bool]
    ) -> list[tuple[str, Map[Any]]]:
        """Keep the display's targets for which ``keep`` holds (forget it if none); return them."""
        targets = [t for t in self._displays.get(display_id, ()) if keep(*t)]
        if targets:
            self._displays[display_id] = targets
        else:
            self._displays.pop(display_id, None)
        return targets

    def _capped(self, output: Output) -> Output:
        """``output``, or a visible note in its place when its JSON is over the limit."""
        size = json_size(output)
        if size <= self.max_output_bytes:
            return output
        kinds = ", ".join(output["data"]) or "no data"
        note = f"[output too large: {size} bytes ({kinds}), limit {self.max_output_bytes} bytes]"
        return {**output, "data": {"text/plain": note}, "metadata": {}}

    # -- streams ----------------------------------------------------------------------------

    def _stream(
        self, cell_id: str, state: _CellState, outputs: Array[Any], name: str, text: str
    ) -> None:
        if state.pending_clear:
            self._clear_outputs(cell_id, state, outputs)
        cut = state.cut
        if cut is not None and _alive(cut.output):
            self._count_dropped(cut, nbytes(text))
            return
        if cut is not None:  # the note went with its output (cleared by a peer): start over
            state.cut = state.last = None
            state.stream_bytes = _stream_bytes(outputs)
        stream = self._last_stream(state, outputs, name)
        if stream is None:
            stream = self._new_stream(state, outputs, name)
        self._feed(state, stream, text)

    def _last_stream(self, state: _CellState, outputs: Array[Any], name: str) -> _Stream | None:
        """The stream to append to: the tracked one if still last and untouched, else re-read."""
        count = len(outputs)
        last = state.last
        if (
            last is not None
            and last.position == count - 1
            and _alive(last.output)
            and len(last.text) == last.nbytes
        ):
            return last if last.name == name else None
        state.last = None
        youtput = outputs[count - 1] if count else None
        if (not isinstance(youtput, Map) or youtput.get("output_type") != "stream"
                or youtput.get("name") != name):  # fmt: skip
            return None
        return self._adopt(state, outputs, youtput, count - 1)

    def _adopt(
        self, state: _CellState, outputs: Array[Any], youtput: Map[Any], position: int
    ) -> _Stream:
        """Track a stream output not written (or no longer known) by this writer."""
        ytext = youtput.get("text")
        if not isinstance(ytext, Text):
            old = "".join(ytext) if isinstance(ytext, list) else str(ytext or "")
            ytext = Text(utf8(old))
            youtput["text"] = ytext
        value = str(ytext)
        line = _Line(value[value.rfind("\n") + 1 :])
        stream = _Stream(youtput, ytext, str(youtput.get("name")), position, len(ytext), line)
        state.stream_bytes = _stream_bytes(outputs)
        state.last = stream
        return stream

    def _new_stream(self, state: _CellState, outputs: Array[Any], name: str) -> _Stream:
        ytext = Text()
        youtput: Map[Any] = Map({"output_type": "stream", "name": name, "text": ytext})
        outputs.append(youtput)
        state.last = _Stream(youtput, ytext, name, len(outputs) - 1, 0)
        return state.last

    def _feed(self, state: _CellState, stream: _Stream, chunk: str) -> None:
        """Apply ``chunk`` to the stream's last line, editing only the end of its Y text."""
        old_line = stream.line.nbytes
        line_start = stream.nbytes - old_line
        kept, tail = stream.line.feed(chunk)
        at = line_start + kept
        removed = old_line - kept
        if removed:
            del stream.text[at : at + removed]
        state.stream_bytes -= removed
        room = self.max_stream_bytes - state.stream_bytes
        tail, added, dropped = _fit(tail, room, at_line_start=kept == 0)
        if tail:
            stream.text.insert(at, tail)
        stream.nbytes = at + added
        state.stream_bytes += added
        if dropped:
            state.cut, state.last = stream, None
            self._count_dropped(stream, dropped)

    def _count_dropped(self, stream: _Stream, nbytes: int) -> None:
        """Count text that is not stored and show the count in the note ending the stream."""
        stream.dropped += nbytes
        note = (
            f"[output truncated: {stream.dropped} bytes dropped, "
            f"limit {self.max_stream_bytes} bytes]\n"
        )
        keep = common_prefix(stream.note, note)  # the note is ASCII: chars are bytes
        at = stream.nbytes + keep
        if len(stream.note) > keep:
            del stream.text[at : stream.nbytes + len(stream.note)]
        stream.text.insert(at, note[keep:])
        stream.note = note


def _fit(text: str, room: int, *, at_line_start: bool) -> tuple[str, int, int]:
    """``text`` cut to ``room`` bytes (then ending a line, for the note): (text, its bytes,
    bytes dropped)."""
    encoded = text.encode()
    if len(encoded) <= room:
        return text, len(encoded), 0
    head = encoded[: max(room, 0)].decode("utf-8", "ignore")
    dropped = len(encoded) - nbytes(head)
    if not (head.endswith("\n") if head else at_line_start):
        head += "\n"  # the note starts on a line of its own
    return head, nbytes(head), dropped


def _stream_bytes(outputs: Array[Any]) -> int:
    """Bytes of stream text in ``outputs`` (Y text lengths are in bytes)."""
    total = 0
    for youtput in outputs:
        if isinstance(youtput, Map) and youtput.get("output_type") == "stream":
            text = youtput.get("text")
            total += len(text) if isinstance(text, Text) else nbytes(str(text or ""))
    return total
