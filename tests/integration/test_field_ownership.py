"""Who writes what, held by the sidecar against real peers: one test per rule.

What JupyterLab does passes; what it does on its own but is not a peer's to write is reverted
silently; anything else on the sidecar's fields is undone and its sender closed with 4403.
Each refused change is checked from another peer's side (it never sees it) and from the file.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_ydoc import YNotebook
from nbformat.sign import NotebookNotary
from pycrdt import Array, Doc, Map, Text, YMessageType, YSyncMessageType, create_sync_message
from websockets.asyncio.client import connect as ws_connect

from kernel_collab.notebook_core import files as notebook_file
from kernel_collab.sidecar.docstore import DocumentStore
from kernel_collab.sidecar.trust import outputs_digest
from tests.peers import NotebookPeer, url_with_token
from tests.sidecar_process import SidecarProcess, running_sidecar

pytestmark = pytest.mark.anyio

HTML = {"text/html": "<b>made by the kernel</b>", "text/plain": "made"}
FORGED = {"text/html": '<img src=x onerror="window.__kc_pwned=1">', "text/plain": "x"}


def _notebook(path: Path, *, signed: bool) -> Path:
    cells = []
    for i in range(3):
        cell = nbformat.v4.new_code_cell(f"x{i} = {i}", id=f"cell-{i}")
        cell.outputs = [nbformat.v4.new_output("display_data", data=HTML)]
        cell.execution_count = i + 1
        # An int, as files hold it: Y gives it back as a double (the record must still match).
        cell.metadata["kernel_collab"] = {
            "last_run": {"by": {"name": "Alice"}, "status": "ok", "execution_count": i + 1}
        }
        cells.append(cell)
    nb = nbformat.v4.new_notebook(cells=cells)
    if signed:
        NotebookNotary().sign(nb)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Jupyter data dir of the test's own (the notary's secret and signatures live there)."""
    path = tmp_path / "jupyter-data"
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(path))
    return path


@contextmanager
def _sidecar(tmp_path: Path, *, signed: bool = True) -> Iterator[tuple[SidecarProcess, Path]]:
    nb = _notebook(tmp_path / "nb.ipynb", signed=signed)
    with running_sidecar(nb, tmp_path) as sidecar:
        yield sidecar, nb


@asynccontextmanager
async def _pair(sidecar: SidecarProcess) -> AsyncIterator[tuple[NotebookPeer, NotebookPeer]]:
    async with (
        NotebookPeer.connect(sidecar.url, sidecar.token) as alice,
        NotebookPeer.connect(sidecar.url, sidecar.token) as bob,
    ):
        yield alice, bob


def _cell(peer: NotebookPeer, index: int) -> Map[Any]:
    return peer.notebook.ycells[index]  # type: ignore[no-any-return]


def _plain(peer: NotebookPeer, index: int) -> dict[str, Any]:
    value = _cell(peer, index).to_py()
    assert value is not None
    return value


def _trust(peer: NotebookPeer) -> dict[str, str]:
    status = peer.notebook.ystate.get("kernel_collab")
    record = status.get("trusted") if status is not None else None
    return dict(record.to_py() or {}) if record is not None else {}


async def _refused(peer: NotebookPeer, reason: str) -> None:
    with pytest.raises(ConnectionError):
        await peer.wait_until(lambda p: False)
    assert peer.close_code == 4403
    assert reason in (peer.close_reason or ""), peer.close_reason


async def _synced(sidecar: SidecarProcess, witness: NotebookPeer, marker: str) -> None:
    """Wait until ``witness`` has everything the sidecar committed before ``marker``."""
    async with NotebookPeer.connect(sidecar.url, sidecar.token) as other:
        other.notebook.ystate["dirty"] = marker
        await witness.wait_until(lambda p: p.notebook.ystate.get("dirty") == marker)


async def test_adding_an_output_to_a_cell_is_undone_and_its_sender_closed(
    tmp_path: Path, data_dir: Path
) -> None:
    with _sidecar(tmp_path) as (sidecar, nb):
        async with _pair(sidecar) as (mallory, bob):
            with mallory.doc.transaction():
                _cell(mallory, 0)["outputs"].append(Map({"output_type": "display_data",
                                                         "data": FORGED, "metadata": {}}))
                _cell(mallory, 1)["source"] += "  # and an edit in the same update"
            await _refused(mallory, "outputs are written by the kernel only")
            await _synced(sidecar, bob, "after-attack")
            assert [o["data"] for o in _cell(bob, 0)["outputs"].to_py()] == [HTML]
            assert str(_cell(bob, 1)["source"]) == "x1 = 1"  # the whole update was undone
        assert "onerror" not in nb.read_text()


async def test_changing_an_output_in_place_is_undone(tmp_path: Path, data_dir: Path) -> None:
    with _sidecar(tmp_path) as (sidecar, _nb):
        async with _pair(sidecar) as (mallory, bob):
            _cell(mallory, 2)["outputs"][0]["data"] = FORGED
            await _refused(mallory, "outputs are written by the kernel only")
            await _synced(sidecar, bob, "after")
            assert _cell(bob, 2)["outputs"].to_py()[0]["data"] == HTML


async def test_clear_outputs_as_jupyterlab_does_passes(tmp_path: Path, data_dir: Path) -> None:
    with _sidecar(tmp_path) as (sidecar, _nb):
        async with _pair(sidecar) as (alice, bob):
            with alice.doc.transaction():  # JupyterLab's clearExecution
                cell = _cell(alice, 0)
                cell["outputs"].clear()
                cell["execution_count"] = None
                cell["execution_state"] = "idle"
                cell["metadata"]["trusted"] = True  # "no outputs: trust the cell"
            await bob.wait_until(lambda p: not len(_cell(p, 0)["outputs"]))
            assert _cell(bob, 0).get("execution_count") is None
            await bob.wait_until(lambda p: "trusted" not in _cell(p, 0)["metadata"])
            await alice.flush()
            assert alice.close_code is None


async def test_timing_metadata_written_by_a_peer_is_refused(
    tmp_path: Path, data_dir: Path
) -> None:
    with _sidecar(tmp_path) as (sidecar, _nb):
        async with _pair(sidecar) as (mallory, bob):
            _cell(mallory, 1)["metadata"]["execution"] = {"shell.execute_reply": "forged"}
            await _refused(mallory, "metadata.execution is written by the sidecar only")
            await _synced(sidecar, bob, "after")
            assert "execution" not in _cell(bob, 1)["metadata"]


async def test_a_forged_run_record_is_undone_and_others_edits_kept(
    tmp_path: Path, data_dir: Path
) -> None:
    with _sidecar(tmp_path) as (sidecar, nb):
        async with _pair(sidecar) as (mallory, bob):
            bob.notebook.set_cell(2, source="bob's edit")
            await bob.flush()
            forged = {"last_run": {"by": {"name": "The Teacher"}, "status": "ok"}}
            _cell(mallory, 0)["metadata"]["kernel_collab"] = forged
            await _refused(mallory, "metadata.kernel_collab is written by the sidecar only")
            await _synced(sidecar, bob, "after")
            record = _cell(bob, 0)["metadata"]["kernel_collab"]
            assert record["last_run"]["by"]["name"] == "Alice"
            assert str(_cell(bob, 2)["source"]) == "bob's edit"
        assert "The Teacher" not in nb.read_text()


async def test_the_metadata_editor_re_setting_every_key_passes(
    tmp_path: Path, data_dir: Path
) -> None:
    with _sidecar(tmp_path) as (sidecar, _nb):
        async with _pair(sidecar) as (alice, bob):
            metadata = _cell(alice, 0)["metadata"]
            with alice.doc.transaction():  # JupyterLab's setMetadata(whole dict)
                for key, value in metadata.to_py().items():
                    metadata[key] = value
                metadata["tags"] = ["keep"]
            await bob.wait_until(lambda p: _cell(p, 0)["metadata"].get("tags") == ["keep"])
            await alice.flush()
            assert alice.close_code is None


async def test_trusted_metadata_and_execution_state_are_reverted_silently(
    tmp_path: Path, data_dir: Path
) -> None:
    with _sidecar(tmp_path, signed=False) as (sidecar, _nb):
        async with _pair(sidecar) as (alice, bob):
            with alice.doc.transaction():
                _cell(alice, 0)["metadata"]["trusted"] = True
                _cell(alice, 0)["execution_state"] = "running"
                _cell(alice, 0)["metadata"]["tags"] = ["kept"]
            await bob.wait_until(lambda p: _cell(p, 0)["metadata"].get("tags") == ["kept"])
            await _synced(sidecar, bob, "after")
            assert "trusted" not in _cell(bob, 0)["metadata"]
            assert _cell(bob, 0).get("execution_state") != "running"
            await alice.wait_until(lambda p: "trusted" not in _cell(p, 0)["metadata"])
            assert alice.close_code is None


@pytest.mark.parametrize(
    ("key", "value"),
    [("hash", "forged"), ("path", "elsewhere.ipynb"), ("document_id", "other"),
     ("kernel_collab", None)],
)  # fmt: skip
async def test_the_state_s_sidecar_fields_are_refused(
    tmp_path: Path, data_dir: Path, key: str, value: Any
) -> None:
    with _sidecar(tmp_path) as (sidecar, _nb):
        async with _pair(sidecar) as (mallory, bob):
            before = bob.notebook.ystate.get(key)
            before = before.to_py() if isinstance(before, Map) else before
            mallory.notebook.ystate[key] = Map({"forged": True}) if value is None else value
            await _refused(mallory, f"state.{key} is written by the sidecar only")
            await _synced(sidecar, bob, "after")
            after = bob.notebook.ystate.get(key)
            assert (after.to_py() if isinstance(after, Map) else after) == before


async def test_the_trust_record_cannot_be_written(tmp_path: Path, data_dir: Path) -> None:
    with _sidecar(tmp_path, signed=False) as (sidecar, _nb):
        async with _pair(sidecar) as (mallory, bob):
            assert _trust(bob) == {}
            status = mallory.notebook.ystate["kernel_collab"]
            status["trusted"]["cell-0"] = outputs_digest([])
            await _refused(mallory, "state.kernel_collab is written by the sidecar only")
            await _synced(sidecar, bob, "after")
            assert _trust(bob) == {}


async def test_state_dirty_is_anyone_s(tmp_path: Path, data_dir: Path) -> None:
    with _sidecar(tmp_path) as (sidecar, _nb):
        async with _pair(sidecar) as (alice, bob):
            alice.notebook.ystate["dirty"] = True
            await bob.wait_until(lambda p: p.notebook.ystate.get("dirty") is True)
            assert alice.close_code is None


async def test_a_signed_file_is_trusted_and_a_moved_cell_keeps_its_trust(
    tmp_path: Path, data_dir: Path
) -> None:
    with _sidecar(tmp_path) as (sidecar, _nb):
        async with _pair(sidecar) as (alice, bob):
            assert set(_trust(bob)) == {"cell-0", "cell-1", "cell-2"}
            with alice.doc.transaction():  # JupyterLab's move: delete, insert a copy
                copy = _plain(alice, 0)
                del alice.notebook.ycells[0]
                alice.notebook.ycells.insert(2, alice.notebook.create_ycell(copy))
            await bob.wait_until(lambda p: _cell(p, 2)["id"] == "cell-0")
            await _synced(sidecar, bob, "after")
            assert set(_trust(bob)) == {"cell-0", "cell-1", "cell-2"}
            assert _cell(bob, 2)["metadata"]["kernel_collab"]["last_run"]["by"]["name"] == "Alice"
            assert alice.close_code is None


async def test_an_unsigned_file_is_untrusted(tmp_path: Path, data_dir: Path) -> None:
    with _sidecar(tmp_path, signed=False) as (sidecar, _nb):
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as bob:
            assert _trust(bob) == {}
            assert len(_cell(bob, 0)["outputs"]) == 1  # shown, untrusted


async def test_other_outputs_under_a_trusted_cell_s_id_are_untrusted(
    tmp_path: Path, data_dir: Path
) -> None:
    """A "move" that brings other outputs keeps them, untrusted; a forged run record and a
    trust claim in the inserted cell are dropped; a copy under a taken id gets a new id."""
    with _sidecar(tmp_path) as (sidecar, _nb):
        async with _pair(sidecar) as (mallory, bob):
            with mallory.doc.transaction():
                copy = _plain(mallory, 0)
                copy["outputs"] = [{"output_type": "display_data", "data": FORGED,
                                    "metadata": {}}]  # fmt: skip
                copy["metadata"] = {"trusted": True,
                                    "kernel_collab": {"last_run": {"by": {"name": "Teacher"}}}}
                del mallory.notebook.ycells[0]
                mallory.notebook.ycells.insert(0, mallory.notebook.create_ycell(copy))
                twin = _plain(mallory, 1)  # a copy of cell-1 under its own id
                mallory.notebook.ycells.append(mallory.notebook.create_ycell(twin))
            await bob.wait_until(lambda p: p.notebook.cell_number == 4)
            await _synced(sidecar, bob, "after")
            assert "cell-0" not in _trust(bob)
            metadata = _cell(bob, 0)["metadata"].to_py()
            assert "trusted" not in metadata and "kernel_collab" not in metadata
            assert _cell(bob, 0)["outputs"].to_py()[0]["data"] == FORGED  # kept, untrusted
            ids = [c["id"] for c in bob.notebook.ycells.to_py()]
            assert len(set(ids)) == 4 and ids[1] == "cell-1"
            assert "cell-1" in _trust(bob) and ids[3] not in _trust(bob)
            assert "kernel_collab" not in _cell(bob, 3)["metadata"]


async def test_an_outside_change_to_outputs_is_merged_untrusted(
    tmp_path: Path, data_dir: Path
) -> None:
    """The file path does not launder outputs: an editor (or a signed save through the contents
    API) changing outputs on disk brings them in untrusted, run records marked from the file."""
    with _sidecar(tmp_path) as (sidecar, nb):
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as bob:
            assert "cell-1" in _trust(bob)
            on_disk = nbformat.read(nb, as_version=4)
            on_disk.cells[1].outputs = [nbformat.v4.new_output("display_data", data=FORGED)]
            on_disk.cells[1].metadata["kernel_collab"] = {"last_run": {"by": {"name": "Eve"}}}
            NotebookNotary().sign(on_disk)  # as jupyter_server does for a "trusted" save
            nbformat.write(on_disk, nb)
            await bob.wait_until(
                lambda p: _cell(p, 1)["outputs"].to_py()[0]["data"] == FORGED)
            await bob.wait_until(lambda p: "cell-1" not in _trust(p))
            last_run = _cell(bob, 1)["metadata"]["kernel_collab"]["last_run"]
            assert last_run["by"]["name"] == "Eve" and last_run["from_file"] is True
            assert {"cell-0", "cell-2"} <= set(_trust(bob))


async def test_trust_records_survive_a_restart(tmp_path: Path, data_dir: Path) -> None:
    nb = _notebook(tmp_path / "nb.ipynb", signed=True)
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as bob:
            assert len(_trust(bob)) == 3
    nb.write_text(nb.read_text())  # still signed; the room now starts from its store
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as bob:
            assert len(_trust(bob)) == 3


async def test_a_store_from_before_trust_records_trusts_only_the_signed_file_s_outputs(
    tmp_path: Path, data_dir: Path
) -> None:
    """An old store has no trust record: outputs equal to the signed file's stay trusted, any
    other (e.g. planted by a peer back then) is untrusted."""
    nb = _notebook(tmp_path / "nb.ipynb", signed=True)
    data = nb.read_bytes()
    old = notebook_file.parse(nb, data)
    old["cells"][2]["outputs"] = [{"output_type": "display_data", "data": FORGED, "metadata": {}}]
    ynb = YNotebook()
    ynb.set(old)
    store = DocumentStore(tmp_path / ".kernel_collab.db")
    await store.open()
    await store.create("nb.ipynb", ynb.ydoc.get_update(), data, notebook_file.content_hash(data))
    await store.close()
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as bob:
            assert _cell(bob, 2)["outputs"].to_py()[0]["data"] == FORGED
            assert set(_trust(bob)) == {"cell-0", "cell-1"}


async def test_execution_state_is_reverted_to_the_sidecar_s_truth_never_deleted(
    tmp_path: Path, data_dir: Path
) -> None:
    """A cell JupyterLab inserts (a move, a paste) has no execution_state; its Clear Outputs
    then adds ``idle``. Deleting it again in the same relayed update would break every other
    page's cell model (a key added and deleted in one Yjs transaction): it is kept, as the
    sidecar's truth, and a wrong value is put right, not removed."""
    with _sidecar(tmp_path) as (sidecar, _nb):
        async with _pair(sidecar) as (alice, bob):
            with alice.doc.transaction():
                copy = _plain(alice, 0)
                copy.pop("execution_state", None)
                del alice.notebook.ycells[0]
                alice.notebook.ycells.insert(0, Map({**copy, "source": Text(copy["source"]),
                    "metadata": Map(copy["metadata"]),
                    "outputs": Array([Map(o) for o in copy["outputs"]])}))  # fmt: skip
            await bob.wait_until(lambda p: "execution_state" not in _cell(p, 0))
            with alice.doc.transaction():
                _cell(alice, 0)["outputs"].clear()
                _cell(alice, 0)["execution_state"] = "idle"
            await bob.wait_until(lambda p: not len(_cell(p, 0)["outputs"]))
            assert _cell(bob, 0).get("execution_state") == "idle"
            _cell(alice, 1)["execution_state"] = "running"  # not running: put right
            await bob.wait_until(lambda p: _cell(p, 1).get("execution_state") == "idle")
            assert alice.close_code is None


async def _newcomer_payload(sidecar: SidecarProcess) -> bytes:
    """The document as the sidecar sends it to someone who joins with nothing."""
    async with ws_connect(url_with_token(sidecar.url, sidecar.token), max_size=None) as ws:
        await ws.send(create_sync_message(Doc()))
        async for message in ws:
            if isinstance(message, bytes) and message[:2] == bytes(
                    [YMessageType.SYNC, YSyncMessageType.SYNC_STEP2]):  # fmt: skip
                return message
    raise AssertionError("the sidecar never sent its document")


async def test_text_a_person_deletes_is_forgotten_by_the_room_and_its_store(
    tmp_path: Path, data_dir: Path
) -> None:
    """Typed and deleted text (a pasted secret) is garbage collected in the sidecar's
    document: a newcomer never receives it, the document does not grow with it, and the
    store's live state keeps none of it once compacted (its history keeps versions, by design,
    until purged)."""
    nb = _notebook(tmp_path / "nb.ipynb", signed=True)
    with running_sidecar(nb, tmp_path, "--DocumentStore.compact_max_updates=1") as sidecar:
        async with _pair(sidecar) as (alice, bob):
            before = await _newcomer_payload(sidecar)
            source = _cell(alice, 0)["source"]
            for i in range(300):
                with alice.doc.transaction():
                    source.insert(0, f"SECRET-{i:04d} ")
                with alice.doc.transaction():
                    del source[0 : len("SECRET-0000 ")]
            await _synced(sidecar, bob, "typed and deleted")
            assert str(_cell(bob, 0)["source"]) == "x0 = 0"
            after = await _newcomer_payload(sidecar)
        assert b"SECRET-" not in after
        assert len(after) < len(before) + 1024, (len(before), len(after))
    with sqlite3.connect(tmp_path / ".kernel_collab.db") as db:
        live = [zlib.decompress(row[0]) for row in db.execute("SELECT snapshot FROM documents")]
        live += [bytes(row[0]) for row in db.execute("SELECT data FROM updates")]
    assert live and not any(b"SECRET-" in blob for blob in live)
