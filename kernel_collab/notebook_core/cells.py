"""One set of cell helpers: a shared notebook, find a cell by id, new ids, normalised cells, one
text diff."""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import accumulate
from typing import Any, Final

from jupyter_ydoc import YNotebook
from pycrdt import Doc, Map, Text

from .cell_ids import cell_ids, id_of

Cell = dict[str, Any]

NO_DOCUMENT_UNDO: Final = "kernel_collab:no-document-undo"
"""The only origin a :func:`shared_notebook`'s document-wide undo manager tracks; nobody uses it."""


def shared_notebook(doc: Doc[Any] | None = None) -> YNotebook:
    """A ``YNotebook`` whose document-wide undo history stays empty: jupyter_ydoc's undo manager
    records every transaction and keeps what they deleted (a replica living for hours grew about
    0.5 KB per edit); nothing here undoes document-wide (nor do JupyterLab's shared models)."""
    notebook = YNotebook(doc)
    notebook.undo_manager.include_origin(NO_DOCUMENT_UNDO)
    notebook.undo_manager.clear()
    return notebook


def find_cell(notebook: YNotebook, cell_id: str) -> Map[Any] | None:
    """The Y cell with that id, if any."""
    index = cell_index(notebook, cell_id)
    return notebook.ycells[index] if index is not None else None


def cell_index(notebook: YNotebook, cell_id: str) -> int | None:
    """The index of the first cell with that id, if any (from the ids followed by
    :func:`~.cell_ids.cell_ids`, checked against the cell found; read again if they disagree)."""
    ids = cell_ids(notebook)
    for _ in range(2):
        index = ids.position(cell_id)
        if index is None:
            return None
        if index < len(notebook.ycells) and id_of(notebook.ycells[index]) == cell_id:
            return index
        ids.reset()  # never expected: the ids followed went wrong; read them again
    return None


def new_cell_id() -> str:
    """A new nbformat cell id (what ``nbformat.v4.new_code_cell`` would use)."""
    return uuid.uuid4().hex[:8]


def normalise(cell: Mapping[str, Any]) -> Cell:
    """A shallow copy as ``YNotebook.get()`` shows a cell: a str source, a metadata dict,
    ``cell_type`` (code by default), code cells' outputs and count, no empty attachments."""
    out = dict(cell)
    source = out.get("source", "")
    out["source"] = "".join(source) if isinstance(source, list) else str(source)
    metadata = out.get("metadata")
    out["metadata"] = dict(metadata) if isinstance(metadata, Mapping) else {}
    out.setdefault("cell_type", "code")
    if out["cell_type"] == "code":
        out["outputs"] = list(out.get("outputs") or [])
        out.setdefault("execution_count", None)
    if "attachments" in out and not out["attachments"]:
        del out["attachments"]
    return out


_REFINE_LIMIT: Final = 2000
"""Changed line blocks up to this many characters (both sides) are diffed by character."""

# --- text: one diff, for every text a peer or the file changes --------------------------


def set_text(ytext: Text, new: str) -> bool:
    """Edit ``ytext`` into ``new`` with minimal inserts and deletes; return whether it
    changed. pycrdt indexes Text by UTF-8 byte, so positions are tracked in bytes."""
    old = str(ytext)
    if old == new:
        return False
    position = 0
    with ytext.doc.transaction():  # one update: others never see the text half-edited
        for tag, i1, i2, j1, j2 in text_opcodes(old, new):
            if tag == "equal":
                position += nbytes(old[i1:i2])
                continue
            if i2 > i1:
                del ytext[position : position + nbytes(old[i1:i2])]
            if j2 > j1:
                ytext.insert(position, new[j1:j2])
                position += nbytes(new[j1:j2])
    return True


def nbytes(text: str) -> int:
    """Length in UTF-8 bytes (pycrdt's unit for Text positions and lengths)."""
    return len(text.encode())


Opcode = tuple[str, int, int, int, int]


def text_opcodes(old: str, new: str) -> Iterator[Opcode]:
    """difflib-style opcodes (in ``str`` indices) turning ``old`` into ``new``: common prefix
    and suffix, then a line diff whose small changed blocks are refined by character."""
    prefix = common_prefix(old, new)
    suffix = common_suffix(old, new, min(len(old), len(new)) - prefix)
    if prefix:
        yield "equal", 0, prefix, 0, prefix
    yield from _middle_opcodes(
        old[prefix : len(old) - suffix], new[prefix : len(new) - suffix], prefix
    )
    if suffix:
        yield "equal", len(old) - suffix, len(old), len(new) - suffix, len(new)


def common_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the common prefix, by binary search over C-speed slice comparisons."""
    return _longest(min(len(a), len(b)), lambda n: a[:n] == b[:n])


def common_suffix(a: Sequence[Any], b: Sequence[Any], limit: int) -> int:
    """Length of the common suffix, at most ``limit`` (as :func:`common_prefix`)."""
    return _longest(limit, lambda n: a[len(a) - n :] == b[len(b) - n :])


def _longest(limit: int, same: Callable[[int], bool]) -> int:
    """The largest ``n <= limit`` for which ``same(n)`` holds (it holds for all smaller)."""
    low, high = 0, limit
    while low < high:
        mid = (low + high + 1) // 2
        if same(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _middle_opcodes(old: str, new: str, offset: int) -> Iterator[Opcode]:
    old_lines, new_lines = old.splitlines(True), new.splitlines(True)
    old_at = list(accumulate(map(len, old_lines), initial=0))  # line starts, then the end
    new_at = list(accumulate(map(len, new_lines), initial=0))
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        a1, a2, b1, b2 = old_at[i1], old_at[i2], new_at[j1], new_at[j2]
        if tag == "replace" and (a2 - a1) + (b2 - b1) <= _REFINE_LIMIT:
            chars = difflib.SequenceMatcher(None, old[a1:a2], new[b1:b2], autojunk=False)
            for op, c1, c2, d1, d2 in chars.get_opcodes():
                yield op, offset + a1 + c1, offset + a1 + c2, offset + b1 + d1, offset + b1 + d2
        else:
            yield tag, offset + a1, offset + a2, offset + b1, offset + b2
