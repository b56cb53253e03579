"""A full or read-only filesystem under the notebook and its store: a real small tmpfs.

Mounting needs root (as the CI machine runs); the test fails, saying so, otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import nbformat
import pytest

from tests.files import wait_for_file, write_notebook
from tests.peers import NotebookPeer
from tests.sidecar_process import SidecarProcess, running_sidecar

pytestmark = pytest.mark.anyio


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted at the end."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"mounting a tmpfs needs root (uid {os.getuid()}): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@contextlib.contextmanager
def _log_on_failure(sidecar: SidecarProcess) -> Iterator[None]:
    """Add the sidecar's exit code and log to a failure."""
    try:
        yield
    except (AssertionError, ConnectionError, TimeoutError) as exc:
        raise AssertionError(f"{exc}\nsidecar exit code {sidecar.proc.poll()}; its log:\n"
                             f"{sidecar.log}") from exc


def _status(peer: NotebookPeer) -> dict[str, Any]:
    value = peer.notebook.ystate.get("kernel_collab")
    return value.to_py() if value is not None else {}


def _fill(folder: Path, leave: int = 0) -> Path:
    """Fill the filesystem up to its last byte (but ``leave`` bytes); return the filler."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 1):
            try:
                while os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize > leave:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


async def test_a_full_disk_keeps_every_edit_and_says_so_until_there_is_room(
    small_fs: Path,
) -> None:
    nb = write_notebook(small_fs / "nb.ipynb", ["x = 1"])
    with running_sidecar(nb, small_fs) as sidecar, _log_on_failure(sidecar):
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            peer.notebook.set_cell(0, source="x = 'before the disk filled'")
            await wait_for_file(nb, lambda: "before the disk filled" in nb.read_text())
            filler = _fill(small_fs)
            for i in range(20):  # edits while nothing can be written
                peer.notebook.set_cell(0, source=f"x = 'edit {i} on a full disk'")
            await peer.wait_until(lambda p: bool(_status(p).get("store_error")))
            await peer.wait_until(lambda p: bool(_status(p).get("save_error")))
            store_error = str(_status(peer)["store_error"])
            assert "full" in store_error or "No space left" in store_error, store_error
            # The room keeps serving: a newcomer gets every edit from memory.
            async with NotebookPeer.connect(sidecar.url, sidecar.token) as late:
                assert str(late.notebook.ycells[0]["source"]) == "x = 'edit 19 on a full disk'"
            filler.unlink()  # room again: the next change commits everything kept
            peer.notebook.set_cell(0, source="x = 'room again'")
            await peer.wait_until(lambda p: not _status(p).get("store_error"))
            await wait_for_file(nb, lambda: "room again" in nb.read_text())
            await peer.wait_until(lambda p: not _status(p).get("save_error"))
        assert sidecar.proc.poll() is None
    nbformat.validate(nbformat.read(nb, as_version=4))
    # What was stored is complete: a new sidecar on the same store has the last edit.
    with running_sidecar(nb, small_fs) as again:
        async with NotebookPeer.connect(again.url, again.token) as peer:
            assert str(peer.notebook.ycells[0]["source"]) == "x = 'room again'"


async def test_a_notebook_the_store_cannot_hold_is_served_and_stored_once_there_is_room(
    small_fs: Path, tmp_path: Path
) -> None:
    """Opening is not held up by storing: a notebook its full store cannot take is served all
    the same (its file holds it), says why, and is stored with the edits made meanwhile once
    there is room."""
    blob = base64.b64encode(os.urandom(150_000)).decode()  # 200 kB that barely compress
    nb = write_notebook(tmp_path / "nb.ipynb", ["x = 1", f"blob = {blob!r}"])
    store = small_fs / ".kernel_collab.db"
    filler = _fill(small_fs, leave=128 * 1024)  # room to open the store, not for the notebook
    with running_sidecar(nb, tmp_path, "--store", str(store)) as sidecar, _log_on_failure(sidecar):
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            assert str(peer.notebook.ycells[0]["source"]) == "x = 1"
            await peer.wait_until(lambda p: bool(_status(p).get("store_error")))
            peer.notebook.set_cell(0, source="x = 'typed while the store was full'")
            filler.unlink()
            peer.notebook.set_cell(0, source="x = 'stored once there was room'")
            await peer.wait_until(lambda p: not _status(p).get("store_error"))
    with running_sidecar(nb, tmp_path, "--store", str(store)) as again:
        async with NotebookPeer.connect(again.url, again.token) as peer:
            assert str(peer.notebook.ycells[0]["source"]) == "x = 'stored once there was room'"
            assert "restored document" in again.log


async def test_a_read_only_filesystem_pauses_saving_and_loses_nothing(small_fs: Path) -> None:
    # The store (in the root, the parent folder) stays writable; the notebook's folder is a
    # filesystem remounted read-only under the running sidecar.
    nb = write_notebook(small_fs / "nb.ipynb", ["x = 1"])
    with running_sidecar(nb, small_fs.parent) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            await anyio.run_process(["mount", "-o", "remount,ro", str(small_fs)])
            try:
                peer.notebook.set_cell(0, source="x = 'typed while read-only'")
                await peer.wait_until(lambda p: bool(_status(p).get("save_error")))
                assert "x = 1" in nb.read_text()  # the file is untouched, not truncated
            finally:
                await anyio.run_process(["mount", "-o", "remount,rw", str(small_fs)])
            peer.notebook.set_cell(0, source="x = 'typed while read-only, then saved'")
            await wait_for_file(nb, lambda: "then saved" in nb.read_text())
            await peer.wait_until(lambda p: not _status(p).get("save_error"))
            await peer.wait_until(lambda p: not _status(p).get("store_error"))
    nbformat.validate(nbformat.read(nb, as_version=4))
