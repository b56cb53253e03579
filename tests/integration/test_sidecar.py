"""The standalone sidecar, driven as a user would: a real process, real peers, real files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import nbformat
import pytest
from pycrdt import Map
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from kernel_collab import protocol
from kernel_collab.notebook_core import files as notebook_file
from tests.files import wait_for_file, write_notebook
from tests.peers import NotebookPeer, url_with_token
from tests.sidecar_process import SidecarProcess, running_sidecar, sidecar_command

pytestmark = pytest.mark.anyio


def _source(peer: NotebookPeer, index: int) -> str:
    return str(peer.notebook.ycells[index]["source"])


def _status(peer: NotebookPeer) -> dict[str, Any]:
    value = peer.notebook.ystate.get("kernel_collab")
    return value.to_py() if value is not None else {}


def _cells_on_disk(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells]


async def test_two_peers_converge_and_see_each_other(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", ["a = 1", "b = 2"])
    with running_sidecar(nb, tmp_path) as sidecar:
        async with (
            NotebookPeer.connect(sidecar.url, sidecar.token) as alice,
            NotebookPeer.connect(sidecar.url, sidecar.token) as bob,
        ):
            assert [_source(alice, i) for i in range(2)] == ["a = 1", "b = 2"]
            alice.notebook.set_cell(0, source="a = 10")
            bob.notebook.set_cell(1, source="b = 20")
            alice.set_awareness({"user": {"name": "Alice"}})
            await bob.wait_until(lambda p: _source(p, 0) == "a = 10")
            await alice.wait_until(lambda p: _source(p, 1) == "b = 20")
            await bob.wait_until(
                lambda p: any(s.get("user", {}).get("name") == "Alice" for s in p.peers.values())
            )
            assert alice.notebook.get()["cells"] == bob.notebook.get()["cells"]
            state = bob.notebook.ystate.to_py()
            assert state is not None
            assert state["path"] == "nb.ipynb" and state["document_id"]


async def test_a_peer_without_the_token_is_refused(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", ["x"])
    with running_sidecar(nb, tmp_path) as sidecar:
        for token in (None, "wrong"):
            with pytest.raises(InvalidStatus) as refused:
                async with NotebookPeer.connect(sidecar.url, token):
                    pass
            assert refused.value.response.status_code == 401


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x00\x02\xff\xff\xff", "protocol error"),
        (b"garbage bytes that mean nothing", "protocol error"),
        (b"\x00\x02\x05\x01\x02", "protocol error"),  # truncated update
        (b"\x00\x02\x04\x01\x02\x03\x04", "invalid Y update"),
        ("a text frame", "text frames"),
    ],
)
async def test_malformed_messages_close_only_that_peer(
    tmp_path: Path, payload: bytes | str, reason: str
) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", ["x = 1"])
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as good:
            async with ws_connect(url_with_token(sidecar.url, sidecar.token)) as bad:
                await bad.send(payload)
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await bad.recv()
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1002
                assert reason in closed.value.rcvd.reason
            good.notebook.set_cell(0, source="x = 2")
            await good.flush()
            async with NotebookPeer.connect(sidecar.url, sidecar.token) as late:
                await late.wait_until(lambda p: _source(p, 0) == "x = 2")
        assert "protocol error" in sidecar.log


async def test_a_huge_message_closes_that_connection(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", ["x = 1"])
    with running_sidecar(nb, tmp_path, "--max-message-size", "100000") as sidecar:
        async with ws_connect(url_with_token(sidecar.url, sidecar.token), max_size=None) as bad:
            await bad.send(b"\x00\x02" + b"\x80" * 200_000)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await bad.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as good:
            assert _source(good, 0) == "x = 1"


async def test_edits_are_saved_to_the_file(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", ["x = 1"])
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            peer.notebook.set_cell(0, source="x = 'saved ✓'")
            await wait_for_file(nb, lambda: _cells_on_disk(nb) == ["x = 'saved ✓'"])
            await peer.wait_until(lambda p: p.notebook.ystate.get("dirty") is False)
            assert p_hash(nb) == peer.notebook.ystate.get("hash")
    nbformat.validate(nbformat.read(nb, as_version=4))


async def test_each_joiner_gets_the_document_as_it_is_when_it_joins(tmp_path: Path) -> None:
    """Joiners of an unchanged document share one encoding of it; whoever joins after a
    change gets the document with that change, whether others stayed in the room or not."""
    nb = write_notebook(tmp_path / "nb.ipynb", ["a = 1", "b = 2"])
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as alice:
            expected = "a = 1"
            for step in range(3):
                async with NotebookPeer.connect(sidecar.url, sidecar.token) as early:
                    assert _source(early, 0) == expected
                expected = f"a = {step + 10}"
                alice.notebook.set_cell(0, source=expected)
                async with NotebookPeer.connect(sidecar.url, sidecar.token) as late:
                    assert [_source(late, i) for i in range(2)] == [expected, "b = 2"]
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as last:  # nobody was in
            assert [_source(last, i) for i in range(2)] == ["a = 12", "b = 2"]


async def test_storing_a_notebook_as_it_opens_never_holds_up_whoever_opens_it(
    tmp_path: Path,
) -> None:
    """With the store locked by another writer, a notebook opened from its file is served and
    synced all the same (its file holds it); it is stored once the lock is gone."""
    with running_sidecar(write_notebook(tmp_path / "other.ipynb", ["y = 1"]), tmp_path):
        pass  # the store exists
    nb = write_notebook(tmp_path / "nb.ipynb", ["x = 1"])
    holder = sqlite3.connect(tmp_path / ".kernel_collab.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the sidecar waits up to 10 s for this lock
        with running_sidecar(nb, tmp_path) as sidecar:
            with anyio.fail_after(5):
                async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
                    assert _source(peer, 0) == "x = 1"
            holder.execute("COMMIT")
            async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
                peer.notebook.set_cell(0, source="x = 'stored'")
                await wait_for_file(nb, lambda: _cells_on_disk(nb) == ["x = 'stored'"])
    finally:
        holder.close()
    with running_sidecar(nb, tmp_path) as again:
        async with NotebookPeer.connect(again.url, again.token) as peer:
            assert _source(peer, 0) == "x = 'stored'"
        assert "restored document" in again.log


async def test_a_file_written_by_another_tool_is_left_as_it_is_until_someone_edits(
    tmp_path: Path,
) -> None:
    """Opening, touching the notebook's state and saving on shutdown rewrite nothing: the file
    keeps its own layout (indent 2, keys unsorted) until its content changes."""
    cells: list[dict[str, Any]] = [{"source": "x = 1", "metadata": {}, "id": "a", "outputs": [],
              "execution_count": None, "cell_type": "code"}]  # fmt: skip
    nb = tmp_path / "nb.ipynb"
    nb.write_text(json.dumps({"nbformat_minor": 5, "nbformat": 4, "metadata": {},
                              "cells": cells}, indent=2))  # fmt: skip
    written = nb.read_bytes()
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            peer.notebook.ystate["dirty"] = True  # JupyterLab's own state flag: not content
            await peer.wait_until(lambda p: p.notebook.ystate.get("dirty") is True)
        assert sidecar.stop() == 0  # a shutdown saves
    assert nb.read_bytes() == written
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            peer.notebook.set_cell(0, source="x = 2")
            await wait_for_file(nb, lambda: _cells_on_disk(nb) == ["x = 2"])


def _holds(path: Path, data: bytes) -> bool:
    return path.read_bytes() == data


def _move(peer: NotebookPeer, source: int, target: int) -> None:
    """Move a cell as JupyterLab does: its copy inserted, the original deleted (one update)."""
    with peer.doc.transaction():
        cell = peer.notebook.ycells[source].to_py()
        del peer.notebook.ycells[source]
        peer.notebook.ycells.insert(target, peer.notebook.create_ycell(cell))


async def test_each_save_writes_exactly_what_jupyter_would(tmp_path: Path) -> None:
    """Saves render only the cells that changed since the last one: after edits, a new cell,
    a deleted one and a moved one, the file is still byte for byte nbformat's."""
    nb = write_notebook(tmp_path / "nb.ipynb", [f"x = {n}" for n in range(6)])
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            steps: list[Callable[[], object]] = [
                lambda: peer.notebook.set_cell(2, source="x = 'two' ✓"),
                lambda: peer.notebook.append_cell({"cell_type": "markdown", "id": "new",
                                                   "metadata": {}, "source": "# new\n"}),
                lambda: peer.notebook.ycells.pop(0),
                lambda: _move(peer, 0, 3),
                lambda: peer.notebook.set_cell(1, source="y = [\n 1,\n]"),
            ]  # fmt: skip
            for step in steps:
                step()
                expected = notebook_file.serialize(peer.notebook.get())
                await wait_for_file(nb, partial(_holds, nb, expected))


def p_hash(path: Path) -> str:
    """The content hash the sidecar publishes for a file."""
    return notebook_file.content_hash(path.read_bytes())


async def test_outside_edit_is_merged_and_live_typing_survives(tmp_path: Path) -> None:
    sources = [f"cell_{i} = {i}" for i in range(8)]
    nb = write_notebook(tmp_path / "nb.ipynb", sources)
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            # The peer types in cell 3; meanwhile an editor changes cell 7 on disk.
            peer.notebook.ycells[3]["source"].insert(len("cell_3 = 3"), " + 100")
            on_disk = nbformat.read(nb, as_version=4)
            on_disk.cells[7].source = "cell_7 = 'from the editor'"
            notebook_file.write_atomic(nb, nbformat.writes(on_disk).encode())
            await peer.wait_until(lambda p: _source(p, 7) == "cell_7 = 'from the editor'")
            assert _source(peer, 3) == "cell_3 = 3 + 100"
            await wait_for_file(
                nb,
                lambda: _cells_on_disk(nb)[3] == "cell_3 = 3 + 100"
                and _cells_on_disk(nb)[7] == "cell_7 = 'from the editor'",
            )


async def test_corrupt_file_pauses_autosave_until_a_peer_saves_over_it(tmp_path: Path) -> None:
    """A plain save never overwrites a file that did not parse; "save and overwrite" does, and
    says what it overwrote."""
    nb = write_notebook(tmp_path / "nb.ipynb", ["x = 1"])
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            nb.write_text('{"cells": [ {"cell_type": "co')  # a half-written file
            await peer.wait_until(lambda p: _status(p).get("autosave") == "paused")
            assert "not valid JSON" in _status(peer)["file_error"]
            peer.notebook.set_cell(0, source="x = 2")
            await peer.wait_until(lambda p: p.notebook.ystate.get("dirty") is True)
            assert nb.read_text() == '{"cells": [ {"cell_type": "co'  # not overwritten
            plain = await request(sidecar, {"type": "save", "id": 1})
            assert plain["ok"] is False and "not valid JSON" in plain["error"]
            assert nb.read_text() == '{"cells": [ {"cell_type": "co'  # still not overwritten
            reply = await request(sidecar, {"type": "save", "id": 2, "force": True})
            assert reply["ok"] is True
            assert "could not be read" in reply["overwrote"]
            assert _cells_on_disk(nb) == ["x = 2"]
            await peer.wait_until(lambda p: _status(p).get("autosave") == "on")
            assert _status(peer).get("file_error") is None


async def test_a_file_over_the_size_limit_is_never_loaded(tmp_path: Path) -> None:
    """Huge files: refused at start in one line; appearing during a session, the document is
    kept, autosave pauses and peers are told, until someone saves over it."""
    limit = "--DiskSync.max_file_bytes=20000"
    big = write_notebook(tmp_path / "big.ipynb", ["x = 'y' * 10", "#" * 30_000])
    result = await anyio.run_process(
        sidecar_command(big, tmp_path, limit), check=False,
        env={**os.environ, "KERNEL_COLLAB_TOKEN": "t"},
    )  # fmt: skip
    assert result.returncode != 0
    assert "more than the 20,000-byte limit" in result.stderr.decode().strip().splitlines()[-1]

    nb = write_notebook(tmp_path / "nb.ipynb", ["x = 1"])
    with running_sidecar(nb, tmp_path, limit) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            nb.write_bytes(big.read_bytes())  # a huge version appears on disk
            await peer.wait_until(lambda p: _status(p).get("autosave") == "paused")
            assert "20,000-byte limit" in _status(peer)["file_error"]
            assert _source(peer, 0) == "x = 1" and peer.notebook.cell_number == 1
            peer.notebook.set_cell(0, source="x = 2")
            await peer.wait_until(lambda p: p.notebook.ystate.get("dirty") is True)
            assert nb.read_bytes() == big.read_bytes()  # not silently overwritten
            assert (await request(sidecar, {"type": "save", "id": 1}))["ok"] is False
            assert nb.read_bytes() == big.read_bytes()
            forced = await request(sidecar, {"type": "save", "id": 2, "force": True})
            assert forced["ok"] is True and "20,000-byte limit" in forced["overwrote"]
            assert _cells_on_disk(nb) == ["x = 2"]


async def test_corrupt_file_that_becomes_valid_is_merged(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", ["x = 1", "y = 1"])
    good = nb.read_text()
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            nb.write_text("not json at all")
            await peer.wait_until(lambda p: _status(p).get("autosave") == "paused")
            notebook_file.write_atomic(nb, good.replace("y = 1", "y = 'fixed'").encode())
            await peer.wait_until(lambda p: _status(p).get("autosave") == "on")
            await peer.wait_until(lambda p: _source(p, 1) == "y = 'fixed'")
            assert _source(peer, 0) == "x = 1"


async def request(sidecar: SidecarProcess, obj: dict[str, Any]) -> dict[str, Any]:
    """Send one kernel_collab request on a fresh connection and return the reply."""
    async with ws_connect(url_with_token(sidecar.url, sidecar.token)) as ws:
        await ws.send(protocol.encode_request(obj))
        while True:
            message = protocol.decode(await ws.recv())  # type: ignore[arg-type]
            if message.kind is protocol.Kind.REQUEST:
                assert message.request is not None
                return message.request


async def test_restart_restores_without_duplicates(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", ["a", "b", "c"])
    for _ in range(3):
        with running_sidecar(nb, tmp_path) as sidecar:
            async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
                assert peer.notebook.cell_number == 3
                n = len(_source(peer, 0))
                peer.notebook.ycells[0]["source"].insert(n, "+")
                await peer.acknowledged()
    assert _cells_on_disk(nb)[0] == "a+++"
    # A fourth start restores the same cells: nothing duplicated by store + file.
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            assert [_source(peer, i) for i in range(3)] == ["a+++", "b", "c"]


async def test_what_peers_sent_before_a_stop_is_stored(tmp_path: Path) -> None:
    """An edit already on its way when the sidecar is told to stop (sent, not yet read: the
    sidecar is paused meanwhile; its peer gone at once) is read, stored and saved before the
    sidecar exits."""
    nb = write_notebook(tmp_path / "nb.ipynb", ["a", "b"])
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            sidecar.proc.send_signal(signal.SIGSTOP)
            try:
                peer.notebook.set_cell(1, source="b = 'on its way'")
                await peer.flush()  # in the socket: the sidecar has not read it
                peer.drop()  # and the peer gone, without a closing handshake
                sidecar.proc.send_signal(signal.SIGTERM)
            finally:
                sidecar.proc.send_signal(signal.SIGCONT)
            assert await anyio.to_thread.run_sync(sidecar.proc.wait, 30) == 0
    assert _cells_on_disk(nb) == ["a", "b = 'on its way'"]
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            assert [_source(peer, i) for i in range(2)] == ["a", "b = 'on its way'"]


async def test_file_changed_while_down_is_merged_at_start(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", ["a", "b"])
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            peer.notebook.set_cell(0, source="a = 'live'")
            await peer.acknowledged()  # stored: what was only sent may die with the sidecar
    on_disk = nbformat.read(nb, as_version=4)
    on_disk.cells[1].source = "b = 'edited while down'"
    nbformat.write(on_disk, nb)
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            assert [_source(peer, i) for i in range(2)] == ["a = 'live'", "b = 'edited while down'"]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("{ nope"), "not valid JSON"),
        (lambda p: p.write_text(json.dumps({"a": 1})), "not a notebook"),
        (lambda p: p.write_bytes(b"\xff\xfe{}"), "not UTF-8"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
)
def test_bad_path_at_start_is_one_clear_line(
    tmp_path: Path, make: Callable[[Path], object], reason: str
) -> None:
    path = tmp_path / "nb.ipynb"
    make(path)
    result = subprocess.run(
        sidecar_command(path, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KERNEL_COLLAB_TOKEN": "t"},
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and reason in lines[0]


def test_help_explains_how_to_serve_a_notebook() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kernel_collab.sidecar", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for option in ("--port", "--root", "--token", "KERNEL_COLLAB_TOKEN", "--store"):
        assert option in result.stdout


async def test_store_stays_within_twice_the_notebook_after_a_burst(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", [f"x_{i} = {i}" * 5 for i in range(200)],
                        outputs=True)
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            text = peer.notebook.ycells[0]["source"]
            for i in range(10_000):
                text.insert(len(text), "abcdefghij"[i % 10])
            await peer.flush()
            stats = await request(sidecar, {"type": "stats"})
            await wait_for_file(nb, lambda: len(_cells_on_disk(nb)[0]) > 10_000)
            await peer.wait_until(lambda p: p.notebook.ystate.get("dirty") is False)
            notebook_size = nb.stat().st_size
            history: int = (await request(sidecar, {"type": "stats"}))["history_bytes"]

            def live() -> int:  # the database and its WAL (-shm: SQLite's fixed-size index)
                return sum((tmp_path / name).stat().st_size for name in
                           (".kernel_collab.db", ".kernel_collab.db-wal")
                           if (tmp_path / name).exists()) - history  # fmt: skip

            # The live document's bound, once the room is quiet (free pages given back, the
            # WAL truncated: a second after the last commit); history has its own budget.
            with contextlib.suppress(TimeoutError):
                await wait_for_file(tmp_path / ".kernel_collab.db",
                                    lambda: live() <= 2 * notebook_size, timeout=30)  # fmt: skip
            assert live() <= 2 * notebook_size, (live(), history, notebook_size)
        assert stats["committed_updates"] >= 1
        assert stats["commits"] < 10_000, "every edit was its own commit: no group commit"


async def test_continuous_changes_are_still_saved_every_few_seconds(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", [""])
    with running_sidecar(nb, tmp_path, "--save-delay", "1", "--save-max-interval", "2") as sc:
        async with NotebookPeer.connect(sc.url, sc.token) as peer:
            text = peer.notebook.ycells[0]["source"]
            saved_while_typing: list[str] = []
            # Someone types a character every 0.25 s, never pausing a full second: the
            # debounce alone would never save; the maximum interval must.
            with anyio.move_on_after(6):
                while not saved_while_typing:
                    text.insert(len(text), "x")
                    await peer.flush()
                    with anyio.move_on_after(0.25):
                        await wait_for_file(nb, lambda: _cells_on_disk(nb)[0] != "")
                        saved_while_typing.append(_cells_on_disk(nb)[0])
            assert saved_while_typing, "nothing was saved in 6 s of continuous typing"
            assert len(saved_while_typing[0]) < 6 / 0.25


async def test_a_peer_vanishing_mid_message_leaves_the_room_intact(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", ["x = 1"])
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as good:
            reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
            writer.write(
                f"GET /?token={sidecar.token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            await writer.drain()
            assert b"101" in await reader.readline()
            # Half a binary frame announcing 1000 bytes, then the TCP connection drops.
            writer.write(bytes([0x82, 0xFE, 0x03, 0xE8, 1, 2, 3, 4]) + b"\x00\x02" * 10)
            await writer.drain()
            writer.transport.abort()
            good.notebook.set_cell(0, source="x = 'still fine'")
            async with NotebookPeer.connect(sidecar.url, sidecar.token) as late:
                await late.wait_until(lambda p: _source(p, 0) == "x = 'still fine'")


async def test_a_peer_from_an_older_epoch_is_told_to_reload(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", ["a"])
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            epoch = _status(peer)["epoch"]
    # The store is reset: the document starts a new epoch from the file.
    (tmp_path / ".kernel_collab.db").unlink()
    with running_sidecar(nb, tmp_path) as sidecar:
        stale = f"{sidecar.url}?epoch={epoch}&token={sidecar.token}"
        async with ws_connect(stale) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4409
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as fresh:
            assert _status(fresh)["epoch"] != epoch
            async with ws_connect(f"{sidecar.url}?epoch={_status(fresh)['epoch']}"
                                  f"&token={sidecar.token}") as current:
                assert protocol.decode(await current.recv()).kind is protocol.Kind.SYNC_STEP1  # type: ignore[arg-type]


async def test_updates_breaking_the_schema_are_repaired_and_the_sender_reloads(
    tmp_path: Path,
) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", ["x = 1", "y = 2", "z = 3"])
    hostile: list[tuple[int | None, str, Any]] = [
        (None, "", Map({"cell_type": "code", "source": 5})),  # appended: no id, no text
        (0, "source", 42),
        (1, "outputs", "not a list"),  # the sidecar's field: refused and undone (4403)
        (2, "cell_type", "bogus"),
    ]
    with running_sidecar(nb, tmp_path) as sidecar:
        for index, key, value in hostile:
            async with NotebookPeer.connect(sidecar.url, sidecar.token) as bad:
                if index is None:
                    bad.notebook.ycells.append(value)
                else:
                    bad.notebook.ycells[index][key] = value
                with pytest.raises(ConnectionError):
                    await bad.wait_until(lambda p: False)
                if key == "outputs":
                    assert bad.close_code == 4403
                    assert "outputs may not be replaced" in (bad.close_reason or "")
                else:
                    assert bad.close_code == 1002
                    assert "invalid notebook" in (bad.close_reason or "")
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as good:
            good.notebook.set_cell(1, source="y = 'still served'")
            await good.wait_until(lambda p: _source(p, 1) == "y = 'still served'")
            cells = good.notebook.get()["cells"]
        assert sidecar.proc.poll() is None
    # Repaired in place: ids kept, the bad value dropped, the nameless cell given an id.
    assert [c["id"] for c in cells[:3]] == ["cell-0", "cell-1", "cell-2"]
    assert [c["source"] for c in cells] == ["", "y = 'still served'", "z = 3", ""]
    assert cells[1]["outputs"] == [] and cells[2]["cell_type"] == "code" and cells[3]["id"]
    await wait_for_file(nb, lambda: _cells_on_disk(nb)[1] == "y = 'still served'")
    nbformat.validate(nbformat.read(nb, as_version=4))


async def test_the_queue_dedupes_limits_floods_and_forgets_deleted_cells(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", [f"c{i}" for i in range(5)])
    # No kernel is attached to a standalone sidecar: requests wait in the queue.
    with running_sidecar(nb, tmp_path, "--ExecutionQueue.max_entries_per_person=3") as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            for cell in ("cell-0", "cell-1", "cell-0", "cell-2"):
                assert (await request(sidecar, {"type": "execute", "cell_id": cell}))["ok"]
            flood = await request(sidecar, {"type": "execute", "cell_id": "cell-3"})
            assert flood["ok"] is False and "limit 3" in flood["error"]
            await peer.wait_until(lambda p: [e["cell_id"] for e in _status(p).get("queue", [])]
                                  == ["cell-0", "cell-1", "cell-2"])  # fmt: skip
            for bad, reason in [("nope", "no cell with id"), (None, "needs a cell_id")]:
                refused = await request(sidecar, {"type": "execute", "cell_id": bad})
                assert reason in refused["error"]
            del peer.notebook.ycells[1]  # cell-1, queued, is deleted
            await peer.wait_until(lambda p: [e["cell_id"] for e in _status(p).get("queue", [])]
                                  == ["cell-0", "cell-2"])  # fmt: skip


async def test_stats_report_the_event_loop_lag_while_peers_are_connected(tmp_path: Path) -> None:
    """Operators (and the benchmark) see how late the sidecar's loop runs: sampled only while
    someone is connected, small when nothing blocks it."""
    nb = write_notebook(tmp_path / "nb.ipynb", ["x = 1"])
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token):
            for _ in range(200):  # a request is all there is to poll: no event to await
                stats = await request(sidecar, {"type": "stats"})
                if stats["loop_lag_samples"] >= 5:
                    break
                await anyio.sleep(0.05)
            else:
                raise AssertionError(f"no loop lag sampled with a peer connected: {stats}")
        assert stats["loop_lag_p50_s"] < 0.25, stats
        assert stats["loop_lag_p99_s"] >= stats["loop_lag_p50_s"]
