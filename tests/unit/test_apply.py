"""Applying a notebook to a live YNotebook with minimal edits, checked on real pycrdt docs."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from jupyter_ydoc import YNotebook
from pycrdt import Array, Assoc, Doc, Map, StickyIndex, Text

from kernel_collab.notebook_core.apply import ApplyStats, apply_notebook
from kernel_collab.notebook_core.cells import set_text
from kernel_collab.notebook_core.merge import three_way_merge

Cell = dict[str, Any]
Notebook = dict[str, Any]


def code(cid: str, source: str, **fields: Any) -> Cell:
    cell: Cell = {
        "id": cid,
        "cell_type": "code",
        "source": source,
        "metadata": {},
        "outputs": [],
        "execution_count": None,
    }
    cell.update(fields)
    return cell


def markdown(cid: str, source: str, **fields: Any) -> Cell:
    cell: Cell = {"id": cid, "cell_type": "markdown", "source": source, "metadata": {}}
    cell.update(fields)
    return cell


def stream(text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text}


def ten_cells() -> Notebook:
    cells = [code(f"c{n}", f"line one of {n}\nline two of {n} 😀\n") for n in range(10)]
    cells[3] = markdown("c3", "# Cell 3 ✨\nsome text\n")
    cells[5]["outputs"] = [stream("five\n")]
    cells[5]["execution_count"] = 5
    return {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def live_notebook(nb: Notebook) -> YNotebook:
    ynb = YNotebook()
    ynb.set(nb)
    return ynb


def changed(nb: Notebook, index: int, **fields: Any) -> Notebook:
    out = copy.deepcopy(nb)
    out["cells"][index].update(fields)
    return out


def ytext(ynb: YNotebook, index: int) -> Text:
    source = ynb.ycells[index]["source"]
    assert isinstance(source, Text)
    return source


def utf8_len(text: str) -> int:
    """Length in pycrdt Text indices."""
    return len(text.encode("utf-8"))


def peer_of(ynb: YNotebook) -> YNotebook:
    peer = YNotebook(Doc())
    peer.ydoc.apply_update(ynb.ydoc.get_update())
    return peer


def sync(a: YNotebook, b: YNotebook) -> None:
    """Exchange what each side lacks, as y-websocket's sync step 2 does."""
    a_state, b_state = a.ydoc.get_state(), b.ydoc.get_state()
    a_update, b_update = a.ydoc.get_update(b_state), b.ydoc.get_update(a_state)
    b.ydoc.apply_update(a_update)
    a.ydoc.apply_update(b_update)


def cell_paths(ynb: YNotebook, target: Notebook) -> list[Any]:
    """The paths of every Y event that applying ``target`` causes."""
    events: list[Any] = []
    subscription = ynb.ycells.observe_deep(events.extend)
    apply_notebook(ynb, target)
    ynb.ycells.unobserve(subscription)
    return [event.path for event in events]


# --- equality with the target -------------------------------------------------------


def test_complex_change_makes_the_document_equal_to_the_target() -> None:
    ynb = live_notebook(ten_cells())
    target = ten_cells()
    cells = target["cells"]
    cells[1]["source"] = "line one of 1\nline 2 changed ☕\n"
    cells[2]["metadata"] = {"tags": ["x"], "collapsed": True}
    cells[4] = markdown("c4", "now markdown\n")
    cells[5]["outputs"] = [
        stream("new\n"),
        {"output_type": "error", "ename": "E", "evalue": "v", "traceback": []},
    ]
    cells[5]["execution_count"] = 9
    cells.insert(0, cells.pop(8))
    cells.remove(cells[7])
    assert [c["id"] for c in cells] == ["c8", "c0", "c1", "c2", "c3", "c4", "c5", "c7", "c9"]
    cells.insert(3, code("new", "brand new\n"))
    cells.append(
        markdown("md", "![x](attachment:x.png)\n", attachments={"x.png": {"image/png": "iVBO"}})
    )
    target["metadata"] = {"kernelspec": {"name": "julia", "display_name": "Julia"}, "k": 1}
    stats = apply_notebook(ynb, target)
    assert ynb.get() == target
    assert stats == ApplyStats(
        inserted=2, deleted=1, moved=1, recreated=1, updated=3, notebook_changed=True
    )
    assert stats.changed


def test_applying_the_same_notebook_again_changes_nothing() -> None:
    ynb = live_notebook(ten_cells())
    before = ynb.ydoc.get_state()
    stats = apply_notebook(ynb, ynb.get())
    assert not stats.changed
    assert ynb.ydoc.get_state() == before


def test_an_emptied_notebook_and_a_filled_one() -> None:
    ynb = live_notebook(ten_cells())
    empty: Notebook = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    assert apply_notebook(ynb, empty).deleted == 10
    assert ynb.get() == empty
    assert apply_notebook(ynb, ten_cells()).inserted == 10
    assert ynb.get() == ten_cells()


def test_old_nbformat_ids_are_kept_in_the_document_but_not_shown() -> None:
    ynb = live_notebook(ten_cells())
    target = changed(ten_cells(), 2, source="edited\n")
    target["nbformat_minor"] = 4
    apply_notebook(ynb, target)
    expected = copy.deepcopy(target)
    for cell in expected["cells"]:
        del cell["id"]
    assert ynb.get() == expected
    assert [ycell["id"] for ycell in ynb.ycells] == [f"c{n}" for n in range(10)]


def test_list_sources_and_stream_text_are_joined() -> None:
    ynb = live_notebook(ten_cells())
    target = changed(
        ten_cells(),
        0,
        source=["a\n", "b\n"],
        outputs=[{"output_type": "stream", "name": "stdout", "text": ["x\n", "y\n"]}],
    )
    apply_notebook(ynb, target)
    cell = ynb.get()["cells"][0]
    assert cell["source"] == "a\nb\n"
    assert cell["outputs"] == [stream("x\ny\n")]


# --- minimal edits -------------------------------------------------------------------


def test_only_the_changed_cell_sees_events() -> None:
    ynb = live_notebook(ten_cells())
    target = changed(ten_cells(), 7, source="line one of 7\nline two changed\n")
    assert set(map(tuple, cell_paths(ynb, target))) == {(7, "source")}


def test_a_moved_cell_is_the_only_one_recreated() -> None:
    ynb = live_notebook(ten_cells())
    target = ten_cells()
    target["cells"].append(target["cells"].pop(2))
    paths = cell_paths(ynb, target)
    assert paths == [[]]  # one change of the cells array itself
    assert ynb.get() == target
    kept = [ytext(ynb, n) for n in range(9)]
    assert [str(text) for text in kept] == [c["source"] for c in target["cells"][:9]]


def test_moving_a_cell_reports_one_move() -> None:
    ynb = live_notebook(ten_cells())
    target = ten_cells()
    target["cells"].insert(0, target["cells"].pop(9))
    stats = apply_notebook(ynb, target)
    assert (stats.moved, stats.inserted, stats.deleted, stats.updated) == (1, 0, 0, 0)


def test_metadata_is_updated_per_key() -> None:
    nb = changed(ten_cells(), 2, metadata={"keep": 1, "change": 1, "drop": 1})
    ynb = live_notebook(nb)
    events: list[Any] = []
    ymeta = ynb.ycells[2]["metadata"]
    assert isinstance(ymeta, Map)
    subscription = ymeta.observe(events.append)
    apply_notebook(ynb, changed(nb, 2, metadata={"keep": 1, "change": 2, "add": True}))
    ymeta.unobserve(subscription)
    (event,) = events
    assert {key: change["action"] for key, change in event.keys.items()} == {
        "change": "update",
        "drop": "delete",
        "add": "add",
    }
    assert ynb.get()["cells"][2]["metadata"] == {"keep": 1, "change": 2, "add": True}


def test_a_bool_replaces_an_equal_number() -> None:
    nb = changed(ten_cells(), 0, metadata={"flag": 1})
    ynb = live_notebook(nb)
    apply_notebook(ynb, changed(nb, 0, metadata={"flag": True}))
    assert ynb.get()["cells"][0]["metadata"]["flag"] is True


def test_notebook_metadata_is_updated_per_key_and_nbformat_set() -> None:
    ynb = live_notebook(ten_cells())
    ymeta = ynb.ydoc.get("meta", type=Map)
    events: list[Any] = []
    subscription = ymeta.observe(events.append)  # shallow: a replaced metadata map shows
    target = ten_cells()
    target["metadata"]["language_info"] = {"name": "python"}
    target["nbformat_minor"] = 4
    assert apply_notebook(ynb, target).notebook_changed
    ymeta.unobserve(subscription)
    (event,) = events
    assert set(event.keys) == {"nbformat_minor"}
    assert ynb.get()["metadata"] == target["metadata"]
    assert ynb.get()["nbformat_minor"] == 4


def test_duplicate_ids_in_the_target_get_a_fresh_id() -> None:
    ynb = live_notebook(ten_cells())
    target = ten_cells()
    target["cells"].append(code("c0", "a different cell, same id\n"))
    stats = apply_notebook(ynb, target)
    cells = ynb.get()["cells"]
    assert stats.inserted == 1
    assert [c["source"] for c in cells] == [c["source"] for c in target["cells"]]
    assert len({c["id"] for c in cells}) == 11


def test_unchanged_outputs_are_not_touched_and_new_ones_appended() -> None:
    ynb = live_notebook(ten_cells())
    youtputs = ynb.ycells[5]["outputs"]
    assert isinstance(youtputs, Array)
    events: list[Any] = []
    subscription = youtputs.observe(events.append)
    target = changed(
        ten_cells(), 5, outputs=[stream("five\n"), stream("more\n")], execution_count=6
    )
    apply_notebook(ynb, target)
    youtputs.unobserve(subscription)
    (event,) = events
    assert event.delta[0] == {"retain": 1}  # the first output is kept as it was
    text = youtputs[1]["text"]
    assert isinstance(text, Text)  # as YNotebook.create_ycell makes stream outputs
    assert str(text) == "more\n"
    assert ynb.get() == target


def test_cleared_outputs() -> None:
    ynb = live_notebook(ten_cells())
    target = changed(ten_cells(), 5, outputs=[], execution_count=None)
    stats = apply_notebook(ynb, target)
    assert ynb.get() == target
    assert stats.updated == 1


def test_the_state_map_is_never_touched() -> None:
    ynb = live_notebook(ten_cells())
    ynb.ystate["dirty"] = True
    ynb.ystate["kernel"] = {"status": "busy"}
    events: list[Any] = []
    subscription = ynb.ystate.observe(events.append)
    target = changed(ten_cells(), 1, source="new\n")
    target["cells"].pop()
    apply_notebook(ynb, target)
    ynb.ystate.unobserve(subscription)
    assert events == []
    assert ynb.ystate.to_py() == {"dirty": True, "kernel": {"status": "busy"}}


def test_execution_state_of_kept_cells_is_left_alone() -> None:
    ynb = live_notebook(ten_cells())
    ynb.ycells[0]["execution_state"] = "busy"
    apply_notebook(ynb, changed(ten_cells(), 0, source="changed\n", execution_count=3))
    assert ynb.ycells[0]["execution_state"] == "busy"


# --- concurrent peers ----------------------------------------------------------------


def test_peer_typing_in_cell_3_while_cell_7_changes_on_disk_keeps_its_typing() -> None:
    ynb = live_notebook(ten_cells())
    peer = peer_of(ynb)
    ytext(peer, 3).insert(utf8_len("# Cell 3 ✨"), " (peer)")
    target = changed(ten_cells(), 7, source="line one of 7\nchanged on disk\n")
    apply_notebook(ynb, target)
    sync(ynb, peer)
    for doc in (ynb, peer):
        cells = doc.get()["cells"]
        assert cells[3]["source"] == "# Cell 3 ✨ (peer)\nsome text\n"
        assert cells[7]["source"] == "line one of 7\nchanged on disk\n"
    assert ynb.get() == peer.get()


def test_merge_then_apply_keeps_a_peers_concurrent_typing() -> None:
    """The sidecar's flow: file changed outside, merged with the live document, applied."""
    file = ten_cells()
    ynb = live_notebook(file)
    peer = peer_of(ynb)
    ytext(peer, 3).insert(0, "typed ")
    sync(ynb, peer)  # the peer's typing so far has reached the sidecar
    ytext(peer, 3).insert(0, "more ")  # and this is still in flight
    disk = changed(file, 7, source="line one of 7\nline two of 7 😀 on disk\n")
    result = three_way_merge(file, disk, ynb.get())
    assert result.changed == 1
    stats = apply_notebook(ynb, result.notebook)
    assert stats.updated == 1
    sync(ynb, peer)
    for doc in (ynb, peer):
        cells = doc.get()["cells"]
        assert cells[3]["source"] == "more typed # Cell 3 ✨\nsome text\n"
        assert cells[7]["source"] == "line one of 7\nline two of 7 😀 on disk\n"


def test_peer_typing_in_an_untouched_part_of_a_changed_cell_survives() -> None:
    ynb = live_notebook(ten_cells())
    peer = peer_of(ynb)
    ytext(peer, 7).insert(utf8_len("line one"), " 🎉 peer")
    target = changed(ten_cells(), 7, source="line one of 7\nline two of 7 😀 + disk 日本\n")
    apply_notebook(ynb, target)
    sync(ynb, peer)
    expected = "line one 🎉 peer of 7\nline two of 7 😀 + disk 日本\n"
    assert ynb.get()["cells"][7]["source"] == expected
    assert peer.get()["cells"][7]["source"] == expected


def test_sticky_positions_in_unchanged_text_do_not_move() -> None:
    ynb = live_notebook(ten_cells())
    in_cell_3 = StickyIndex.new(ytext(ynb, 3), utf8_len("# Cell 3 ✨"), Assoc.AFTER)
    text_7 = ytext(ynb, 7)
    in_cell_7 = StickyIndex.new(text_7, utf8_len("line one"), Assoc.AFTER)
    after_edit = StickyIndex.new(text_7, utf8_len("line one of 7\nline two of 7"), Assoc.AFTER)
    target = changed(ten_cells(), 7, source="line one of 7\nline two of 7 ✅ 😀\n")
    apply_notebook(ynb, target)
    assert in_cell_3.get_index() == utf8_len("# Cell 3 ✨")
    assert in_cell_7.get_index() == utf8_len("line one")
    assert after_edit.get_index() == utf8_len("line one of 7\nline two of 7")
    assert str(text_7) == "line one of 7\nline two of 7 ✅ 😀\n"


def test_peer_edits_to_a_deleted_cell_do_not_resurrect_it_half() -> None:
    ynb = live_notebook(ten_cells())
    peer = peer_of(ynb)
    ytext(peer, 2).insert(0, "peer ")
    target = ten_cells()
    del target["cells"][2]
    apply_notebook(ynb, target)
    sync(ynb, peer)
    assert ynb.get() == peer.get() == target


# --- text edits ----------------------------------------------------------------------


def text_doc(value: str) -> Text:
    doc: Doc[Text] = Doc()
    text = doc.get("text", type=Text)
    text += value
    return text


def test_set_text_makes_a_small_edit_inside_a_long_text() -> None:
    old = "".join(f"line {n} with ünïcödé 😀\n" for n in range(200))
    new = old.replace("line 100 with", "line 100 🙂 with")
    text = text_doc(old)
    events: list[Any] = []
    subscription = text.observe(events.append)
    assert set_text(text, new)
    text.unobserve(subscription)
    (event,) = events
    assert event.delta == [
        {"retain": len(old.split("line 100 with")[0].encode()) + 9},
        {"insert": "🙂 "},
    ]
    assert str(text) == new


def test_set_text_without_change_is_a_no_op() -> None:
    text = text_doc("same 😀")
    assert not set_text(text, "same 😀")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_set_text_reaches_any_text(old: str, new: str) -> None:
    text = text_doc(old)
    set_text(text, new)
    assert str(text) == new


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "é", "😀", "👩‍👩‍👧", "\n", "日本", " "]), max_size=30),
    st.lists(st.sampled_from(["a", "é", "😀", "👩‍👩‍👧", "\n", "日本", " "]), max_size=30),
)
def test_set_text_reaches_any_emoji_text(old: list[str], new: list[str]) -> None:
    text = text_doc("".join(old))
    set_text(text, "".join(new))
    assert str(text) == "".join(new)
