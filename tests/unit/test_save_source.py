"""A save's incremental view of the document is always what jupyter_ydoc and nbformat give."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
from hypothesis import given, settings
from hypothesis import strategies as st
from jupyter_ydoc import YNotebook
from pycrdt import Array, Map, Text

from kernel_collab.notebook_core import files
from kernel_collab.sidecar.save_source import SaveSource

TEXT = st.text(alphabet="ab\n😀é", max_size=8)


def _code(cid: str, source: str) -> dict[str, Any]:
    return {"cell_type": "code", "id": cid, "metadata": {}, "source": source,
            "execution_count": None, "outputs": []}  # fmt: skip


def _act(nb: YNotebook, action: str, n: int, text: str, serial: int) -> None:
    cells = nb.ycells
    i = n % len(cells) if len(cells) else 0
    if action == "append" or not len(cells):
        nb.append_cell(_code(f"n{serial}", text))
    elif action == "source":
        source = cells[i]["source"]
        assert isinstance(source, Text)
        source += text
    elif action == "output":
        outputs = cells[i].get("outputs")
        if isinstance(outputs, Array):
            outputs.append(Map({"output_type": "stream", "name": "stdout", "text": Text(text)}))
    elif action == "delete":
        del cells[i]
    elif action == "move":
        with nb.ydoc.transaction():
            cell = cells[i].to_py()
            del cells[i]
            cells.insert(0, nb.create_ycell(cell))
    elif action == "id":
        cells[i]["id"] = f"r{serial}"
    elif action == "meta":
        nb.ydoc.get("meta", type=Map)["metadata"] = Map({"tags": text})


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["append", "source", "output", "delete", "move",
                                             "id", "meta"]), st.integers(0, 9), TEXT,
                          st.booleans()), max_size=25))  # fmt: skip
def test_every_snapshot_and_render_is_the_whole_documents(
    actions: list[tuple[str, int, str, bool]],
) -> None:
    nb = YNotebook()
    nb.set({"cells": [_code(f"c{k}", f"x = {k}") for k in range(3)], "metadata": {},
            "nbformat": 4, "nbformat_minor": 5})  # fmt: skip
    source = SaveSource(nb)
    for serial, (action, n, text, save) in enumerate(actions):
        _act(nb, action, n, text, serial)
        if save:  # saves come now and then, several changes apart
            snapshot, unrendered = source.snapshot()
            assert snapshot == nb.get()
            assert source.render(snapshot, unrendered) == files.serialize(nb.get())
            # What it keeps between saves is the notebook's cells, not every cell it ever had.
            assert len(source._cells) <= len(nb.ycells)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 12), st.lists(st.tuples(st.sampled_from(["append", "source", "output",
                                                             "delete", "move", "id", "meta"]),
                                              st.integers(0, 9), TEXT), max_size=12))  # fmt: skip
def test_a_snapshot_taken_while_the_document_changes_is_the_document_at_one_instant(
    first: int, actions: list[tuple[str, int, str]],
) -> None:
    """Converted a few cells at a time with edits landing in between, a save still sees the
    whole document as it is when the snapshot completes."""
    nb = YNotebook()
    nb.set({"cells": [_code(f"c{k}", f"x = {k}") for k in range(10)], "metadata": {},
            "nbformat": 4, "nbformat_minor": 5})  # fmt: skip
    source = SaveSource(nb)
    for serial in range(first):  # some changed before, some saved before
        _act(nb, "source", serial, "y", serial)
        if serial % 5 == 4:
            source.snapshot()

    async def main() -> None:
        async def edit() -> None:
            for serial, (action, n, text) in enumerate(actions, start=100):
                _act(nb, action, n, text, serial)
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(edit)
            snapshot, unrendered = await source.snapshot_soon(chunk=2)
            assert snapshot == nb.get()  # no turn of the loop since the snapshot was taken
            assert source.render(snapshot, unrendered) == files.serialize(nb.get())
        snapshot, unrendered = source.snapshot()
        assert snapshot == nb.get()
        assert source.render(snapshot, unrendered) == files.serialize(nb.get())

    anyio.run(main)
