"""The collaborative kernel's lifecycle through a real Jupyter server.

Restart, shutdown (with and without people in the notebook), the death of the server, of the
sidecar and of the kernel, how the notebook's path is found from each kind of session, an
inner provisioner other than the local one, and a sidecar that cannot start. Processes are
identified by pid *and* start time (``/proc/PID/stat``), so a reused pid never passes for the
process a test recorded.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.files import wait_for_file
from tests.jupyter_server_process import JupyterServer, running_server
from tests.kernel_helpers import (
    ask,
    cell,
    collab_state,
    kernel_status,
    last_run,
    plain_client,
    run_cell,
    saved_cell,
    stream_text,
    write_cells,
    ycell,
)
from tests.peers import NotebookPeer
from tests.procfs import parent_pid, stat_fields
from tests.provisioners import RECORD_DIR_ENV, read_calls, read_launches

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
FAST_RESTARTER = ("--KernelRestarter.time_to_dead=1",)
"""The server's restarter polls the provisioner every ``time_to_dead`` seconds (default 3)."""
LIFECYCLE_TIMEOUT = 30.0
"""Seconds a peer waits for a kernel to (re)start (about 2 s on a loaded two-core machine)."""


# --- processes ------------------------------------------------------------------------------


FORK_SERVER = "kernel_collab.sidecar.forkserver"


@dataclass(frozen=True)
class Proc:
    """A process as recorded at one moment: pid, start time (clock ticks since boot), argv."""

    pid: int
    start: int
    cmd: str


def _stat(pid: int) -> tuple[str, int, int] | None:
    """State letter, parent pid and start time of a process, or None if there is none."""
    try:
        fields = stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def process(pid: int) -> Proc:
    """The running process ``pid``."""
    stat = _stat(pid)
    assert stat is not None, f"no process {pid}"
    return Proc(pid, stat[2], _cmdline(pid))


def is_running(proc: Proc) -> bool:
    """Whether that very process (not a later one with its pid) exists and is not a zombie."""
    stat = _stat(proc.pid)
    return stat is not None and stat[2] == proc.start and stat[0] not in "ZXx"


def descendants(*roots: Proc) -> set[Proc]:
    """The roots and every process below them, now."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None:
            children.setdefault(stat[1], []).append(pid)
    found = {root for root in roots if is_running(root)}
    todo = [root.pid for root in found]
    while todo:
        for child in children.get(todo.pop(), []):
            proc = _proc_or_none(child)
            if proc is not None and is_running(proc) and proc not in found:
                found.add(proc)
                todo.append(child)
    return found


def kernel_process(kernel_id: str) -> Proc:
    """The running kernel process of ``kernel_id``: the one whose argv names its connection
    file (``kernel-ID.json``), whichever provisioner launched it."""
    marker = f"kernel-{kernel_id}.json"
    found = [p for p in map(_proc_or_none, _pids()) if p is not None and marker in p.cmd]
    running = [p for p in found if is_running(p)]
    assert len(running) == 1, f"expected one process for kernel {kernel_id}, found {running}"
    return running[0]


def _proc_or_none(pid: int) -> Proc | None:
    stat = _stat(pid)
    return None if stat is None else Proc(pid, stat[2], _cmdline(pid))


async def _wait_exit(proc: Proc) -> None:
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return
    except OSError:  # no pidfd (Linux < 5.3, some sandboxes): poll /proc
        while is_running(proc):  # noqa: ASYNC110 - without a pidfd, an exit is no event
            await anyio.sleep(0.05)
        return
    try:
        if is_running(proc):  # checked after opening: the pidfd is that very process
            await anyio.wait_readable(fd)
    finally:
        os.close(fd)


async def wait_exited(procs: Iterable[Proc], timeout: float) -> list[Proc]:
    """Wait until every process has exited; return those still running at the deadline.

    These processes are not the test's children, so ``os.waitpid`` cannot wait for them, and
    there is no portable event for the exit of another process's child. On Linux ≥ 5.3 a
    pidfd (``os.pidfd_open``) becomes readable when its process exits, whoever its parent is,
    and that is awaited; where pidfds are unavailable ``/proc`` is polled every 50 ms until
    the deadline.
    """
    procs = list(procs)
    with anyio.move_on_after(timeout):
        for proc in procs:
            await _wait_exit(proc)
    return [p for p in procs if is_running(p)]


# --- the server ---------------------------------------------------------------------------


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A server root and a runtime directory."""
    root, runtime = tmp_path / "root", tmp_path / "runtime"
    root.mkdir()
    runtime.mkdir()
    return root, runtime


@pytest.fixture
def server(dirs: tuple[Path, Path]) -> Iterator[JupyterServer]:
    """A Jupyter server whose restarter polls kernels every second."""
    with running_server(*dirs, *FAST_RESTARTER) as srv:
        yield srv


def kernelspec(folder: Path, name: str, provisioner_config: dict[str, Any]) -> Path:
    """Write ``folder/kernels/NAME/kernel.json``: ipykernel on ``CollabProvisioner`` with that
    configuration. ``folder`` goes on the server's ``JUPYTER_PATH``."""
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": name,
        "language": "python",
        "metadata": {
            "kernel_provisioner": {"provisioner_name": "kernel-collab",
                                   "config": provisioner_config},
        },
    }  # fmt: skip
    path = folder / "kernels" / name / "kernel.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(spec))
    return folder


async def post_session(server: JupyterServer, body: dict[str, Any]) -> httpx.Response:
    """``POST /api/sessions`` with exactly that body."""
    async with server.client() as http:
        return await http.post("/api/sessions", json=body)


async def delete_session(server: JupyterServer, session_id: str) -> None:
    """``DELETE /api/sessions/ID``: the kernel is shut down."""
    async with server.client() as http:
        response = await http.delete(f"/api/sessions/{session_id}")
    assert response.status_code == 204, response.text


async def restart_kernel(server: JupyterServer, kernel_id: str) -> None:
    """``POST /api/kernels/ID/restart``, as JupyterLab's restart button does."""
    async with server.client() as http:
        response = await http.post(f"/api/kernels/{kernel_id}/restart")
    assert response.status_code == 200, response.text


# --- what peers see -----------------------------------------------------------------------


def last_event(peer: NotebookPeer) -> str | None:
    """``state.kernel_collab.last_kernel_event.event``."""
    event = collab_state(peer).get("last_kernel_event")
    return event.get("event") if isinstance(event, dict) else None


async def start(server: JupyterServer, notebook: Path) -> tuple[str, dict[str, Any]]:
    """Start a session on ``notebook`` (in the server's root): its kernel's id and its
    sidecar's record."""
    session = await server.start_session(notebook.relative_to(server.root).as_posix())
    return session["kernel"]["id"], server.sidecar(notebook)


def attached(kernel_id: str) -> Callable[[NotebookPeer], bool]:
    """A predicate: the document shows kernel ``kernel_id`` attached and idle."""
    return lambda p: kernel_status(p) == "idle" and collab_state(p).get("kernel_id") == kernel_id


def _state(peer: NotebookPeer) -> dict[str, Any]:
    return {k: v for k, v in collab_state(peer).items() if k != "last_saved_hash"}


async def settle(
    peer: NotebookPeer, predicate: Callable[[NotebookPeer], bool], what: str | Callable[[], str]
) -> None:
    """Wait until ``predicate`` holds for the peer; fail saying ``what`` did not happen (a
    callable is asked at the failure), with kernel_collab's state as the peer sees it."""
    try:
        await peer.wait_until(predicate)
    except TimeoutError:
        raise AssertionError(
            f"{what if isinstance(what, str) else what()}: not within {peer.wait_timeout:g} s; "
            f"the document's kernel_collab state: {_state(peer)}"
        ) from None


async def run_to_end(peer: NotebookPeer, url: str, token: str, cell_id: str) -> dict[str, Any]:
    """:func:`run_cell`, failing with the cell's and the kernel's state if the run never ends."""
    try:
        return await run_cell(peer, url, token, cell_id)
    except TimeoutError:
        raise AssertionError(
            f"the run of cell {cell_id} did not end within {peer.wait_timeout:g} s; the cell: "
            f"{cell(peer, cell_id)}; the document's kernel_collab state: {_state(peer)}"
        ) from None


def source(peer: NotebookPeer, cell_id: str) -> str:
    """A cell's source as the peer sees it."""
    return str(ycell(peer, cell_id)["source"])


def cells(peer: NotebookPeer) -> list[tuple[str, str]]:
    """``(id, source)`` of every cell, in order."""
    return [(str(c["id"]), str(c["source"])) for c in peer.notebook.ycells]


class Seen:
    """Kernel statuses and kernel events a peer saw, one look per incoming message."""

    def __init__(self) -> None:
        self.statuses: list[str] = []
        self.events: list[str] = []
        self._last_event_at: float | None = None

    def until(self, predicate: Callable[[NotebookPeer], bool]) -> Callable[[NotebookPeer], bool]:
        """``predicate``, recording what the peer shows each time it is checked."""

        def check(peer: NotebookPeer) -> bool:
            state = collab_state(peer)
            status = state.get("kernel_status")
            if isinstance(status, str) and (not self.statuses or self.statuses[-1] != status):
                self.statuses.append(status)
            event = state.get("last_kernel_event")
            if isinstance(event, dict) and event.get("at") != self._last_event_at:
                self._last_event_at = event.get("at")
                self.events.append(str(event.get("event")))
            return predicate(peer)

        return check


# --- 1. restart -----------------------------------------------------------------------------


async def test_restart_keeps_the_sidecar_the_room_and_the_queue_working(
    server: JupyterServer,
) -> None:
    nb = write_cells(server.root / "nb.ipynb", {
        "first": "print('first', flush=True)",
        "long": "import time\nprint('sleeping', flush=True)\ntime.sleep(120)",
        "after": "print('after restart', flush=True)",
    })  # fmt: skip
    kernel_id, record = await start(server, nb)
    url, token = record["url"], record["token"]
    sidecar, old_kernel = process(record["pid"]), kernel_process(kernel_id)
    async with NotebookPeer.connect(url, token) as peer:
        peer.wait_timeout = LIFECYCLE_TIMEOUT
        document_id = peer.notebook.ystate["document_id"]
        await settle(peer, attached(kernel_id), "the kernel shows idle")
        assert (await run_to_end(peer, url, token, "first"))["execution_count"] == 1
        assert (await ask(url, token, {"type": "execute", "cell_id": "long"}))["ok"] is True
        await peer.wait_until(lambda p: "sleeping" in stream_text(cell(p, "long")["outputs"]))
        assert cell(peer, "long")["execution_state"] == "running"

        seen = Seen()
        await restart_kernel(server, kernel_id)
        await settle(peer, seen.until(lambda p: attached(kernel_id)(p)
                                      and last_event(p) == "restart"),
                     "the restarted kernel shows idle")  # fmt: skip

        # The same sidecar, the same room, the same document, the peer still connected.
        assert is_running(sidecar), server.log
        assert server.sidecar(nb)["pid"] == sidecar.pid
        await peer.flush()  # raises if the connection ended
        assert peer.notebook.ystate["document_id"] == document_id
        assert [c[0] for c in cells(peer)] == ["first", "long", "after"]
        # The cell that was running is over, not stuck "running".
        long = cell(peer, "long")
        assert long["execution_state"] == "idle"
        run = long["metadata"]["kernel_collab"]["last_run"]
        assert run["status"] != "running" and run["end"] is not None, run
        event = collab_state(peer)["last_kernel_event"]
        assert event["event"] == "restart" and event["kernel_id"] == kernel_id
        # A requested restart is not a death: the document never says "dead".
        assert "dead" not in seen.statuses, f"statuses seen during the restart: {seen.statuses}"
        assert "dead" not in seen.events, f"kernel events seen during the restart: {seen.events}"
        # A new kernel process; a cell queued now runs there (execution count starts over).
        assert not await wait_exited([old_kernel], 10)
        assert kernel_process(kernel_id) != old_kernel
        after = await run_to_end(peer, url, token, "after")
        assert after["execution_count"] == 1
        assert stream_text(after["outputs"]) == "after restart\n"


# --- 2. shutdown with nobody connected -----------------------------------------------------------


async def test_shutdown_with_nobody_connected_saves_and_leaves_no_process(
    server: JupyterServer,
) -> None:
    nb = write_cells(server.root / "nb.ipynb", {"a": "print('hello')"})
    session = await server.start_session("nb.ipynb")
    kernel_id = session["kernel"]["id"]
    record = server.sidecar(nb)
    launched = descendants(kernel_process(kernel_id), process(record["pid"]))
    assert len(launched) >= 2
    url, token = record["url"], record["token"]
    async with (
        NotebookPeer.connect(url, token) as writer,
        NotebookPeer.connect(url, token) as observer,
    ):
        text = ycell(writer, "a")["source"]
        text += "  # edited just before the shutdown"
        await observer.wait_until(lambda p: source(p, "a").endswith("the shutdown"))
    # Both have left: nobody is in the notebook when the kernel is shut down.
    await delete_session(server, session["id"])
    still_running = await wait_exited(launched, 30)
    assert not still_running, f"left running after the shutdown: {still_running}\n{server.log}"
    assert saved_cell(nb, "a")["source"] == "print('hello')  # edited just before the shutdown"
    async with server.client() as http:
        kernels = (await http.get("/api/kernels")).json()
    assert kernel_id not in [k["id"] for k in kernels]
    # The notebook opens again: a new sidecar, restored from the store.
    reopened = await post_session(server, {"path": "nb.ipynb", "name": "nb.ipynb",
                                           "type": "notebook",
                                           "kernel": {"name": "python3-collab"}})  # fmt: skip
    assert reopened.status_code == 201, reopened.text
    assert server.sidecar(nb)["pid"] != record["pid"]


# --- 3. shutdown with a peer connected -------------------------------------------------------


async def test_shutdown_with_a_peer_connected_keeps_the_room_until_the_last_one_leaves(
    server: JupyterServer,
) -> None:
    nb = write_cells(server.root / "nb.ipynb", {"a": "print('ran', flush=True)"})
    first = await server.start_session("nb.ipynb")
    record = server.sidecar(nb)
    url, token = record["url"], record["token"]
    sidecar, first_kernel = process(record["pid"]), kernel_process(first["kernel"]["id"])
    async with NotebookPeer.connect(url, token) as peer:
        peer.wait_timeout = LIFECYCLE_TIMEOUT
        await settle(peer, attached(first["kernel"]["id"]), "the kernel shows idle")
        await delete_session(server, first["id"])
        await settle(peer, lambda p: kernel_status(p) == "none" and last_event(p) == "shutdown",
                     "the document shows the shutdown")
        assert not await wait_exited([first_kernel], 15), "the kernel outlived its shutdown"
        assert is_running(sidecar), f"the sidecar left a person alone:\n{server.log}"

        # A new session while the room is open re-attaches to the same sidecar.
        second = await server.start_session("nb.ipynb")
        kernel_id = second["kernel"]["id"]
        assert kernel_id != first["kernel"]["id"]
        assert server.sidecar(nb)["pid"] == sidecar.pid
        await settle(peer, attached(kernel_id), "the second kernel shows idle")
        ran = await run_to_end(peer, url, token, "a")
        assert ran["execution_count"] == 1 and stream_text(ran["outputs"]) == "ran\n"

        await delete_session(server, second["id"])
        await settle(peer, lambda p: kernel_status(p) == "none", "the second shutdown shows")
        assert is_running(sidecar)
        async with NotebookPeer.connect(url, token) as observer:
            text = ycell(peer, "a")["source"]
            text += "  # edited with no kernel"
            await observer.wait_until(lambda p: source(p, "a").endswith("no kernel"))
    # The last person left: the sidecar saves and exits.
    assert not await wait_exited([sidecar], 30), f"the sidecar outlived its room:\n{server.log}"
    saved = saved_cell(nb, "a")
    assert saved["source"] == "print('ran', flush=True)  # edited with no kernel"
    assert saved["execution_count"] == 1


# --- 4. server death --------------------------------------------------------------------------


async def test_server_death_stops_sidecar_and_kernel_and_a_new_server_restores_the_store(
    dirs: tuple[Path, Path],
) -> None:
    root, runtime = dirs
    nb = write_cells(root / "nb.ipynb", {"a": "print('before the crash', flush=True)",
                                         "b": "x = 2"})  # fmt: skip
    with running_server(root, runtime) as first:
        session = await first.start_session("nb.ipynb")
        record = first.sidecar(nb)
        url, token = record["url"], record["token"]
        sidecar, kernel = process(record["pid"]), kernel_process(session["kernel"]["id"])
        launched = descendants(sidecar, kernel)
        async with (
            NotebookPeer.connect(url, token) as writer,
            NotebookPeer.connect(url, token) as observer,
        ):
            writer.wait_timeout = LIFECYCLE_TIMEOUT
            await run_to_end(writer, url, token, "a")
            text = ycell(writer, "b")["source"]
            text += "  # edited before the crash"
            await observer.wait_until(lambda p: source(p, "b").endswith("the crash"))
            before = cells(observer)
            document_id = observer.notebook.ystate["document_id"]
            first.kill()
            # The people stay connected: it is the closed stdin that stops the sidecar.
            with pytest.raises(ConnectionError):
                await writer.wait_until(lambda p: False)
        still_running = await wait_exited(launched, 20)
        assert not still_running, f"left running after the server died: {still_running}"
    saved = saved_cell(nb, "b")
    assert saved["source"] == "x = 2  # edited before the crash"
    assert stream_text(saved_cell(nb, "a")["outputs"]) == "before the crash\n"

    with running_server(root, runtime) as second:
        await second.start_session("nb.ipynb")
        record = second.sidecar(nb)
        async with NotebookPeer.connect(record["url"], record["token"]) as peer:
            assert peer.notebook.ystate["document_id"] == document_id, "not restored from store"
            assert cells(peer) == before, "the restored document differs (duplicated cells?)"
            assert stream_text(cell(peer, "a")["outputs"]) == "before the crash\n"


# --- 5. kill -9 of the sidecar ----------------------------------------------------------------


async def test_sidecar_kill_9_is_replaced_from_the_store_and_the_kernel_lives_on(
    server: JupyterServer,
) -> None:
    nb = write_cells(server.root / "nb.ipynb", {"a": "n = 41\nprint('first run', flush=True)",
                                                "b": "n += 1\nprint(n, flush=True)"})  # fmt: skip
    session = await server.start_session("nb.ipynb")
    kernel_id = session["kernel"]["id"]
    record = server.sidecar(nb)
    runtime_file = next((server.runtime / "kernel_collab").glob("sidecar-*.json"))
    url, token = record["url"], record["token"]
    sidecar, kernel = process(record["pid"]), kernel_process(kernel_id)
    async with (
        NotebookPeer.connect(url, token) as writer,
        NotebookPeer.connect(url, token) as observer,
    ):
        writer.wait_timeout = LIFECYCLE_TIMEOUT
        await settle(writer, attached(kernel_id), "the kernel shows idle")
        assert (await run_to_end(writer, url, token, "a"))["execution_count"] == 1
        text = ycell(writer, "a")["source"]
        for i in range(20):
            text += f"  # <{i}>"
        await observer.wait_until(lambda p: source(p, "a").endswith("<19>"))
        acknowledged = cells(observer)  # relayed to a peer, so committed to the store
        os.kill(sidecar.pid, signal.SIGKILL)
        with pytest.raises(ConnectionError):
            await writer.wait_until(lambda p: False)

    def replaced() -> bool:
        return int(json.loads(runtime_file.read_text())["pid"]) != sidecar.pid

    await wait_for_file(runtime_file, replaced, timeout=30)
    new = server.sidecar(nb)
    assert new["url"] != record["url"] and new["token"] != record["token"]
    assert is_running(process(new["pid"]))
    # The kernel was never reported dead nor restarted.
    async with server.client() as http:
        model = (await http.get(f"/api/kernels/{kernel_id}")).json()
    assert model["execution_state"] != "dead", model
    assert is_running(kernel) and kernel_process(kernel_id) == kernel
    assert "restarting kernel" not in server.log
    async with NotebookPeer.connect(new["url"], new["token"]) as peer:
        peer.wait_timeout = LIFECYCLE_TIMEOUT
        assert cells(peer) == acknowledged
        assert stream_text(cell(peer, "a")["outputs"]) == "first run\n"
        await settle(peer, attached(kernel_id), "the new sidecar shows the kernel idle")
        ran = await run_to_end(peer, new["url"], new["token"], "b")
    # The same kernel: its variables and its execution count carried on.
    assert ran["execution_count"] == 2
    assert stream_text(ran["outputs"]) == "42\n"


async def test_after_a_sidecar_kill_9_the_kernels_replica_is_told_and_joins_again(
    server: JupyterServer,
) -> None:
    nb = write_cells(server.root / "nb.ipynb", {
        "a": "import kernel_collab\nnb = kernel_collab.notebook()\nprint(len(nb.cells))",
        "b": "try:\n    nb.sync()\nexcept ConnectionError as e:\n    print('old:', e)\n"
             "print('new:', kernel_collab.notebook().cells[0].id)",
    })  # fmt: skip
    session = await server.start_session("nb.ipynb")
    kernel_id = session["kernel"]["id"]
    record = server.sidecar(nb)
    runtime_file = next((server.runtime / "kernel_collab").glob("sidecar-*.json"))
    sidecar = process(record["pid"])
    async with NotebookPeer.connect(record["url"], record["token"]) as peer:
        peer.wait_timeout = LIFECYCLE_TIMEOUT
        await settle(peer, attached(kernel_id), "the kernel shows idle")
        ran = await run_to_end(peer, record["url"], record["token"], "a")
        assert stream_text(ran["outputs"]) == "2\n"
        os.kill(sidecar.pid, signal.SIGKILL)

    def replaced() -> bool:
        return int(json.loads(runtime_file.read_text())["pid"]) != sidecar.pid

    await wait_for_file(runtime_file, replaced, timeout=30)
    new = server.sidecar(nb)
    async with NotebookPeer.connect(new["url"], new["token"]) as peer:
        peer.wait_timeout = LIFECYCLE_TIMEOUT
        await settle(peer, attached(kernel_id), "the new sidecar shows the kernel idle")
        ran = await run_to_end(peer, new["url"], new["token"], "b")
    printed = stream_text(ran["outputs"])
    assert "old: the connection to the notebook's sidecar ended (the sidecar closed the " \
           "kernel's comm (1013): the sidecar restarted" in printed, printed
    assert printed.endswith("new: a\n"), printed


# --- 6. kill -9 of the kernel --------------------------------------------------------------


async def test_kernel_kill_9_is_shown_and_the_restarted_kernel_runs_cells(
    server: JupyterServer,
) -> None:
    nb = write_cells(server.root / "nb.ipynb", {
        "a": "print('alive', flush=True)",
        "long": "import time\nprint('sleeping', flush=True)\ntime.sleep(120)",
    })  # fmt: skip
    session = await server.start_session("nb.ipynb")
    kernel_id = session["kernel"]["id"]
    record = server.sidecar(nb)
    url, token = record["url"], record["token"]
    sidecar, kernel = process(record["pid"]), kernel_process(kernel_id)
    async with NotebookPeer.connect(url, token) as peer:
        peer.wait_timeout = LIFECYCLE_TIMEOUT
        await settle(peer, attached(kernel_id), "the kernel shows idle")
        assert (await run_to_end(peer, url, token, "a"))["execution_count"] == 1
        assert (await ask(url, token, {"type": "execute", "cell_id": "long"}))["ok"] is True
        await peer.wait_until(lambda p: "sleeping" in stream_text(cell(p, "long")["outputs"]))

        seen = Seen()
        os.kill(kernel.pid, signal.SIGKILL)
        await settle(peer, seen.until(
            lambda p: bool({"dead", "restarting"} & set(seen.statuses))
            and attached(kernel_id)(p)
        ), lambda: f"after kill -9 of the kernel: dead or restarting, then idle (statuses "
           f"seen: {seen.statuses}, events: {seen.events})")  # fmt: skip
        assert {"dead", "restarting"} & set(seen.statuses), seen.statuses
        long = cell(peer, "long")
        assert long["execution_state"] == "idle"
        assert long["metadata"]["kernel_collab"]["last_run"]["status"] != "running"
        assert not is_running(kernel)
        assert kernel_process(kernel_id) != kernel
        assert is_running(sidecar) and server.sidecar(nb)["pid"] == sidecar.pid
        ran = await run_to_end(peer, url, token, "a")
        assert ran["execution_count"] == 1 and stream_text(ran["outputs"]) == "alive\n"


SLOW_IDLE = """\
import os, sys, time
class _HeldFlush:
    # Holds the kernel between this cell's reply and its idle (ipykernel's dispatch_shell
    # flushes stdout in between), until the test lets it go.
    def __init__(self, inner):
        self.inner = inner
    def __getattr__(self, name):
        return getattr(self.inner, name)
    def flush(self):
        caller = sys._getframe(1)  # hold only after this cell's reply
        msg = caller.f_locals.get("msg") if caller.f_code.co_name == "dispatch_shell" else None
        if "_HeldFlush" not in str(getattr(msg, "get", dict().get)("content")):
            return self.inner.flush()
        sys.stdout = self.inner
        open({held!r}, "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists({release!r}) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.inner.flush()
sys.stdout = _HeldFlush(sys.stdout)
"""


async def test_a_kernel_dying_before_a_cell_sent_ahead_has_its_turn_cancels_it(
    server: JupyterServer,
) -> None:
    """The queue sends the next cell as soon as the running one replies ok, before the
    kernel's idle for it. A kernel that dies in between: the cell that replied ended ok, and
    the cell sent ahead, whose turn never came, is listed as cancelled with the rest of the
    queue: none is lost, shown as run, or left running."""
    held = server.root.parent / "held"
    queued = ["next", "later"]
    nb = write_cells(server.root / "ahead.ipynb", {
        "slow-idle": SLOW_IDLE.format(held=str(held), release=str(held) + ".never"),
        **dict.fromkeys(queued, "print('ran', flush=True)"),
        "after": "print('after', flush=True)",
    })  # fmt: skip
    kernel_id, record = await start(server, nb)
    url, token = record["url"], record["token"]
    async with NotebookPeer.connect(url, token) as peer:
        peer.wait_timeout = LIFECYCLE_TIMEOUT
        await settle(peer, attached(kernel_id), "the kernel shows idle")
        for cell_id in ["slow-idle", *queued]:
            assert (await ask(url, token, {"type": "execute", "cell_id": cell_id}))["ok"] is True
        await wait_for_file(held, held.exists, LIFECYCLE_TIMEOUT)  # replied; idle held back
        kernel = kernel_process(kernel_id)
        os.kill(kernel.pid, signal.SIGKILL)
        await settle(peer, lambda p: attached(kernel_id)(p) and (
            last_run(p, "slow-idle") or {}).get("status") != "running",
            "the held cell ended and the restarted kernel shows idle")  # fmt: skip
        assert not is_running(kernel)
        slow = last_run(peer, "slow-idle") or {}
        assert slow.get("status") == "ok" and slow.get("end") is not None, slow
        cancelled = [e["cell_id"] for e in collab_state(peer).get("cancelled") or []]
        assert cancelled == queued, collab_state(peer).get("cancelled")
        for cell_id in queued:
            assert last_run(peer, cell_id) is None
            assert cell(peer, cell_id)["outputs"] == []
            assert cell(peer, cell_id)["execution_state"] == "idle"
        assert collab_state(peer).get("queue") == []
        assert collab_state(peer).get("running") is None
        after = await run_to_end(peer, url, token, "after")
        assert stream_text(after["outputs"]) == "after\n"


# --- 7. the notebook's path, from each kind of session ----------------------------------------

NO_EXTENSION = "--ServerApp.jpserver_extensions=kernel_collab=False"
"""The provisioner alone: no server extension to pass the session's real path, so the path
comes from ``JPY_SESSION_NAME`` (and the session's ``cwd``)."""


async def test_notebook_path_from_each_kind_of_session_without_the_extension(
    dirs: tuple[Path, Path],
) -> None:
    root, runtime = dirs
    (root / "sub").mkdir()
    forms: list[tuple[str, str | None]] = [
        ("named.ipynb", "named.ipynb"),  # name = the file's name: JPY_SESSION_NAME absolute
        ("unnamed.ipynb", None),  # no name: JPY_SESSION_NAME is the relative path
        ("sub/named.ipynb", "named.ipynb"),  # in a subdirectory, named as JupyterLab does
        ("sub/unnamed.ipynb", None),
    ]
    for path, _name in [*forms, ("actual.ipynb", None)]:
        write_cells(root / path, {"a": "print(1)"})
    with running_server(root, runtime, NO_EXTENSION) as server:
        assert "kernel_collab: server extension loaded" not in server.log
        for path, name in forms:
            body: dict[str, Any] = {"path": path, "type": "notebook",
                                    "kernel": {"name": "python3-collab"}}  # fmt: skip
            if name is not None:
                body["name"] = name
            response = await post_session(server, body)
            assert response.status_code == 201, (path, name, response.text)
            record = server.sidecar(root / path)
            assert record["notebook"] == str((root / path).resolve())
            async with NotebookPeer.connect(record["url"], record["token"]) as peer:
                assert peer.notebook.ystate["path"] == path

        # A name that is not the file's: the provisioner cannot find the notebook and says
        # where it looked (the server extension passes the real path: see the next test).
        response = await post_session(server, {"path": "actual.ipynb", "name": "renamed.ipynb",
                                               "type": "notebook",
                                               "kernel": {"name": "python3-collab"}})  # fmt: skip
        assert response.status_code == 500, response.text
        message = response.json()["message"]
        assert "kernel_collab" in message and str((root / "renamed.ipynb").resolve()) in message
        assert not [r for r in server.sidecars() if r["notebook"].endswith("actual.ipynb")]

        # A console on the collaborative kernelspec: a plain kernel, no sidecar.
        before = server.sidecars()
        response = await post_session(server, {
            "path": f"console-1-{uuid.uuid4()}", "name": "Console 1", "type": "console",
            "kernel": {"name": "python3-collab"},
        })  # fmt: skip
        assert response.status_code == 201, response.text
        kernel_id = response.json()["kernel"]["id"]
        assert server.sidecars() == before
        assert is_running(kernel_process(kernel_id))
        async with plain_client(server.runtime / f"kernel-{kernel_id}.json") as client:
            reply = await client.kernel_info(reply=True, timeout=30)
        assert reply["content"]["status"] == "ok"

        # Without kernel_collab's extension (which works around it), jupyter_client keeps the
        # failed kernel start and the server's own shutdown fails on it ("Kernel does not
        # exist"), hanging SIGTERM for 30 s: kill the server; what it started must still go.
        launched = descendants(process(server.proc.pid)) - {process(server.proc.pid)}
        server.kill()
        assert not await wait_exited(launched, 20)
        # Each sidecar says why it stopped (its stderr is the server's, read to the end).
        assert await anyio.to_thread.run_sync(server.log_ended.wait, 20)
        assert server.log.count("stdin closed (the Jupyter server that started this sidecar "
                                "is gone): saving and stopping") == len(forms)


async def test_with_the_extension_a_session_named_otherwise_finds_its_notebook(
    server: JupyterServer,
) -> None:
    nb = write_cells(server.root / "actual.ipynb", {"a": "print(1)"})
    response = await post_session(server, {"path": "actual.ipynb", "name": "renamed.ipynb",
                                           "type": "notebook",
                                           "kernel": {"name": "python3-collab"}})  # fmt: skip
    assert response.status_code == 201, response.text
    record = server.sidecar(nb)
    async with NotebookPeer.connect(record["url"], record["token"]) as peer:
        assert peer.notebook.ystate["path"] == "actual.ipynb"


# --- 8. an inner provisioner other than the local one -----------------------------------------


async def test_an_inner_provisioner_launches_the_kernel_and_outputs_reach_the_document(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    root, runtime = dirs
    records = tmp_path / "records"
    records.mkdir()
    specs = kernelspec(tmp_path / "jupyter_path", "python3-recording",
                       {"inner_provisioner": "tests.provisioners:RecordingProvisioner"})
    pythonpath = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(REPO)) if p)
    env = {"JUPYTER_PATH": str(specs), "PYTHONPATH": pythonpath, RECORD_DIR_ENV: str(records)}
    nb = write_cells(root / "nb.ipynb", {"a": "import os\nprint('pid', os.getpid(), flush=True)"})
    with running_server(root, runtime, env=env) as server:
        session = await server.start_session("nb.ipynb", kernel="python3-recording")
        kernel_id = session["kernel"]["id"]
        launches = read_launches(records)
        assert len(launches) == 1 and launches[0]["kernel_id"] == kernel_id, launches
        kernel = kernel_process(kernel_id)
        assert kernel.pid == launches[0]["pid"], "the kernel was not launched by the inner one"
        record = server.sidecar(nb)
        url, token = record["url"], record["token"]
        async with NotebookPeer.connect(url, token) as peer:
            peer.wait_timeout = LIFECYCLE_TIMEOUT
            ran = await run_to_end(peer, url, token, "a")
            assert stream_text(ran["outputs"]) == f"pid {kernel.pid}\n"
            # This kernelspec loads no kernel_collab extension: the room says there is no
            # in-kernel API, and everything else above worked.
            assert _state(peer)["kernel_api"] is False
            assert "has no kernel_collab extension: no in-kernel API" in server.log

            await restart_kernel(server, kernel_id)
            launches = read_launches(records)
            assert len(launches) == 2 and launches[1]["pid"] == kernel_process(kernel_id).pid
            await settle(peer, lambda p: attached(kernel_id)(p) and last_event(p) == "restart",
                         "the restarted kernel shows idle")
            ran = await run_to_end(peer, url, token, "a")
            assert stream_text(ran["outputs"]) == f"pid {launches[1]['pid']}\n"
        await delete_session(server, session["id"])
    calls = [(c["call"], c.get("restart")) for c in read_calls(records)]
    launch = [("pre_launch", None), ("launch_kernel", None), ("post_launch", None)]
    assert calls == [*launch, ("cleanup", True), *launch, ("cleanup", False)], calls


# --- 9. a sidecar that cannot start ----------------------------------------------------------


async def test_a_sidecar_that_cannot_start_fails_the_session_promptly_saying_why(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    root, runtime = dirs
    specs = kernelspec(tmp_path / "jupyter_path", "python3-broken-store",
                       {"sidecar_args": ["--store", "/proc/forbidden.db"]})
    write_cells(root / "nb.ipynb", {"a": "print(1)"})
    with running_server(root, runtime, env={"JUPYTER_PATH": str(specs)}) as server:
        started = time.monotonic()
        response = await post_session(server, {"path": "nb.ipynb", "name": "nb.ipynb",
                                               "type": "notebook",
                                               "kernel": {"name": "python3-broken-store"}})
        elapsed = time.monotonic() - started
        assert response.status_code == 500, response.text
        assert elapsed < 15, f"the failed start took {elapsed:.1f} s"
        message = response.json()["message"]
        assert "kernel_collab" in message and "nb.ipynb" in message, message
        assert "/proc/forbidden.db" in message, f"the error does not say why: {message!r}"
        # Nothing is left behind: no sidecar, no kernel.
        assert server.sidecars() == []
        async with server.client() as http:
            assert (await http.get("/api/kernels")).json() == []
        # (The fork server stays: it serves the server's next sidecar, and goes with it.)
        leftovers = [p for p in descendants(process(server.proc.pid))
                     if p.pid != server.proc.pid and FORK_SERVER not in p.cmd]  # fmt: skip
        assert not await wait_exited(leftovers, 10), leftovers


async def test_a_room_whose_sidecar_cannot_start_answers_saying_why(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """Opening through the room route (as JupyterLab does) a notebook whose kernelspec's
    sidecar cannot start: the answer is an error that says why, not a generic one."""
    root, runtime = dirs
    specs = kernelspec(tmp_path / "jupyter_path", "python3-broken-store",
                       {"sidecar_args": ["--store", "/proc/forbidden.db"]})
    nb = write_cells(root / "nb.ipynb", {"a": "print(1)"})
    data = json.loads(nb.read_text())
    data["metadata"]["kernelspec"] = {"name": "python3-broken-store", "display_name": "broken"}
    nb.write_text(json.dumps(data))
    with running_server(root, runtime, env={"JUPYTER_PATH": str(specs)}) as server:
        async with server.client() as http:
            response = await http.put("/api/kernel-collab/rooms/nb.ipynb")
        assert response.status_code == 500, response.text
        message = response.json()["message"]
        assert "/proc/forbidden.db" in message, f"the error does not say why: {message!r}"
        assert server.sidecars() == []


# --- 9. the fork server -------------------------------------------------------------------------


async def test_a_killed_fork_server_is_replaced_and_its_sidecars_live_on(
    server: JupyterServer,
) -> None:
    """kill -9 of the fork server: the sidecars it forked keep serving (and a sidecar killed
    afterwards is still seen to die and is replaced); the next notebook gets a new one."""
    first = write_cells(server.root / "first.ipynb", {"a": "x = 1"})
    await server.start_session("first.ipynb")
    record = server.sidecar(first)
    sidecar = process(record["pid"])
    forker = process(parent_pid(sidecar.pid))
    assert FORK_SERVER in forker.cmd, forker
    os.kill(forker.pid, signal.SIGKILL)
    assert not await wait_exited([forker], 10)

    second = write_cells(server.root / "second.ipynb", {"b": "y = 2"})
    await server.start_session("second.ipynb")
    new_forker = process(parent_pid(server.sidecar(second)["pid"]))
    assert FORK_SERVER in new_forker.cmd and new_forker != forker, new_forker

    async with NotebookPeer.connect(record["url"], record["token"]) as peer:
        assert source(peer, "a") == "x = 1"  # the orphaned sidecar still serves
    runtime_file = next(p for p in (server.runtime / "kernel_collab").glob("sidecar-*.json")
                        if json.loads(p.read_text())["notebook"] == str(first.resolve()))
    os.kill(sidecar.pid, signal.SIGKILL)
    await wait_for_file(
        runtime_file, lambda: int(json.loads(runtime_file.read_text())["pid"]) != sidecar.pid,
        timeout=30,
    )  # fmt: skip
    replaced = server.sidecar(first)
    async with NotebookPeer.connect(replaced["url"], replaced["token"]) as peer:
        assert source(peer, "a") == "x = 1"



async def _spare(server: JupyterServer, forker: Proc, timeout: float = 10) -> Proc:
    """The fork server's spare: its child that serves no notebook (forked a second after the
    last request). /proc has no event for a new child: it is polled every 50 ms."""
    with anyio.fail_after(timeout):
        while True:
            serving = {int(record["pid"]) for record in server.sidecars()}
            children = [p for p in descendants(forker) if p != forker
                        and parent_pid(p.pid) == forker.pid and p.pid not in serving]  # fmt: skip
            if children:
                return children[0]
            await anyio.sleep(0.05)  # a new process is no event to await


async def test_the_fork_servers_spare_becomes_the_next_sidecar_and_leaves_with_it(
    server: JupyterServer,
) -> None:
    """The fork server keeps one child forked ahead, which becomes the next notebook's sidecar
    (no fork on the open's path); a spare that died is replaced by a fork; and the spare goes
    when the fork server goes."""
    first = write_cells(server.root / "first.ipynb", {"a": "x = 1"})
    await server.start_session("first.ipynb")
    forker = process(parent_pid(server.sidecar(first)["pid"]))
    spare = await _spare(server, forker)

    second = write_cells(server.root / "second.ipynb", {"b": "y = 2"})
    await server.start_session("second.ipynb")
    assert server.sidecar(second)["pid"] == spare.pid, "the spare did not become the sidecar"

    dead = await _spare(server, forker)
    os.kill(dead.pid, signal.SIGKILL)
    assert not await wait_exited([dead], 10)
    third = write_cells(server.root / "third.ipynb", {"c": "z = 3"})
    await server.start_session("third.ipynb")
    record = server.sidecar(third)
    assert parent_pid(record["pid"]) == forker.pid
    async with NotebookPeer.connect(record["url"], record["token"]) as peer:
        assert source(peer, "c") == "z = 3"

    last = await _spare(server, forker)
    os.kill(forker.pid, signal.SIGKILL)
    assert not await wait_exited([forker, last], 10), "the spare outlived its fork server"
