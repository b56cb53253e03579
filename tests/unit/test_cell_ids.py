"""The cells' ids followed from events stay what a full read of the notebook says, through
inserts, deletes, moves, id changes, edits inside cells, several changes in one transaction,
updates from another replica, and cells that are not cells."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text

from kernel_collab.notebook_core.cell_ids import (
    READ_AS_JSON_FROM,
    CellIds,
    cell_ids,
    feed_cell_ids,
    id_of,
    read_ids,
)
from kernel_collab.notebook_core.cells import cell_index, find_cell, shared_notebook


def _cell(cell_id: Any) -> Map[Any]:
    return Map({"id": cell_id, "cell_type": "code", "source": Text("x"), "metadata": Map()})


def _read(ycells: Array[Any]) -> list[str | None]:
    return [id_of(ycell) for ycell in ycells]


def _change(doc: Doc[Any], rng: random.Random) -> None:
    """One transaction of one to three random changes to the cells."""
    cells = doc.get("cells", type=Array)
    with doc.transaction():
        for _ in range(rng.randint(1, 3)):
            n = len(cells)
            action = rng.randrange(7)
            if action == 0 or n == 0:  # insert, sometimes under an id already taken
                taken = _read(cells)
                cell_id = rng.choice(taken) if taken and rng.random() < 0.3 else f"c{rng.random()}"
                cells.insert(rng.randint(0, n), _cell(cell_id))
            elif action == 1:  # delete a range
                start = rng.randrange(n)
                del cells[start:min(n, start + rng.randint(1, 3))]
            elif action == 2:  # move: delete and insert a copy
                src = rng.randrange(n)
                cell_id = id_of(cells[src])
                del cells[src]
                cells.insert(rng.randint(0, n - 1), _cell(cell_id))
            elif action == 3:  # a new id
                target = cells[rng.randrange(n)]
                if isinstance(target, Map):
                    target["id"] = f"r{rng.random()}"
            elif action == 4:  # an edit inside a cell
                target = cells[rng.randrange(n)]
                if isinstance(target, Map) and "source" in target:
                    source = target["source"]
                    source += "y"
            elif action == 5:  # something that is not a cell (a peer's broken update)
                cells.insert(rng.randint(0, n), rng.choice(["text", 3, Map({"id": 7})]))
            else:  # the id deleted
                target = cells[rng.randrange(n)]
                if isinstance(target, Map) and "id" in target:
                    del target["id"]


@pytest.mark.parametrize("seed", range(8))
def test_followed_ids_are_what_the_notebook_holds(seed: int) -> None:
    rng = random.Random(seed)
    doc: Doc[Any] = Doc()
    cells = doc.get("cells", type=Array)
    cells.extend([_cell(f"start-{i}") for i in range(5)])
    ids = CellIds(cells)
    cells.observe_deep(ids.follow)
    assert ids.ids == [f"start-{i}" for i in range(5)]
    other: Doc[Any] = Doc()  # another replica, whose changes arrive as updates
    other.apply_update(doc.get_update())
    for _ in range(300):
        if rng.random() < 0.3:
            _change(other, rng)
            doc.apply_update(other.get_update(doc.get_state()))
        else:
            _change(doc, rng)
            other.apply_update(doc.get_update(other.get_state()))
        now = _read(cells)
        assert ids.ids == now
        assert ids.unique == (None not in now and len(set(now)) == len(now))
        for cell_id, count in Counter(now).items():
            if cell_id is not None:
                assert ids.count(cell_id) == count
                assert ids.position(cell_id) == now.index(cell_id)
    assert ids.count("never-there") == 0


def test_ids_of_deleted_cells_are_not_kept() -> None:
    doc: Doc[Any] = Doc()
    cells = doc.get("cells", type=Array)
    ids = CellIds(cells)
    cells.observe_deep(ids.follow)
    assert ids.ids == []  # read now: followed from here on
    cells.append(_cell("c0"))
    for i in range(1, 101):
        cells.append(_cell(f"c{i}"))
        del cells[0]
    assert ids.ids == ["c100"]
    assert len(ids._counts) == 1


def test_cells_are_found_by_id_as_they_move_and_go() -> None:
    notebook = shared_notebook()
    cells = notebook.ycells
    cells.extend([_cell(f"c{i}") for i in range(50)])
    assert cell_index(notebook, "c10") == 10
    rng = random.Random(3)
    for _ in range(200):
        source = rng.randrange(len(cells))
        moved = id_of(cells[source])
        with notebook.ydoc.transaction():
            del cells[source]
            cells.insert(rng.randrange(len(cells) + 1), _cell(moved))
        if rng.random() < 0.1:
            del cells[rng.randrange(len(cells))]
        now = _read(cells)
        for cell_id in rng.sample([c for c in now if c], 5):
            assert cell_index(notebook, cell_id) == now.index(cell_id)
            found = find_cell(notebook, cell_id)
            assert found is not None and found["id"] == cell_id
    assert cell_index(notebook, "never-there") is None


def test_the_rooms_ids_are_fed_by_its_own_events() -> None:
    notebook = shared_notebook()
    notebook.ycells.extend([_cell("a"), _cell("b")])
    fed: list[Any] = []
    ids = feed_cell_ids(notebook, fed.append)
    assert cell_ids(notebook) is ids and fed == [ids.follow]
    assert ids.position("b") == 1
    events: list[Any] = []
    subscription = notebook.ycells.observe_deep(events.extend)
    notebook.ycells.insert(0, _cell("z"))
    notebook.ycells.unobserve(subscription)
    ids.follow(events)  # as the room's listeners are told
    assert cell_index(notebook, "b") == 2 and ids.ids == ["z", "a", "b"]


def test_events_that_do_not_fit_make_it_read_the_cells_again() -> None:
    notebook = shared_notebook()
    notebook.ycells.extend([_cell("a"), _cell("b")])
    fed: list[Any] = []
    ids = feed_cell_ids(notebook, fed.append)
    assert ids.ids == ["a", "b"]
    events: list[Any] = []
    subscription = notebook.ycells.observe_deep(events.extend)
    notebook.ycells.append(_cell("c"))
    notebook.ycells.unobserve(subscription)
    ids.follow(events)
    ids.follow(events)  # the same transaction twice: one cell more than there are
    assert ids.ids == ["a", "b", "c"] and ids.count("c") == 1


def test_a_large_notebooks_ids_are_read_from_its_json_as_a_cell_by_cell_read_says() -> None:
    """Past ``READ_AS_JSON_FROM`` cells the ids come from the cells' JSON (linear): the same
    ids, cells without one and things that are not cells included."""
    doc: Doc[Any] = Doc()
    cells = doc.get("cells", type=Array)
    odd: list[Any] = ["text", 3, Map({"id": 7}), Map({"cell_type": "code"}), _cell("dup")]
    with doc.transaction():
        cells.extend([_cell(f"c{i}") if i % 97 else odd[(i // 97) % len(odd)]
                      for i in range(READ_AS_JSON_FROM + 500)])  # fmt: skip
        cells.insert(10, _cell("dup"))
    expected = _read(cells)
    assert read_ids(cells) == expected
    assert None in expected and expected.count("dup") > 1  # the odd ones are there
    ids = CellIds(cells)
    assert ids.ids == expected and not ids.unique and ids.position("c5") == 5
