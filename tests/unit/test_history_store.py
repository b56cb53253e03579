"""The store's history: every version rebuilds exactly, thinning and the budget keep it small,
purges really remove, and a store from before history gains one."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from jupyter_ydoc import YNotebook
from pycrdt import Map

from kernel_collab.store import Commit, HistoryError, Policy, SQLiteStore

ALICE = {"kind": "person", "name": "Alice", "username": "alice"}
BOB = {"kind": "person", "name": "Bob", "username": "bob"}
KERNEL = {"kind": "kernel", "name": "kernel"}


def _cell(source: str, index: int, outputs: list[Any] | None = None) -> dict[str, Any]:
    return {"cell_type": "code", "id": f"c{index}", "source": source, "metadata": {},
            "execution_count": None, "outputs": outputs or []}  # fmt: skip


class Writer:
    """A live document whose every transaction is committed to the store, as the room does."""

    def __init__(self, store: SQLiteStore, cells: list[str]):
        self.store = store
        self.nb = YNotebook()
        self.nb.set({"cells": [_cell(s, i) for i, s in enumerate(cells)], "metadata": {},
                     "nbformat": 4, "nbformat_minor": 5})  # fmt: skip
        self.doc_id, _ = store.create("nb.ipynb", self.nb.ydoc.get_update(), None, None)
        self.expected: dict[int, list[str]] = {0: cells}

    def commit(self, change: Any, author: dict[str, Any], *, cells: bool = True,
               kind: str = "edit", pinned: bool = False) -> int:  # fmt: skip
        before = self.nb.ydoc.get_state()
        change()
        update = self.nb.ydoc.get_update(before)
        version = self.store.append(self.doc_id, [update], Commit(
            cells=cells, authors=[author], kind=kind, pinned=pinned))  # fmt: skip
        assert version is not None
        self.expected[version] = [str(c["source"]) for c in self.nb.ycells]
        return version

    def sources(self, version: int) -> list[str]:
        return [c["source"] for c in self.store.history.snapshot(self.doc_id, version)
                .notebook["cells"]]  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / ".kernel_collab.db",
                       history=Policy(recent=0, checkpoint_bytes=2_000))  # fmt: skip


def test_every_version_rebuilds_exactly_with_its_authors(store: SQLiteStore) -> None:
    w = Writer(store, ["a", "b"])
    for i in range(60):
        w.commit(lambda i=i: w.nb.set_cell(i % 2, source=f"edit {i}"),
                 ALICE if i % 3 else BOB)  # fmt: skip
        if i % 10 == 0:
            store.history.maintain(w.doc_id, now=0)  # checkpoints (nothing is old at now=0)
    status = w.nb.ystate
    hidden = w.commit(lambda: status.__setitem__("kernel_status", "busy"), KERNEL, cells=False)
    w.commit(lambda: w.nb.set_cell(0, source="after"), ALICE)
    versions = store.history.versions(w.doc_id)
    # A commit of the state map alone is a hidden row, not a version.
    assert [v.version for v in versions] == [*range(61), 62]
    with pytest.raises(HistoryError):
        store.history.snapshot(w.doc_id, hidden)
    del w.expected[hidden]
    assert versions[0].kind == "created" and versions[0].pinned
    assert versions[1].authors == [BOB] and versions[2].authors == [ALICE]
    checkpoints = store._db.execute("SELECT COUNT(*) FROM history_checkpoints").fetchone()[0]
    assert checkpoints > 1  # the replay of a late version does not start from version 0
    for version, sources in w.expected.items():
        assert w.sources(version) == sources, version


def test_thinning_keeps_pinned_versions_and_merges_the_rest(store: SQLiteStore) -> None:
    w = Writer(store, ["x"])
    for i in range(30):
        w.commit(lambda i=i: w.nb.set_cell(0, source=f"v{i}"),
                 ALICE if i < 15 else BOB, kind="save" if i == 20 else "edit",
                 pinned=i == 20)  # fmt: skip
    saved = next(v for v in store.history.versions(w.doc_id) if v.kind == "save").version
    store.history.maintain(w.doc_id, now=10 * 86400.0 + 1e10)  # all of it is days old
    versions = store.history.versions(w.doc_id)
    assert [v.version for v in versions] == [0, saved - 1, saved, 30]
    assert versions[1].authors == [ALICE, BOB]
    for v in versions:  # whatever was kept still rebuilds exactly
        assert w.sources(v.version) == w.expected[v.version]


def test_thinning_again_as_versions_age_keeps_one_per_bucket_and_the_checkpoints(
        store: SQLiteStore) -> None:  # fmt: skip
    w = Writer(store, ["x"])
    start = 1e9 - 1e9 % 86400 + 6 * 3600  # 6:00; commits 20 minutes apart until 19:00
    for i in range(40):
        version = w.commit(lambda: w.nb.set_cell(0, source=os.urandom(150).hex()), ALICE)
        at = start + i * 1200
        store._db.execute("UPDATE history SET at=?, first_at=? WHERE version=?",
                          (at, at, version))  # fmt: skip
        if i % 10 == 9:
            store.history.maintain(w.doc_id, now=at + 1)  # checkpoints, nothing merged yet

    def checkpoints() -> list[int]:
        return [r[0] for r in store._db.execute("SELECT version FROM history_checkpoints")]

    assert checkpoints() == [0, 10, 20, 30, 40]
    store.history.maintain(w.doc_id, now=start + 2 * 86400)  # a version per hour
    versions = store.history.versions(w.doc_id)
    assert len(versions) == 1 + 14
    # Each checkpoint moved to the version kept for its hour, not dropped with the rest.
    assert checkpoints() == [0, 12, 21, 30, 40]
    for v in versions:
        assert w.sources(v.version) == w.expected[v.version]
    store.history.maintain(w.doc_id, now=start + 40 * 86400)  # then one for the day
    assert [v.version for v in store.history.versions(w.doc_id)] == [0, 40]
    assert w.sources(40) == w.expected[40]


def test_past_the_budget_old_versions_keep_sources_and_drop_outputs(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", history=Policy(recent=0, max_bytes=40_000))
    w = Writer(store, ["plot()"])
    image = {"image/png": os.urandom(3_000).hex()}
    for i in range(12):
        def run(i: int = i) -> None:
            w.nb.set_cell(0, source=f"plot({i})")
            w.nb.ycells[0]["outputs"].clear()
            w.nb.ycells[0]["outputs"].append(Map({
                "output_type": "display_data", "metadata": Map(), "data": Map(image)}))  # fmt: skip
        w.commit(run, KERNEL, kind="restart", pinned=True)  # pinned: never thinned away
    for _ in range(5):  # each compaction does a bounded part of the work
        if not store.history.maintain(w.doc_id, now=1e10):
            break
    assert store.history.size(w.doc_id) <= 40_000
    versions = store.history.versions(w.doc_id)
    dropped = [v for v in versions if v.outputs_dropped]
    assert dropped and not versions[-1].outputs_dropped
    old = store.history.snapshot(w.doc_id, dropped[-1].version)
    assert old.outputs_dropped and old.notebook["cells"][0]["outputs"] == []
    assert old.notebook["cells"][0]["source"] == w.expected[dropped[-1].version][0]
    assert w.sources(versions[-1].version) == w.expected[versions[-1].version]


def test_purges_remove_what_people_deleted(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / ".kernel_collab.db")  # every commit is recent: none thinned
    w = Writer(store, ["x = 1"])
    w.commit(lambda: w.nb.set_cell(0, source="password = 'hunter2'"), ALICE)
    secret = w.commit(lambda: w.nb.set_cell(0, source="x = 2"), ALICE) - 1
    w.commit(lambda: w.nb.set_cell(0, source="x = 3"), BOB)
    store.purge(w.doc_id, None, secret)
    assert secret not in [v.version for v in store.history.versions(w.doc_id)]
    for v in store.history.versions(w.doc_id):
        assert "hunter2" not in str(store.history.snapshot(w.doc_id, v.version).notebook)
    assert w.sources(secret + 1) == ["x = 2"]
    # The bytes are gone from the file, not only from the listing, once the live document is
    # compacted (the sidecar does it right after a purge).
    store.compact(w.doc_id, w.nb.ydoc.get_update(), store.last_update_id(w.doc_id))
    store.close()
    assert b"hunter2" not in (store.path).read_bytes()
    store = w.store = SQLiteStore(store.path)
    removed = store.purge(w.doc_id, 3, None)
    assert removed == 2 and [v.version for v in store.history.versions(w.doc_id)] == [3]
    assert [c["source"] for c in store.history.snapshot(w.doc_id, 3).notebook["cells"]] == [
        "x = 3"]
    with pytest.raises(HistoryError, match="version 1 is not in the history"):
        store.history.snapshot(w.doc_id, 1)


def test_a_store_from_before_history_gains_one(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = SQLiteStore(path)
    w = Writer(store, ["old"])
    store._db.execute("DROP TABLE history")
    store._db.execute("DROP TABLE history_checkpoints")
    store._db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    store.close()
    store = w.store = SQLiteStore(path)
    assert store.load("nb.ipynb") is not None
    versions = store.history.versions(w.doc_id)
    assert [(v.version, v.label) for v in versions] == [(0, "history begins")]
    assert w.sources(0) == ["old"]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta").fetchone()[0] == "2"
