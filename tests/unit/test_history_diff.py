"""The history diff's summary (``kernel_collab.server.history.summarise``): nbdime's cell
alignment corrected by cell id, so each cell is added, removed, moved, modified or unchanged."""

from __future__ import annotations

import json
from typing import Any

import nbformat

from kernel_collab.server.history import summarise


def _notebook(*cells: tuple[str, str], outputs: dict[str, str] | None = None) -> dict[str, Any]:
    """A notebook of code cells ``(id, source)``, as a file holds it (sources as lines)."""
    made = []
    for cell_id, source in cells:
        cell = nbformat.v4.new_code_cell(source, id=cell_id)
        if outputs and cell_id in outputs:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                                   text=outputs[cell_id])]  # fmt: skip
        made.append(cell)
    notebook: dict[str, Any] = json.loads(nbformat.writes(nbformat.v4.new_notebook(cells=made)))
    return notebook


def _by_id(summary: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["id"]: entry for entry in summary}


def test_each_kind_of_change_is_named_by_cell_id() -> None:
    old = _notebook(("a", "x = 1"), ("b", "y = 2\nz = 3"), ("c", "print(1)"), ("d", "q = 1"),
                    ("f", "same"))  # fmt: skip
    new = _notebook(("c", "print(1)"), ("a", "x = 1"), ("b", "y = 2\nz = 4"), ("e", "q = 1"),
                    ("f", "same"))  # fmt: skip
    summary = summarise(old, new)
    assert [(e["id"], e["status"]) for e in summary] == [
        ("c", "moved"), ("a", "unchanged"), ("b", "modified"),
        # nbdime matches d and e by content; they are different cells.
        ("d", "removed"), ("e", "added"), ("f", "unchanged"),
    ]  # fmt: skip
    cells = _by_id(summary)
    assert (cells["c"]["old_index"], cells["c"]["new_index"]) == (2, 0)
    assert not cells["c"]["source_changed"] and "source_diff" not in cells["c"]
    assert cells["b"]["source_changed"] and not cells["b"]["outputs_changed"]
    assert cells["b"]["source_diff"] == "@@ -1,2 +1,2 @@\n y = 2\n-z = 3\n+z = 4"
    assert (cells["d"]["old_index"], cells["d"]["new_index"]) == (3, None)
    assert cells["d"]["source_diff"] == "@@ -1 +0,0 @@\n-q = 1"
    assert (cells["e"]["old_index"], cells["e"]["new_index"]) == (None, 3)


def test_a_moved_cell_says_what_changed_in_it() -> None:
    old = _notebook(("a", "one"), ("b", "two"), ("c", "three"))
    new = _notebook(("c", "three!"), ("a", "one"), ("b", "two"), outputs={"c": "3\n"})
    cells = _by_id(summarise(old, new))
    assert cells["c"]["status"] == "moved"
    assert cells["c"]["source_changed"] and cells["c"]["outputs_changed"]
    assert cells["c"]["source_diff"] == "@@ -1 +1 @@\n-three\n+three!"
    assert [cells[i]["status"] for i in "ab"] == ["unchanged", "unchanged"]


def test_outputs_count_only_when_both_versions_kept_them() -> None:
    old = _notebook(("a", "print(1)"), outputs={"a": "1\n"})
    new = _notebook(("a", "print(1)"), outputs={"a": "one\n"})
    assert summarise(old, new)[0] | {"id": "a"} == {
        "id": "a", "status": "modified", "source_changed": False, "outputs_changed": True,
        "old_index": 0, "new_index": 0,
    }  # fmt: skip
    assert summarise(old, new, compare_outputs=False)[0]["status"] == "unchanged"


def test_identical_and_empty_notebooks() -> None:
    same = _notebook(("a", "x"), ("b", "y"))
    assert [e["status"] for e in summarise(same, same)] == ["unchanged", "unchanged"]
    assert summarise(_notebook(), _notebook()) == []
    added = summarise(_notebook(), same)
    assert [(e["id"], e["status"], e["new_index"]) for e in added] == [
        ("a", "added", 0), ("b", "added", 1)]  # fmt: skip
