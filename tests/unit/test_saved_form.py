"""The incremental saved form writes exactly nbformat's bytes, whatever changed in between."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_collab.notebook_core import files
from kernel_collab.notebook_core.saved_form import SavedForm

TEXT = st.text(alphabet="ab \n\t\"\\😀é\u2028<>/", max_size=20)
MIME = st.sampled_from(["text/plain", "text/html", "image/png", "application/json",
                        "image/svg+xml", "application/javascript"])  # fmt: skip


@st.composite
def outputs(draw: st.DrawFn) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["stream", "execute_result", "display_data", "error"]))
        if kind == "stream":
            name = draw(st.sampled_from(["stdout", "stderr"]))
            out.append({"output_type": "stream", "name": name, "text": draw(TEXT)})
        elif kind == "error":
            out.append({"output_type": "error", "ename": "E", "evalue": draw(TEXT),
                        "traceback": draw(st.lists(TEXT, max_size=2))})  # fmt: skip
        else:
            data = {m: ({"a": draw(TEXT)} if m == "application/json" else draw(TEXT))
                    for m in draw(st.sets(MIME, min_size=1, max_size=3))}  # fmt: skip
            output: dict[str, Any] = {"output_type": kind, "data": data, "metadata": {}}
            if kind == "execute_result":
                output["execution_count"] = draw(st.integers(1, 99))
            out.append(output)
    return out


@st.composite
def cells(draw: st.DrawFn, cid: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["code", "markdown", "raw"]))
    metadata: dict[str, Any] = draw(st.sampled_from([{}, {"trusted": True}, {"tags": ["x"]},
                                                     {"collapsed": False, "ü": "ä"}]))  # fmt: skip
    cell: dict[str, Any] = {"cell_type": kind, "id": cid, "metadata": copy.deepcopy(metadata),
                            "source": draw(TEXT)}  # fmt: skip
    if kind == "code":
        cell["execution_count"] = draw(st.none() | st.integers(1, 99))
        cell["outputs"] = draw(outputs())
    elif draw(st.booleans()):
        cell["attachments"] = {"a.png": {"image/png": "iVBO", "text/plain": draw(TEXT)}}
    return cell


@st.composite
def notebooks(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(0, 5))
    metadata = draw(st.sampled_from([{}, {"orig_nbformat": 3, "kernelspec": {
        "name": "python3", "display_name": "P", "language": "python"}},
        {"signature": "sha256:x", "language_info": {"name": "python"}}]))
    return {"cells": [draw(cells(f"c{n}")) for n in range(count)], "metadata": metadata,
            "nbformat": 4, "nbformat_minor": 5}  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(notebooks(), st.data())
def test_every_render_is_nbformats_own_bytes(nb: dict[str, Any], data: st.DataObject) -> None:
    form = SavedForm()
    assert form.render(nb) == files.serialize(nb)
    # Change some cells (the caller names them), drop one, add one: still exact.
    later = copy.deepcopy(nb)
    changed = set()
    for cell in later["cells"]:
        if data.draw(st.booleans()):
            cell["source"] = data.draw(TEXT)
            changed.add(cell["id"])
    if later["cells"] and data.draw(st.booleans()):
        later["cells"].pop(data.draw(st.integers(0, len(later["cells"]) - 1)))
    if data.draw(st.booleans()):
        later["cells"].insert(0, data.draw(cells("new")))
    later["metadata"]["tags"] = data.draw(st.lists(TEXT, max_size=2))
    assert form.render(later, changed) == files.serialize(later)
    assert form.render(later, set()) == files.serialize(later)


def test_an_invalid_cell_is_refused_and_nothing_is_kept() -> None:
    nb: dict[str, Any] = {"cells": [{"cell_type": "code", "id": "a", "metadata": {}, "source": "x",
                     "execution_count": None, "outputs": []}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}  # fmt: skip
    form = SavedForm()
    form.render(nb)
    nb["cells"][0]["outputs"] = [{"output_type": "nonsense"}]
    with pytest.raises(files.NotebookFileError):
        form.render(nb, {"a"})


@pytest.mark.filterwarnings("ignore::nbformat.warnings.DuplicateCellId")
def test_cells_without_unique_ids_fall_back_to_nbformat() -> None:
    """nbformat's writer repairs a duplicate id with a random one: the same, ids aside."""
    cell = {"cell_type": "markdown", "id": "same", "metadata": {}, "source": "x"}
    nb = {"cells": [cell, dict(cell)], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}

    def without_ids(data: bytes) -> list[dict[str, Any]]:
        cells: list[dict[str, Any]] = json.loads(data)["cells"]
        assert cells[0]["id"] == "same" and cells[1]["id"] != "same"
        return [{k: v for k, v in c.items() if k != "id"} for c in cells]

    assert without_ids(SavedForm().render(nb, set())) == without_ids(files.serialize(nb))
