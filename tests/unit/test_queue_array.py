"""The queue's shared array is kept in step with small edits at its ends."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc

from kernel_collab.sidecar.execution_queue import update_array

entries = st.lists(st.fixed_dictionaries({"cell_id": st.sampled_from("abcde"),
                                          "at": st.integers(0, 3)}), max_size=8)  # fmt: skip


@settings(max_examples=300)
@given(entries, entries)
def test_the_array_ends_up_holding_the_new_list(old: list[Any], new: list[Any]) -> None:
    doc: Doc[Any] = Doc()
    doc["queue"] = array = Array(old)
    update_array(array, old, new)
    assert array.to_py() == new


def test_popping_the_head_and_pushing_a_tail_are_small_updates() -> None:
    doc: Doc[Any] = Doc()
    queue = [{"cell_id": f"c{i}", "by": {"name": "x" * 50}, "at": i} for i in range(1000)]
    doc["queue"] = array = Array(queue)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    update_array(array, queue, queue[1:])
    update_array(array, queue[1:], [*queue[1:], {"cell_id": "new", "by": {}, "at": 0}])
    assert array.to_py() == [*queue[1:], {"cell_id": "new", "by": {}, "at": 0}]
    assert all(len(u) < 200 for u in updates), [len(u) for u in updates]
