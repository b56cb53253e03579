"""The SQLite store: durability, compaction, schema versions, and its command line."""

from __future__ import annotations

import base64
import random
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import nbformat
import pytest
from jupyter_ydoc import YNotebook
from pycrdt import Doc, Text

import kernel_collab.store.sqlite as sqlite_module
from kernel_collab.store import SCHEMA_VERSION, SQLiteStore, StoreError, blobs


def _text_updates(n: int) -> tuple[Doc[Text], list[bytes]]:
    doc: Doc[Text] = Doc()
    text = doc.get("t", type=Text)
    updates: list[bytes] = []
    doc.observe(lambda e: updates.append(e.update))
    for i in range(n):
        text += str(i % 10)
    return doc, updates


def test_appended_updates_restore_the_document(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    doc, updates = _text_updates(100)
    document_id, _ = store.create("a.ipynb", Doc().get_update(), b"{}", "h")
    store.append(document_id, updates[:50])
    store.append(document_id, updates[50:])
    store.close()

    loaded = SQLiteStore(tmp_path / "s.db").load("a.ipynb")
    assert loaded is not None
    restored: Doc[Text] = Doc()
    restored.apply_update(loaded.update)
    assert str(restored.get("t", type=Text)) == str(doc.get("t", type=Text))
    assert loaded.update_count == 100
    assert loaded.base == b"{}"


def test_compaction_keeps_the_state_and_bounds_the_size(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    document_id, _ = store.create("a.ipynb", Doc().get_update(), None, None)
    doc, updates = _text_updates(5000)
    store.append(document_id, updates)
    before = store.list()[0]
    store.compact(document_id, doc.get_update(), store.last_update_id(document_id))
    after = store.list()[0]
    assert (before.update_count, after.update_count) == (5000, 0)
    assert after.snapshot_bytes < before.update_bytes / 5
    loaded = store.load("a.ipynb")
    assert loaded is not None
    restored: Doc[Text] = Doc()
    restored.apply_update(loaded.update)
    assert str(restored.get("t", type=Text)) == str(doc.get("t", type=Text))


def test_a_newer_schema_is_refused_clearly(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "s.db").close()
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer than this kernel_collab understands"):
        SQLiteStore(tmp_path / "s.db")


def _set_version(path: Path, version: int) -> None:
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
    db.commit()
    db.close()


def test_an_older_schema_is_migrated_keeping_its_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.db"
    doc: Doc[Text] = Doc()
    doc["t"] = text = Text("written by the older version")
    store = SQLiteStore(path)
    store.create("a.ipynb", doc.get_update(), None, None)
    store.close()
    _set_version(path, SCHEMA_VERSION - 1)  # as an older kernel_collab left it
    monkeypatch.setitem(sqlite_module._MIGRATIONS, SCHEMA_VERSION - 1,
                        "CREATE TABLE migrated_marker (x INTEGER);")  # fmt: skip
    migrated = SQLiteStore(path)
    loaded = migrated.load("a.ipynb")
    migrated.close()
    assert loaded is not None
    restored: Doc[Text] = Doc()
    restored.apply_update(loaded.update)
    assert str(restored.get("t", type=Text)) == str(text)
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
        SCHEMA_VERSION)  # fmt: skip
    assert db.execute("SELECT count(*) FROM migrated_marker").fetchone()[0] == 0
    db.close()


def test_an_older_schema_without_a_migration_is_refused_not_misread(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "s.db").close()
    _set_version(tmp_path / "s.db", 0)  # no migration from 0 exists (1 → 2 does)
    with pytest.raises(StoreError, match="no migration"):
        SQLiteStore(tmp_path / "s.db")


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "other.db")
    db.execute("CREATE TABLE yupdates (path TEXT, yupdate BLOB)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="is not a kernel_collab store"):
        SQLiteStore(tmp_path / "other.db")


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open store"):
        SQLiteStore(tmp_path / "junk.db")


def test_cli_lists_exports_and_resets(tmp_path: Path) -> None:
    nb = YNotebook()
    nb.set(
        nbformat.v4.new_notebook(
            cells=[
                nbformat.v4.new_code_cell("print('héllo')"),
                nbformat.v4.new_markdown_cell("# T"),
            ]
        )
    )
    store = SQLiteStore(tmp_path / ".kernel_collab.db")
    store.create("dir/nb.ipynb", nb.ydoc.get_update(), None, None)
    store.close()
    db = str(tmp_path / ".kernel_collab.db")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kernel_collab.store", "--db", db, *args],
            capture_output=True,
            text=True,
            check=False,
        )

    listing = cli("list")
    assert listing.returncode == 0 and "dir/nb.ipynb" in listing.stdout
    exported = cli("export", "dir/nb.ipynb")
    assert exported.returncode == 0
    read_back = nbformat.reads(exported.stdout, as_version=4)
    assert [c.source for c in read_back.cells] == ["print('héllo')", "# T"]
    assert cli("reset", "dir/nb.ipynb").returncode == 0
    missing = cli("export", "dir/nb.ipynb")
    assert missing.returncode == 1 and "not in" in missing.stderr


def test_blobs_are_packed_by_what_they_hold_and_read_back_by_any_zlib_reader() -> None:
    """Text-like blobs (Y updates, notebooks of code) get zlib's level 1; a blob of base64
    images, which level 1 barely shrinks at a high price, gets Huffman coding alone."""
    text = b"".join(b'{"cell_type": "code", "source": "x%d = %d"}\n' % (i, i) for i in range(5000))
    images = base64.b64encode(random.Random(3).randbytes(300_000))
    for data in (text, images, b"small"):
        assert zlib.decompress(blobs.pack(data)) == data
    assert len(blobs.pack(text)) < 0.2 * len(text)
    assert len(blobs.pack(images)) <= len(zlib.compress(images, 1))
