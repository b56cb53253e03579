"""Reading a notebook file: our v4 fast path gives exactly what nbformat's reader gives, and
falls back to nbformat (and its error message) for anything it would not accept."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_collab.notebook_core import files
from tests.unit.test_saved_form import notebooks

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _nbformat_reads(text: str) -> dict[str, Any]:
    return files._to_plain(nbformat.reads(text, as_version=4))  # type: ignore[no-any-return]


def _ours(text: str) -> dict[str, Any]:
    fast = files._read_v4(json.loads(text))
    assert fast is not None, "the fast path refused a valid notebook"
    return fast


@settings(max_examples=150, deadline=None)
@given(notebooks(), st.booleans(), st.data())
def test_the_fast_path_reads_what_nbformat_reads(
    nb: dict[str, Any], split: bool, data: st.DataObject
) -> None:
    """Files as Jupyter writes them (split lines) and as other tools do (whole strings), with
    transient fields a file may carry (a signature, ``trusted``, ``orig_nbformat``)."""
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        if data.draw(st.booleans()):
            cell["metadata"]["trusted"] = data.draw(st.booleans())
    text = files.serialize(nb).decode() if split else json.dumps(nb)
    assert _ours(text) == _nbformat_reads(text)


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.ipynb")))
def test_the_examples_read_the_same_both_ways(name: str) -> None:
    text = (EXAMPLES / name).read_text()
    assert _ours(text) == _nbformat_reads(text)


def test_an_older_v4_notebook_without_ids_reads_the_same() -> None:
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# a\n", "b"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 4}  # fmt: skip
    text = json.dumps(nb)
    assert _ours(text) == _nbformat_reads(text)
    assert _ours(text)["cells"][0]["source"] == "# a\nb"


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda nb: nb["cells"][0].pop("source"), "not a valid notebook"),
        (lambda nb: nb["cells"][0].update(cell_type="python"), "not a valid notebook"),
        (lambda nb: nb.update(cells={"a": 1}), "not a valid notebook"),
        (lambda nb: nb["cells"].append("text"), "not a valid notebook"),
        (lambda nb: nb.pop("metadata"), "not a valid notebook"),
    ],
)
def test_an_invalid_notebook_gets_nbformat_s_error(
    tmp_path: Path, breakage: Any, message: str
) -> None:
    nb = json.loads((EXAMPLES / "demo.ipynb").read_text())
    breakage(nb)
    text = json.dumps(nb)
    assert files._read_v4(json.loads(text)) is None
    with pytest.raises(files.NotebookFileError, match=message) as raised:
        files.parse(tmp_path / "x.ipynb", text.encode())
    assert str(raised.value).startswith(str(tmp_path / "x.ipynb"))


def test_json_outputs_that_are_lists_of_strings_stay_lists() -> None:
    """Split lines are rejoined in text mimetypes only: JSON data is data."""
    data = {"application/json": ["a", "b"], "application/vnd.x+json": ["c"],
            "text/plain": ["d\n", "e"]}  # fmt: skip
    nb = {"cells": [{"cell_type": "code", "id": "c", "metadata": {}, "source": "", "outputs": [
        {"output_type": "display_data", "data": data, "metadata": {}}], "execution_count": None}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}  # fmt: skip
    text = json.dumps(nb)
    assert _ours(text) == _nbformat_reads(text)
    assert _ours(text)["cells"][0]["outputs"][0]["data"] == {
        "application/json": ["a", "b"], "application/vnd.x+json": ["c"], "text/plain": "d\ne"}
