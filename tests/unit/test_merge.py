"""Three-way notebook merge: every rule of ``kernel_collab.sidecar.merge``."""

from __future__ import annotations

import copy
import itertools
import time
from typing import Any

import nbformat
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_collab.notebook_core.merge import (
    Conflict,
    MergeResult,
    increasing_subsequence,
    three_way_merge,
)

Cell = dict[str, Any]
Notebook = dict[str, Any]


def code(cid: str | None, source: str, **fields: Any) -> Cell:
    cell: Cell = {
        "cell_type": "code",
        "source": source,
        "metadata": {},
        "outputs": [],
        "execution_count": None,
    }
    if cid is not None:
        cell["id"] = cid
    cell.update(fields)
    return cell


def markdown(cid: str | None, source: str, **fields: Any) -> Cell:
    cell: Cell = {"cell_type": "markdown", "source": source, "metadata": {}}
    if cid is not None:
        cell["id"] = cid
    cell.update(fields)
    return cell


def notebook(*cells: Cell, minor: int = 5, **metadata: Any) -> Notebook:
    return {"cells": list(cells), "metadata": metadata, "nbformat": 4, "nbformat_minor": minor}


def base_notebook() -> Notebook:
    return notebook(
        code("a", "import os\n"),
        code("b", "x = 1\ny = 2\nz = 3\n"),
        markdown("c", "# Title\n"),
        code("d", "print(x)\n"),
        kernelspec={"name": "python3"},
    )


def stream(text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text}


def ids(result: MergeResult) -> list[str]:
    return [cell["id"] for cell in result.notebook["cells"]]


def sources(result: MergeResult) -> list[str]:
    return [cell["source"] for cell in result.notebook["cells"]]


def cell(result: MergeResult, cid: str) -> Cell:
    found: list[Cell] = [c for c in result.notebook["cells"] if c["id"] == cid]
    assert len(found) == 1
    return found[0]


def edit(nb: Notebook, cid: str, **fields: Any) -> Notebook:
    out = copy.deepcopy(nb)
    for c in out["cells"]:
        if c.get("id") == cid:
            c.update(fields)
    return out


def without(nb: Notebook, cid: str) -> Notebook:
    out = copy.deepcopy(nb)
    out["cells"] = [c for c in out["cells"] if c.get("id") != cid]
    return out


def reorder(nb: Notebook, order: list[str]) -> Notebook:
    out = copy.deepcopy(nb)
    by_id = {c["id"]: c for c in out["cells"]}
    out["cells"] = [by_id[cid] for cid in order]
    return out


def insert(nb: Notebook, index: int, new: Cell) -> Notebook:
    out = copy.deepcopy(nb)
    out["cells"].insert(index, new)
    return out


# --- per-cell fields -------------------------------------------------------------------


def test_nothing_changed_is_a_no_op() -> None:
    base = base_notebook()
    result = three_way_merge(base, copy.deepcopy(base), copy.deepcopy(base))
    assert result.notebook == base
    assert result.summary() == (
        "added=0 deleted=0 changed=0 moved=0 kept_live=0 restored=0 conflicts=0 order=live"
    )


def test_disk_only_edit_is_taken() -> None:
    base = base_notebook()
    disk = edit(base, "b", source="x = 10\ny = 2\nz = 3\n")
    result = three_way_merge(base, disk, base)
    assert cell(result, "b")["source"] == "x = 10\ny = 2\nz = 3\n"
    assert result.changed == 1
    assert result.conflicts == []


def test_live_only_edit_is_kept() -> None:
    base = base_notebook()
    live = edit(base, "d", source="print(x, y)\n")
    result = three_way_merge(base, base, live)
    assert cell(result, "d")["source"] == "print(x, y)\n"
    assert result.changed == 0
    assert result.notebook == live


def test_both_edit_different_lines_merges_text() -> None:
    base = base_notebook()
    disk = edit(base, "b", source="x = 10\ny = 2\nz = 3\n")
    live = edit(base, "b", source="x = 1\ny = 2\nz = 30\n")
    result = three_way_merge(base, disk, live)
    assert cell(result, "b")["source"] == "x = 10\ny = 2\nz = 30\n"
    assert result.conflicts == []
    assert "kernel_collab" not in cell(result, "b")["metadata"]


def test_both_edit_same_line_takes_disk_and_records_live_text() -> None:
    base = base_notebook()
    disk = edit(base, "b", source="x = 1\ny = 'disk'\nz = 3\n")
    live = edit(base, "b", source="x = 1\ny = 'live'\nz = 3\n")
    result = three_way_merge(base, disk, live)
    merged = cell(result, "b")
    assert merged["source"] == "x = 1\ny = 'disk'\nz = 3\n"
    assert result.conflicts == [
        Conflict(
            cell_id="b",
            live_source="x = 1\ny = 'live'\nz = 3\n",
            disk_source="x = 1\ny = 'disk'\nz = 3\n",
        )
    ]
    assert merged["metadata"]["kernel_collab"] == {
        "merge_conflict": {"live_source": "x = 1\ny = 'live'\nz = 3\n"}
    }
    assert "conflicts=1" in result.summary()


def test_conflict_record_keeps_other_kernel_collab_metadata() -> None:
    base = edit(base_notebook(), "d", metadata={"kernel_collab": {"owner": "ann"}})
    disk = edit(base, "d", source="print('disk')\n")
    live = edit(base, "d", source="print('live')\n")
    merged = cell(three_way_merge(base, disk, live), "d")
    assert merged["metadata"]["kernel_collab"] == {
        "owner": "ann",
        "merge_conflict": {"live_source": "print('live')\n"},
    }


def test_both_make_the_same_edit() -> None:
    base = base_notebook()
    disk = edit(base, "b", source="same\n", metadata={"tags": ["t"]})
    live = copy.deepcopy(disk)
    result = three_way_merge(base, disk, live)
    assert cell(result, "b")["source"] == "same\n"
    assert cell(result, "b")["metadata"] == {"tags": ["t"]}
    assert result.conflicts == []
    assert result.changed == 0


def test_emoji_and_non_ascii_text_merges() -> None:
    base = edit(base_notebook(), "b", source="s = '😀'\nt = 'é'\nu = '日本'\n")
    disk = edit(base, "b", source="s = '😀👩‍👩‍👧'\nt = 'é'\nu = '日本'\n")
    live = edit(base, "b", source="s = '😀'\nt = 'é'\nu = '日本語'\n")
    result = three_way_merge(base, disk, live)
    assert cell(result, "b")["source"] == "s = '😀👩‍👩‍👧'\nt = 'é'\nu = '日本語'\n"


def test_text_without_final_newline_merges() -> None:
    base = edit(base_notebook(), "b", source="a\nb\nc")
    disk = edit(base, "b", source="A\nb\nc")
    live = edit(base, "b", source="a\nb\nc\nd")
    result = three_way_merge(base, disk, live)
    assert cell(result, "b")["source"] == "A\nb\nc\nd"


def test_cell_metadata_merges_per_key_and_disk_wins_a_clash() -> None:
    base = edit(base_notebook(), "b", metadata={"tags": ["a"], "collapsed": False, "k": 1})
    disk = edit(base, "b", metadata={"tags": ["a", "disk"], "collapsed": False, "k": 2})
    live = edit(base, "b", metadata={"tags": ["a"], "collapsed": True, "k": 3, "new": 1})
    result = three_way_merge(base, disk, live)
    assert cell(result, "b")["metadata"] == {
        "tags": ["a", "disk"],
        "collapsed": True,
        "k": 2,
        "new": 1,
    }


def test_cell_metadata_key_deleted_on_one_side() -> None:
    base = edit(base_notebook(), "b", metadata={"keep": 1, "drop": 2})
    disk = edit(base, "b", metadata={"keep": 1})
    live = edit(base, "b", metadata={"keep": 1, "drop": 2, "added": 3}, source="changed\n")
    assert cell(three_way_merge(base, disk, live), "b")["metadata"] == {"keep": 1, "added": 3}


def test_cell_type_change_on_disk_drops_code_fields() -> None:
    base = edit(base_notebook(), "d", outputs=[stream("x\n")], execution_count=1)
    disk = copy.deepcopy(base)
    disk["cells"][3] = markdown("d", "print(x)\n")
    live = edit(base, "d", metadata={"tags": ["t"]})
    merged = cell(three_way_merge(base, disk, live), "d")
    assert merged == {
        "id": "d",
        "cell_type": "markdown",
        "source": "print(x)\n",
        "metadata": {"tags": ["t"]},
    }


def test_cell_type_change_to_code_adds_code_fields() -> None:
    base = base_notebook()
    disk = copy.deepcopy(base)
    disk["cells"][2] = code("c", "# Title\n")
    live = edit(base, "c", source="# Title\nmore\n")
    merged = cell(three_way_merge(base, disk, live), "c")
    assert merged == code("c", "# Title\nmore\n")


def test_attachments_merge() -> None:
    image = {"image.png": {"image/png": "iVBORw0KGgo="}}
    base = base_notebook()
    disk = edit(base, "c", attachments=image, source="# Title\n![](attachment:image.png)\n")
    live = edit(base, "c", metadata={"tags": ["t"]})
    merged = cell(three_way_merge(base, disk, live), "c")
    assert merged["attachments"] == image
    assert merged["metadata"] == {"tags": ["t"]}


# --- outputs ---------------------------------------------------------------------------


def executed(nb: Notebook) -> Notebook:
    out = copy.deepcopy(nb)
    for n, c in enumerate(out["cells"]):
        if c["cell_type"] == "code":
            c["outputs"] = [stream(f"out {n}\n")]
            c["execution_count"] = n + 1
            c["metadata"] = {"ExecuteTime": {"end": f"t{n}"}, "tags": ["keep"]}
    return out


def nbstripped(nb: Notebook) -> Notebook:
    out = copy.deepcopy(nb)
    for c in out["cells"]:
        if c["cell_type"] == "code":
            c["outputs"] = []
            c["execution_count"] = None
            c["metadata"].pop("ExecuteTime", None)
    return out


def test_outputs_cleared_on_disk_win_when_live_unchanged() -> None:
    base = executed(base_notebook())
    result = three_way_merge(base, nbstripped(base), base)
    assert result.notebook == nbstripped(base)
    assert result.changed == 3


def test_outputs_changed_live_win_over_outputs_cleared_on_disk() -> None:
    base = executed(base_notebook())
    live = edit(base, "b", outputs=[stream("rerun\n")], execution_count=7)
    result = three_way_merge(base, nbstripped(base), live)
    b = cell(result, "b")
    assert (b["outputs"], b["execution_count"]) == ([stream("rerun\n")], 7)
    assert "ExecuteTime" not in b["metadata"]  # metadata still merged per key
    assert b["metadata"] == {"tags": ["keep"]}
    a = cell(result, "a")
    assert (a["outputs"], a["execution_count"]) == ([], None)


def test_outputs_changed_on_disk_only_are_taken() -> None:
    base = base_notebook()
    disk = edit(base, "a", outputs=[stream("disk\n")], execution_count=3)
    merged = cell(three_way_merge(base, disk, base), "a")
    assert (merged["outputs"], merged["execution_count"]) == ([stream("disk\n")], 3)


# --- adding, deleting, moving cells ---------------------------------------------------


def test_cell_added_on_disk_is_inserted_after_its_disk_predecessor() -> None:
    base = base_notebook()
    disk = insert(base, 2, code("n", "new = True\n"))
    live = insert(base, 2, code("l", "live = True\n"))
    result = three_way_merge(base, disk, live)
    assert ids(result) == ["a", "b", "n", "l", "c", "d"]
    assert result.added == 1


def test_cell_added_on_disk_at_the_top() -> None:
    base = base_notebook()
    disk = insert(base, 0, markdown("n", "# Intro\n"))
    assert ids(three_way_merge(base, disk, base)) == ["n", "a", "b", "c", "d"]


def test_consecutive_cells_added_on_disk_keep_their_order() -> None:
    base = base_notebook()
    disk = insert(insert(base, 4, code("n1", "1\n")), 5, code("n2", "2\n"))
    assert ids(three_way_merge(base, disk, base)) == ["a", "b", "c", "d", "n1", "n2"]


def test_cell_added_live_is_kept() -> None:
    base = base_notebook()
    live = insert(base, 1, code("l", "live\n"))
    result = three_way_merge(base, copy.deepcopy(base), live)
    assert result.notebook == live
    assert result.added == 0


def test_cell_deleted_on_disk_and_unchanged_live_is_deleted() -> None:
    base = base_notebook()
    result = three_way_merge(base, without(base, "b"), base)
    assert ids(result) == ["a", "c", "d"]
    assert result.deleted == 1


def test_cell_deleted_on_disk_but_changed_live_is_kept() -> None:
    base = base_notebook()
    live = edit(base, "b", source="x = 1  # edited live\ny = 2\nz = 3\n")
    result = three_way_merge(base, without(base, "b"), live)
    assert ids(result) == ["a", "b", "c", "d"]
    assert cell(result, "b")["source"] == "x = 1  # edited live\ny = 2\nz = 3\n"
    assert result.kept_live == 1
    assert result.deleted == 0


def test_cell_deleted_on_disk_but_run_live_is_kept() -> None:
    base = base_notebook()
    live = edit(base, "d", outputs=[stream("1\n")], execution_count=1)
    result = three_way_merge(base, without(base, "d"), live)
    assert ids(result) == ["a", "b", "c", "d"]
    assert result.kept_live == 1


def test_cell_deleted_live_and_unchanged_on_disk_stays_deleted() -> None:
    base = base_notebook()
    result = three_way_merge(base, copy.deepcopy(base), without(base, "c"))
    assert ids(result) == ["a", "b", "d"]
    assert result.added == result.restored == 0


def test_cell_deleted_live_but_changed_on_disk_is_restored() -> None:
    base = base_notebook()
    disk = edit(base, "c", source="# Better title\n")
    result = three_way_merge(base, disk, without(base, "c"))
    assert ids(result) == ["a", "b", "c", "d"]
    assert cell(result, "c")["source"] == "# Better title\n"
    assert result.restored == 1
    assert result.added == 1


def test_cell_deleted_on_both_sides() -> None:
    base = base_notebook()
    result = three_way_merge(base, without(base, "a"), without(base, "a"))
    assert ids(result) == ["b", "c", "d"]
    assert result.deleted == 0  # it was not in the live document any more


def test_cell_added_on_both_sides_with_the_same_id() -> None:
    base = base_notebook()
    disk = insert(base, 4, code("n", "same\n"))
    live = insert(base, 4, code("n", "same\n"))
    result = three_way_merge(base, disk, live)
    assert ids(result) == ["a", "b", "c", "d", "n"]
    assert result.conflicts == []


def test_cell_added_on_both_sides_with_different_text_conflicts() -> None:
    base = base_notebook()
    disk = insert(base, 4, code("n", "disk\n"))
    live = insert(base, 4, code("n", "live\n"))
    result = three_way_merge(base, disk, live)
    assert cell(result, "n")["source"] == "disk\n"
    assert [c.cell_id for c in result.conflicts] == ["n"]


def test_moved_on_disk_only_adopts_disk_order() -> None:
    base = base_notebook()
    disk = reorder(base, ["a", "c", "d", "b"])
    live = insert(edit(base, "b", source="edited live\n"), 3, code("l", "live\n"))
    result = three_way_merge(base, disk, live)
    assert ids(result) == ["a", "c", "l", "d", "b"]
    assert cell(result, "b")["source"] == "edited live\n"
    assert result.order == "disk"
    assert result.moved == 1


def test_moved_live_only_keeps_live_order() -> None:
    base = base_notebook()
    live = reorder(base, ["d", "a", "b", "c"])
    disk = insert(base, 1, code("n", "new\n"))
    result = three_way_merge(base, disk, live)
    assert ids(result) == ["d", "a", "n", "b", "c"]
    assert result.order == "live"
    assert result.moved == 0


def test_moved_on_both_sides_live_order_wins() -> None:
    base = base_notebook()
    live = reorder(base, ["b", "a", "c", "d"])
    disk = insert(reorder(base, ["a", "b", "d", "c"]), 3, code("n", "new\n"))
    result = three_way_merge(base, disk, live)
    assert ids(result) == ["b", "a", "c", "d", "n"]
    assert result.order == "live"


# --- cells without ids or with new ids ----------------------------------------------


def strip_ids(nb: Notebook) -> Notebook:
    out = copy.deepcopy(nb)
    for c in out["cells"]:
        c.pop("id", None)
    out["nbformat_minor"] = 4
    return out


def test_disk_without_ids_is_matched_by_content() -> None:
    base = base_notebook()
    disk = strip_ids(edit(base, "b", source="x = 1\ny = 2\nz = 4\n"))
    disk["cells"].insert(0, markdown(None, "# New intro\n"))
    live = edit(base, "d", source="print(x)\nprint(y)\n")
    result = three_way_merge(base, disk, live, new_id=lambda: "fresh")
    assert ids(result) == ["fresh", "a", "b", "c", "d"]
    assert sources(result) == [
        "# New intro\n",
        "import os\n",
        "x = 1\ny = 2\nz = 4\n",
        "# Title\n",
        "print(x)\nprint(y)\n",
    ]
    assert result.notebook["nbformat_minor"] == 4
    assert (result.added, result.deleted, result.changed) == (1, 0, 1)


def test_base_and_disk_without_ids_match_live_ids() -> None:
    """An nbformat 4.4 file: the base as read has no ids, the live cells got uuids."""
    live = base_notebook()
    base = strip_ids(live)
    disk = strip_ids(edit(live, "b", source="x = 1\ny = 20\nz = 3\n"))
    live = edit(live, "b", source="x = 1\ny = 2\nz = 3\nw = 4\n")
    result = three_way_merge(base, disk, live)
    assert ids(result) == ["a", "b", "c", "d"]
    assert cell(result, "b")["source"] == "x = 1\ny = 20\nz = 3\nw = 4\n"
    assert result.conflicts == []


def test_disk_read_by_nbformat_from_an_old_file() -> None:
    live = base_notebook()
    node = nbformat.from_dict(strip_ids(edit(live, "a", source="import sys\n")))
    disk = nbformat.reads(nbformat.writes(node, version=4), as_version=4)
    assert "id" not in disk["cells"][0]
    result = three_way_merge(live, disk, live)
    assert ids(result) == ["a", "b", "c", "d"]
    assert sources(result)[0] == "import sys\n"


def test_regenerated_ids_on_disk_take_the_live_ids() -> None:
    base = base_notebook()
    disk = reorder(base, ["a", "c", "b", "d"])
    for n, c in enumerate(disk["cells"]):
        c["id"] = f"regenerated-{n}"
    disk["cells"][3]["source"] = "print(x)  # disk\n"
    disk = insert(disk, 4, code("regenerated-new", "brand new\n"))
    result = three_way_merge(base, disk, base)
    assert ids(result) == ["a", "c", "b", "d", "regenerated-new"]
    assert cell(result, "d")["source"] == "print(x)  # disk\n"
    assert (result.added, result.deleted, result.moved) == (1, 0, 1)


def test_similar_cells_match_across_an_insertion() -> None:
    lines = [f"value_{n} = compute({n})\nshow(value_{n})\n" for n in range(6)]
    base = notebook(*[code(f"c{n}", text) for n, text in enumerate(lines)])
    disk = strip_ids(base)
    disk["cells"].insert(2, code(None, "inserted()\n"))
    for c in disk["cells"][3:]:
        c["source"] += "# touched\n"
    result = three_way_merge(base, disk, base, new_id=lambda: "new")
    assert ids(result) == ["c0", "c1", "new", "c2", "c3", "c4", "c5"]
    assert (result.added, result.deleted, result.changed) == (1, 0, 4)


def test_dissimilar_cell_without_id_is_a_new_cell() -> None:
    base = base_notebook()
    disk = strip_ids(base)
    disk["cells"][1] = code(None, "completely different\n")
    result = three_way_merge(base, disk, base, new_id=lambda: "new")
    assert ids(result) == ["a", "new", "c", "d"]
    assert result.deleted == 1


def test_duplicate_ids_on_disk_get_a_new_id() -> None:
    base = base_notebook()
    disk = insert(base, 2, code("a", "copy of a\n"))
    result = three_way_merge(base, disk, base, new_id=lambda: "dup")
    assert ids(result) == ["a", "b", "dup", "c", "d"]


# --- notebook level ---------------------------------------------------------------------


def test_notebook_metadata_merges_per_key() -> None:
    base = notebook(code("a", ""), kernelspec={"name": "python3"}, shared=1, gone=True)
    disk = notebook(code("a", ""), kernelspec={"name": "julia"}, shared=2, disk=1, gone=True)
    live = notebook(code("a", ""), kernelspec={"name": "python3"}, shared=3, live=1)
    result = three_way_merge(base, disk, live)
    assert result.notebook["metadata"] == {
        "kernelspec": {"name": "julia"},
        "shared": 2,
        "disk": 1,
        "live": 1,
    }


def test_nbformat_version_comes_from_disk() -> None:
    base = base_notebook()
    disk = copy.deepcopy(base)
    disk["nbformat_minor"] = 4
    live = copy.deepcopy(base)
    live["nbformat_minor"] = 5
    result = three_way_merge(base, disk, live)
    assert (result.notebook["nbformat"], result.notebook["nbformat_minor"]) == (4, 4)


def test_list_sources_and_missing_fields_are_normalised() -> None:
    base = base_notebook()
    disk = copy.deepcopy(base)
    disk["cells"][0] = {"id": "a", "cell_type": "code", "source": ["import ", "os\n"]}
    result = three_way_merge(base, disk, base)
    assert result.notebook == base
    assert result.changed == 0


def test_inputs_are_not_modified() -> None:
    base = executed(base_notebook())
    disk = nbstripped(insert(base, 0, code(None, "new\n")))
    live = edit(base, "b", source="changed\n")
    snapshot = copy.deepcopy((base, disk, live))
    three_way_merge(base, disk, live)
    assert (base, disk, live) == snapshot


# --- properties and scale ---------------------------------------------------------------


def test_increasing_subsequence() -> None:
    assert increasing_subsequence([]) == []
    assert increasing_subsequence([3, 0, 1, 4, 2, 5]) == [1, 2, 4, 5]
    values = [5, 1, 4, 2, 3, 0]
    run = increasing_subsequence(values)
    assert [values[i] for i in run] == [1, 2, 3]


_counter = itertools.count()


@st.composite
def edited_notebooks(draw: st.DrawFn) -> tuple[Notebook, Notebook]:
    """A base notebook and one side's edit of it (edits, inserts, deletes, a move). New cells
    get text unlike any base cell's: a similar one would be matched to a deleted cell."""
    texts = st.text(alphabet="ab\n😀é", max_size=12)
    new_texts = st.text(alphabet="XYZ", min_size=1, max_size=12)
    size = draw(st.integers(0, 6))
    base = notebook(*[code(f"c{n}", draw(texts)) for n in range(size)])
    side = copy.deepcopy(base)
    for c in side["cells"]:
        if draw(st.booleans()):
            c["source"] = draw(texts)
    side["cells"] = [c for c in side["cells"] if draw(st.integers(0, 4))]
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(side["cells"])))
        side["cells"].insert(at, code(f"new{next(_counter)}", draw(new_texts)))
    if len(side["cells"]) > 1 and draw(st.booleans()):
        side["cells"].append(side["cells"].pop(draw(st.integers(0, len(side["cells"]) - 1))))
    return base, side


@settings(max_examples=150, deadline=None)
@given(edited_notebooks())
def test_one_sided_changes_are_taken_exactly(pair: tuple[Notebook, Notebook]) -> None:
    base, side = pair
    assert three_way_merge(base, side, base).notebook == side
    assert three_way_merge(base, base, side).notebook == side


@settings(max_examples=100, deadline=None)
@given(edited_notebooks(), edited_notebooks())
def test_merge_never_loses_a_changed_cell(
    disk_pair: tuple[Notebook, Notebook], live_pair: tuple[Notebook, Notebook]
) -> None:
    base, disk = disk_pair
    _, live = live_pair
    live["cells"] = [c for c in live["cells"] if c["id"].startswith("new")]  # same base
    live["cells"] = copy.deepcopy(base["cells"]) + live["cells"]
    result = three_way_merge(base, disk, live)
    merged = {c["id"]: c for c in result.notebook["cells"]}
    assert len(merged) == len(result.notebook["cells"])
    base_by = {c["id"]: c for c in base["cells"]}
    for c in disk["cells"] + live["cells"]:
        if c != base_by.get(c["id"]):
            assert c["id"] in merged


def big_notebook(size: int) -> Notebook:
    out = [{"output_type": "execute_result", "data": {"text/plain": "42"}, "metadata": {}}]
    return notebook(
        *[
            code(f"c{n}", f"value_{n} = {n}\nprint(value_{n})\n" * 4, outputs=out)
            for n in range(size)
        ]
    )


def best_of_three_ms(base: Notebook, disk: Notebook, live: Notebook) -> float:
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        three_way_merge(base, disk, live)
        timings.append((time.perf_counter() - start) * 1000)
    return min(timings)


def test_thousand_cells_merge_fast() -> None:
    base = big_notebook(1000)
    disk, live = copy.deepcopy(base), copy.deepcopy(base)
    for n in range(0, 1000, 50):
        disk["cells"][n]["source"] += "# disk\n"
        live["cells"][n + 25]["source"] += "# live\n"
    disk["cells"].insert(500, code("new", "new\n"))
    del live["cells"][700]
    assert best_of_three_ms(base, disk, live) < 50
    assert best_of_three_ms(base, strip_ids(disk), live) < 50
    with_ids = three_way_merge(base, disk, live)
    without_ids = three_way_merge(strip_ids(base), strip_ids(disk), live)
    for result in (with_ids, without_ids):  # cell 700: deleted live, changed on disk
        assert (result.added, result.restored, result.deleted, result.changed) == (2, 1, 0, 19)
    assert sources(without_ids) == sources(with_ids)
    differ = [a for a, b in zip(ids(with_ids), ids(without_ids), strict=True) if a != b]
    assert differ == ["new", "c700"]  # no id to recover: added on disk, deleted live
