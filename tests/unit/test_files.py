"""Reading a notebook file: our v4 fast path gives exactly what nbformat's reader gives, and
falls back to nbformat (and its error message) for anything it would not accept."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import nbformat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nbformat.warnings import DuplicateCellId, MissingIDFieldWarning

from kernel_collab.notebook_core import files, schema_check
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


@pytest.mark.parametrize("minor", ["5", None, 4.0])
def test_a_minor_version_that_is_not_an_integer_gets_a_clear_error(
    tmp_path: Path, minor: Any
) -> None:
    """nbformat asserts it (a bare AssertionError, which stopped the sidecar with a
    traceback)."""
    nb = json.loads((EXAMPLES / "demo.ipynb").read_text())
    nb["nbformat_minor"] = minor
    with pytest.raises(files.NotebookFileError, match=r"nbformat_minor .* is not an integer"):
        files.parse(tmp_path / "x.ipynb", json.dumps(nb).encode())


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


def _nbformat_accepts(nb: dict[str, Any]) -> bool:
    try:
        with warnings.catch_warnings():  # it warns of the ids it repairs
            warnings.simplefilter("ignore", MissingIDFieldWarning)
            warnings.simplefilter("ignore", DuplicateCellId)
            nbformat.validate(copy.deepcopy(nb))
    except Exception:  # noqa: BLE001 - nbformat also raises TypeError, AssertionError...
        return False
    return True


def _breakages(nb: dict[str, Any], data: st.DataObject) -> None:
    """Break the notebook the ways files break: wrong types, unknown or missing fields, kinds
    that do not exist, repeated or missing ids, another minor version."""
    cells = nb["cells"]
    cell = data.draw(st.sampled_from(cells)) if cells else None
    outputs = (cell or {}).get("outputs") or []
    output = data.draw(st.sampled_from(outputs)) if outputs else None
    moves: list[Any] = [
        lambda: None,
        lambda: nb.update(nbformat_minor=data.draw(st.sampled_from([0, 4, 5, 9, "5", True]))),
        lambda: nb.update(extra=1),
        lambda: nb["metadata"].update(kernelspec={"name": 3}),
        lambda: nb.update(cells=None),
    ]
    if cell is not None:
        moves += [
            lambda: cell.pop(data.draw(st.sampled_from(sorted(cell)))),
            lambda: cell.update(cell_type=data.draw(st.sampled_from(["python", 1, None]))),
            lambda: cell.update(execution_count=data.draw(st.sampled_from(["1", -1, 2.5, None]))),
            lambda: cell.update(outputs=data.draw(st.sampled_from([[], {}, ["x"], [1]]))),
            lambda: cell.update(source=data.draw(st.sampled_from([["a", 1], 3, ["a"]]))),
            lambda: cell.update(unknown=True),
            lambda: cell.update(id=data.draw(st.sampled_from(["", "bad id!", "c0", 7]))),
            lambda: cell.setdefault("metadata", {}).update(collapsed="yes"),
        ]
    if output is not None:
        moves += [
            lambda: output.pop(data.draw(st.sampled_from(sorted(output)))),
            lambda: output.update(output_type=data.draw(st.sampled_from(["pyout", None, 2]))),
            lambda: output.update(name=data.draw(st.sampled_from(["stdin", 1, "stderr"]))),
            lambda: output.update(data={"text/plain": 3}),
            lambda: output.update(execution_count="one"),
            lambda: output.update(unknown=True),
        ]
    for move in data.draw(st.lists(st.sampled_from(moves), max_size=2)):
        move()


@settings(max_examples=400, deadline=None)
@given(notebooks(), st.data())
def test_the_cell_by_cell_check_accepts_what_nbformat_accepts(
    nb: dict[str, Any], data: st.DataObject
) -> None:
    """It accepts exactly the notebooks nbformat accepts unchanged; the ones nbformat repairs
    (missing or repeated ids) it leaves to nbformat."""
    nb = copy.deepcopy(nb)
    _breakages(nb, data)
    cells = nb.get("cells")
    ids = [c.get("id") for c in cells if isinstance(c, dict)] if isinstance(cells, list) else []
    repaired = nb.get("nbformat_minor") in (5, 9) and (None in ids or len(set(ids)) < len(ids))
    assert schema_check.plainly_valid(copy.deepcopy(nb)) == (
        _nbformat_accepts(nb) and not repaired and nb.get("nbformat_minor") in range(6)
    )


def test_the_cell_by_cell_check_accepts_the_examples() -> None:
    """Real notebooks take the fast path (a check that always said "ask nbformat" would pass
    the test above)."""
    for path in sorted(EXAMPLES.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        assert _nbformat_accepts(nb)
        assert schema_check.plainly_valid(nb), path.name


def test_repeated_or_missing_ids_are_left_to_nbformat_which_repairs_them() -> None:
    nb = json.loads((EXAMPLES / "demo.ipynb").read_text())
    assert schema_check.plainly_valid(copy.deepcopy(nb))
    nb["cells"][1]["id"] = nb["cells"][0]["id"]
    assert not schema_check.plainly_valid(copy.deepcopy(nb))
    with pytest.warns(DuplicateCellId):
        repaired = files.parse(Path("x.ipynb"), json.dumps(nb).encode())
    ids = [cell["id"] for cell in repaired["cells"]]
    assert len(set(ids)) == len(ids) == len(nb["cells"])
    del nb["cells"][1]["id"]
    assert not schema_check.plainly_valid(copy.deepcopy(nb))
    with pytest.warns(MissingIDFieldWarning):
        assert files.parse(Path("x.ipynb"), json.dumps(nb).encode())["cells"][1]["id"]
