"""The idle culler still culls a kernel whose notebook people edit but nobody runs.

People typing in a notebook are not activity of its kernel. With Jupyter's culler on
(``MappingKernelManager.cull_idle_timeout``), a collaborative kernel whose replica is live
(a cell called ``kernel_collab.notebook()``) and receives every edit must still be shut down
on schedule while nobody runs anything. Whatever carries the replica's sync must not make the
kernel send anything on IOPub (comm messages, busy/idle statuses): the server counts every
such message as activity, and the kernel would never be culled.

The culler runs with ``cull_connected`` on, as a deployment that culls kernels people keep
open in a browser tab does, so that this test is about activity alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.files import wait_for_file, write_notebook
from tests.jupyter_server_process import JupyterServer, running_server
from tests.peers import NotebookPeer

pytestmark = pytest.mark.anyio

#: Seconds without kernel activity after which the server culls a kernel (jupyter_server
#: accepts any positive value), and how often its culler looks.
CULL_IDLE_TIMEOUT = 4
CULL_INTERVAL = 1
#: Seconds the culler may take beyond its timeout and interval (a shutdown takes ~1 s).
CULL_SLACK = 6
#: Seconds between two of the person's edits.
EDIT_EVERY = 0.1
#: How many edits the replica may be behind the person when the kernel goes (1.5 s).
MAX_LAG = 15


@pytest.fixture
def culling_server(tmp_path: Path) -> Iterator[JupyterServer]:
    """A server that culls kernels idle for ``CULL_IDLE_TIMEOUT`` s, connected or not."""
    root, runtime = tmp_path / "root", tmp_path / "runtime"
    root.mkdir()
    runtime.mkdir()
    with running_server(
        root, runtime,
        f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE_TIMEOUT}",
        f"--MappingKernelManager.cull_interval={CULL_INTERVAL}",
        "--MappingKernelManager.cull_connected=True",
    ) as srv:  # fmt: skip
        yield srv


def _cell(peer: NotebookPeer, cell_id: str) -> dict[str, Any]:
    return next(c for c in peer.notebook.get()["cells"] if c["id"] == cell_id)


def _stdout(cell: dict[str, Any]) -> str:
    return "".join(o.get("text", "") for o in cell["outputs"] if o.get("name") == "stdout")


def _edits_in(source: str) -> int:
    """How many of the person's edits a source holds (each appends ``"{i};"``)."""
    return source.count(";")


async def test_the_culler_culls_a_kernel_whose_notebook_people_edit(
    culling_server: JupyterServer, tmp_path: Path
) -> None:
    server = culling_server
    # What the kernel's replica sees of cell-1, mirrored to a file by a thread of the kernel:
    # reading it makes no kernel message of its own, so the mirror adds no activity.
    seen_file = tmp_path / "replica-sees.txt"
    write_notebook(server.root / "nb.ipynb", [
        "import kernel_collab, os, threading, time\n"
        "nb = kernel_collab.notebook()\n"
        "def mirror(path):\n"
        "    last = None\n"
        "    while True:\n"
        "        source = nb.cells[1].source\n"
        "        if source != last:\n"
        "            with open(path + '.tmp', 'w') as f:\n"
        "                f.write(source)\n"
        "            os.replace(path + '.tmp', path)\n"
        "            last = source\n"
        "        time.sleep(0.05)\n"
        f"threading.Thread(target=mirror, args=({str(seen_file)!r},), daemon=True).start()\n"
        "print('replica up')",
        "# typed: ",
    ])  # fmt: skip
    room = await server.open_room("nb.ipynb")
    kernel_id, url = room["kernel_id"], server.sync_url(room["document_id"])

    async def kernel() -> dict[str, Any] | None:
        """``GET /api/kernels/{id}``, or None once the kernel is gone."""
        async with server.client() as http:
            response = await http.get(f"/api/kernels/{kernel_id}")
            if response.status_code == 404:
                return None
            response.raise_for_status()
            model: dict[str, Any] = response.json()
            return model

    def replica_edits() -> int:
        try:
            return _edits_in(seen_file.read_text())
        except FileNotFoundError:
            return -1

    async with (
        NotebookPeer.connect(url, server.token) as person,
        NotebookPeer.connect(url, server.token) as observer,
        server.client() as http,
    ):
        response = await http.post(f"/api/kernels/{kernel_id}/execute",
                                   json={"cell_id": "cell-0", "document_id": room["document_id"]})
        assert response.status_code == 202, response.text
        await person.wait_until(lambda p: _stdout(_cell(p, "cell-0")) == "replica up\n")
        await person.wait_until(lambda p: _cell(p, "cell-0")["execution_count"] is not None)
        ran_at = time.monotonic()  # the last time anyone ran anything
        await wait_for_file(seen_file, seen_file.exists, timeout=10)  # the mirror thread is up
        model = await kernel()
        assert model is not None and model["execution_state"] == "idle", model

        sent = 0

        async def edit(count: int | None = None) -> None:
            """The person types into cell-1 every ``EDIT_EVERY`` s (``count`` times, or on)."""
            nonlocal sent
            text = person.notebook.ycells[1]["source"]
            done = 0
            while count is None or done < count:
                text += f"{sent};"
                sent += 1
                done += 1
                await person.flush()
                await anyio.sleep(EDIT_EVERY)  # pacing, not synchronisation

        alive: list[tuple[int, int]] = []  # (edits sent, edits the replica had) while alive
        bound = CULL_IDLE_TIMEOUT + CULL_INTERVAL + CULL_SLACK
        async with anyio.create_task_group() as tg:
            tg.start_soon(edit)
            with anyio.move_on_after(bound) as waiting:  # the bound of the wait below
                while (latest := await kernel()) is not None:
                    model = latest
                    alive.append((sent, replica_edits()))
                    await anyio.sleep(0.2)
            culled_after = time.monotonic() - ran_at
            sent_at_cull = sent
            tg.cancel_scope.cancel()
        assert not waiting.cancelled_caught, (
            f"the kernel was not culled {bound} s after its last run while a person edited "
            f"({sent} edits): the server saw activity; GET /api/kernels/{{id}}: {model}")

        # The culler did it, for inactivity (not a crash, not someone's shutdown).
        culled = [line for line in server.log_lines if "Culling" in line and kernel_id in line]
        assert culled and "inactivity" in culled[0], server.log
        assert culled_after >= CULL_IDLE_TIMEOUT, culled_after

        # Meanwhile the edits kept reaching the kernel's replica, up to the end.
        replica_had = max(seen for _, seen in alive)
        assert replica_had >= sent_at_cull - MAX_LAG, (replica_had, sent_at_cull, alive)
        assert sent_at_cull >= CULL_IDLE_TIMEOUT / EDIT_EVERY / 2, sent_at_cull

        # And they keep landing in the room, which stays open while people are in it.
        await edit(5)
        total = sent
        await observer.wait_until(lambda p: _edits_in(str(p.notebook.ycells[1]["source"]))
                                  == total)  # fmt: skip
        assert str(observer.notebook.ycells[1]["source"]) == "# typed: " + "".join(
            f"{i};" for i in range(total))  # fmt: skip
