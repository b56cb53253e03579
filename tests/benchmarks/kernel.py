"""Kernel workloads: kernel_collab alone, against a plain kernel client on the same machine.

jupyter-collaboration cannot take part: it runs no kernel of its own. Its outputs are
written into the shared document by the JupyterLab tab that ran the cell (the browser sends
the execute request over the kernel WebSocket and copies what comes back into the Y
document), so without a browser nothing would run and nothing would reach its peers. Its
column is "n/a" for these rows. The comparison is instead a *floor*: a plain
``jupyter_client`` kernel client of a plain ``python3`` kernel started by the same Jupyter
server, reading the same loop's iopub (or sending the same execute requests) directly — no
document, no store, no relay. A ratio against it shows what the sidecar costs.

Ours runs as users run it: ``jupyter server`` from this venv (``tests.jupyter_server_process``),
a notebook session with the kernelspec ``python3-collab``, whose provisioner starts the
notebook's sidecar; the sidecar's runtime record gives its URL and token. Peers are the
benchmark's own (:mod:`.peers`); runs are asked for with kernel_collab's ``execute`` request
(``kernel_collab.protocol.encode_request``), as any peer asks.

Measures (keys under ``kernel.``): lines/s from ``print`` into the document as a peer sees it
(flushed and buffered) and how long after the kernel finished the loop the peer had every
line; print → peer latency from ``time.time()`` stamps (same machine clock); queue
throughput of trivial cells asked by 3 peers, and run request → ``execution_state``
"running" at another peer; the in-kernel API (``kernel_collab.notebook()``, synced over the
kernel's comm): an edit in the kernel → a peer, and 1,000 cells appended → a peer has them
all, against the same change made by a peer of the same sidecar (their floor), here and
(``kernel-remote``) with the kernel on another host.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import nbformat
import pytest
import zmq
import zmq.asyncio
from jupyter_client.asynchronous.client import AsyncKernelClient
from pycrdt import Map, Text

from kernel_collab.notebook_core.cells import new_cell_id, set_text
from tests.jupyter_server_process import JupyterServer, running_server
from tests.remote_host import (
    KERNEL_NAME,
    SSHD,
    RemoteHost,
    remote_host,
    remote_server_env,
    write_ssh_kernelspec,
)

from .peers import Peer, PeerError, join
from .systems import System
from .workloads import Context, Recorder

TIMEOUT = 180.0
"""Longest wait for one kernel event (a kernel start, a loop's last line, a queue draining)."""
STAMP_PERIOD = 0.02
"""Seconds between two stamped prints in the latency cell."""
STAMP_WARMUP = 10
"""Stamped prints not recorded at the start of each latency run."""
QUEUE_PEERS = 3
API_APPEND_CELLS = 1_000
"""Cells the kernel appends through ``kernel_collab.notebook()`` in one transaction."""


class KernelBenchError(RuntimeError):
    """A kernel workload could not complete; the message says which step and why."""


# -- the cells -------------------------------------------------------------------------------


def lines_code(lines: int, flush: bool, end_file: Path) -> str:
    """A loop printing ``0..lines-1``, one per line, then writing ``time.time()`` (the moment
    the kernel finished the loop) to ``end_file``."""
    end = ", flush=True" if flush else ""
    return (
        f"import time, pathlib\nfor i in range({lines}):\n    print(i{end})\n"
        f"pathlib.Path({str(end_file)!r}).write_text(repr(time.time()))"
    )


def stamps_code(samples: int) -> str:
    """Prints ``time.time()`` every ``STAMP_PERIOD`` seconds, flushed."""
    return (
        f"import time\nfor _ in range({samples}):\n    print(repr(time.time()), flush=True)\n"
        f"    time.sleep({STAMP_PERIOD})"
    )


def expected_lines(lines: int) -> str:
    """What the lines loop prints."""
    return "".join(f"{i}\n" for i in range(lines))


COLLAB_KERNEL = "python3-collab"
"""The collaborative kernelspec (a kernel on this machine)."""


def write_notebook(path: Path, cells: dict[str, str], kernel: str = COLLAB_KERNEL) -> Path:
    """A notebook with one code cell per ``{cell_id: source}``, in order, on ``kernel``."""
    nb = nbformat.v4.new_notebook()
    for cell_id, source in cells.items():
        nb.cells.append(nbformat.v4.new_code_cell(source, id=cell_id))
    display = "Python 3" if kernel == COLLAB_KERNEL else kernel
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": display}
    nbformat.write(nb, path)
    return path


# -- what a peer sees ------------------------------------------------------------------------


def cell_index(peer: Peer, cell_id: str) -> int:
    """Position of the cell with that id in the peer's document."""
    for i, cell in enumerate(peer.notebook.ycells):
        if isinstance(cell, Map) and cell.get("id") == cell_id:
            return i
    raise PeerError(f"{peer.name}: no cell {cell_id!r}")


def stdout_text(peer: Peer, index: int) -> Text | None:
    """The Y text of a cell's stdout stream output, once there is one."""
    outputs = peer.notebook.ycells[index].get("outputs")
    if outputs is None:
        return None
    for output in outputs:
        if isinstance(output, Map) and output.get("name") == "stdout":
            text = output.get("text")
            if isinstance(text, Text):
                return text
            raise PeerError(f"{peer.name}: stdout of cell {index} is not a Y text")
    return None


def last_run(peer: Peer, index: int) -> dict[str, Any]:
    """``metadata.kernel_collab.last_run`` of a cell ({} before any run)."""
    metadata = peer.notebook.ycells[index].get("metadata")
    ours = metadata.get("kernel_collab") if isinstance(metadata, Map) else None
    if isinstance(ours, Map):
        ours = ours.to_py()
    run = ours.get("last_run") if isinstance(ours, dict) else None
    return run if isinstance(run, dict) else {}


def collab_state(peer: Peer) -> dict[str, Any]:
    """kernel_collab's map in the document's ``state`` ({} before the sidecar wrote it)."""
    value = peer.notebook.ystate.get("kernel_collab")
    if not isinstance(value, Map):
        return {}
    state: dict[str, Any] = value.to_py() or {}
    return state


def kernel_idle(peer: Peer) -> Callable[[], bool]:
    """The sidecar reports its kernel idle."""
    return lambda: collab_state(peer).get("kernel_status") == "idle"


async def wait_for(peer: Peer, predicate: Callable[[], bool], what: str,
                   timeout: float = TIMEOUT) -> float:
    """Wait until ``predicate`` holds at ``peer`` (at once if it already does)."""
    try:
        if predicate():
            return time.perf_counter()
    except (IndexError, KeyError):
        pass
    try:
        return await peer.wait(peer.expect(predicate), timeout)
    except PeerError as exc:
        raise KernelBenchError(f"{what}: {exc}") from exc


async def run_and_wait(peer: Peer, cell_id: str, what: str) -> dict[str, Any]:
    """Queue a cell through the sidecar and wait for its run to end with status ok."""
    index = cell_index(peer, cell_id)
    before = last_run(peer, index).get("start")

    def ended() -> bool:
        run = last_run(peer, index)
        return run.get("start") != before and run.get("end") is not None

    waiter = peer.expect(ended)
    await peer.request({"type": "execute", "cell_id": cell_id})
    try:
        await peer.wait(waiter, TIMEOUT)
    except PeerError as exc:
        raise KernelBenchError(f"{what}: {exc}") from exc
    run = last_run(peer, index)
    if run.get("status") != "ok":
        outputs = peer.notebook.ycells[index].get("outputs")
        errors = [o.to_py() or {} for o in outputs or [] if isinstance(o, Map)
                  and o.get("output_type") == "error"]  # fmt: skip
        detail = errors[0].get("evalue") if errors else "no error output"
        raise KernelBenchError(f"{what}: cell {cell_id} ended {run.get('status')}: {detail}")
    return run


# -- the server, the sidecar, the plain kernel -----------------------------------------------


@dataclass
class KernelSetup:
    """A running Jupyter server with the collaborative kernelspec (and the run's plan)."""

    server: JupyterServer
    ctx: Context
    wall_offset: float = field(default_factory=lambda: time.time() - time.perf_counter())
    """``time.time() - time.perf_counter()``: peers' arrival times as wall-clock times."""

    def wall(self, perf: float) -> float:
        """A ``perf_counter()`` value as a ``time.time()`` value."""
        return perf + self.wall_offset

    def fail(self, what: str, exc: BaseException | None = None) -> KernelBenchError:
        """An error naming the step, with the end of the server's log (sidecars log there)."""
        tail = "\n".join("    " + line for line in self.server.log.splitlines()[-30:])
        detail = f": {exc}" if exc is not None else ""
        return KernelBenchError(f"{what}{detail}\n  server log (last lines):\n{tail}")


@contextlib.asynccontextmanager
async def collab_server(base: Path, env: dict[str, str] | None = None,
                        args: tuple[str, ...] = ()) -> AsyncIterator[JupyterServer]:
    """``tests.jupyter_server_process.running_server`` (kernel_collab's extension enabled) on a
    fresh root under ``base`` (``env`` added to its environment, ``args`` to its command line);
    its blocking start and stop run in a worker thread."""
    async with collab_servers((base, args), env=env) as (server,):
        yield server


@contextlib.asynccontextmanager
async def collab_servers(
    *specs: tuple[Path, tuple[str, ...]], env: dict[str, str] | None = None,
) -> AsyncIterator[list[JupyterServer]]:
    """``collab_server`` for each ``(base, args)``, all started and stopped at once (a start
    is seconds of waiting for the server: the quick run has little to spare)."""
    managers: list[AbstractContextManager[JupyterServer]] = []
    for base, args in specs:
        root, runtime = base / "root", base / "runtime"
        root.mkdir(parents=True)
        runtime.mkdir(parents=True)
        managers.append(running_server(root, runtime, *args, env=env))
    entered: dict[int, JupyterServer] = {}

    async def enter(i: int) -> None:
        entered[i] = await anyio.to_thread.run_sync(managers[i].__enter__)

    try:
        async with anyio.create_task_group() as tg:
            for i in range(len(managers)):
                tg.start_soon(enter, i)
        yield [entered[i] for i in range(len(managers))]
    finally:
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for i in entered:
                    tg.start_soon(anyio.to_thread.run_sync, managers[i].__exit__, None, None,
                                  None)  # fmt: skip


@contextlib.asynccontextmanager
async def jupyter_server(ctx: Context) -> AsyncIterator[KernelSetup]:
    """A server for the kernel workloads, with the run's plan."""
    async with collab_server(ctx.scratch / "kernel") as server:
        yield KernelSetup(server, ctx)


@contextlib.asynccontextmanager
async def collab_session(
    setup: KernelSetup, notebook: Path, peers: int, kernel: str = COLLAB_KERNEL
) -> AsyncIterator[list[Peer]]:
    """A notebook session with a collaborative kernel (kernelspec ``kernel``), ``peers``
    synced peers of its sidecar, the kernel idle and warmed up (one trivial cell run). Ends
    the session."""
    server = setup.server
    rel = notebook.relative_to(server.root).as_posix()
    try:
        session = await server.start_session(rel, kernel=kernel)
    except httpx.HTTPError as exc:
        raise setup.fail(f"POST /api/sessions for {rel} (kernel {kernel})", exc) from exc
    try:
        if session["kernel"]["name"] != kernel:
            raise setup.fail(f"session started kernel {session['kernel']['name']!r}")
        try:
            record = server.sidecar(notebook)
        except AssertionError as exc:
            raise setup.fail(f"no sidecar runtime record for {rel}") from exc
        url = f"{record['url']}?token={quote(record['token'])}"
        async with contextlib.AsyncExitStack() as stack:
            group = [await stack.enter_async_context(join(url, f"kpeer{i}"))
                     for i in range(peers)]
            await wait_for(group[0], kernel_idle(group[0]), f"{rel}: kernel idle")
            await run_and_wait(group[0], "warm", f"{rel}: warm-up cell")
            yield group
    finally:
        with anyio.CancelScope(shield=True), contextlib.suppress(httpx.HTTPError):
            async with server.client() as http:
                await http.delete(f"/api/sessions/{session['id']}")


@contextlib.asynccontextmanager
async def plain_kernel(setup: KernelSetup) -> AsyncIterator[AsyncKernelClient]:
    """A plain ``python3`` kernel started by the same server (``POST /api/kernels``) and a
    plain jupyter_client client of it (all channels), warmed up."""
    server = setup.server
    async with server.client() as http:
        try:
            response = await http.post("/api/kernels", json={"name": "python3"})
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise setup.fail("POST /api/kernels (python3)", exc) from exc
        kernel_id = response.json()["id"]
        # No receive high-water mark on iopub, as the sidecar's bridge: with the default
        # (1,000) a plain client falling behind a flushed loop loses lines and even the
        # final idle status, and the floor could not be timed at all.
        context = zmq.asyncio.Context()
        context.setsockopt(zmq.RCVHWM, 0)
        client = AsyncKernelClient(context=context)
        try:
            client.load_connection_file(str(server.runtime / f"kernel-{kernel_id}.json"))
            client.start_channels()
            await client.wait_for_ready(timeout=60)
            await plain_execute(client, "import time, pathlib\nx = 0")
            yield client
        finally:
            client.stop_channels()
            context.destroy(linger=0)
            with anyio.CancelScope(shield=True), contextlib.suppress(httpx.HTTPError):
                await http.delete(f"/api/kernels/{kernel_id}")


async def plain_execute(client: AsyncKernelClient, code: str) -> None:
    """Run code on the plain kernel and wait for its (ok) reply."""
    msg_id = client.execute(code)
    while True:
        msg = await client.get_shell_msg(timeout=TIMEOUT)
        if msg["parent_header"].get("msg_id") == msg_id:
            if msg["content"].get("status") != "ok":
                raise KernelBenchError(f"plain kernel: {code!r} failed: {msg['content']}")
            return


async def plain_iopub(
    client: AsyncKernelClient, msg_id: str, on_stream: Callable[[str, float], None]
) -> None:
    """Read iopub until the kernel is idle after ``msg_id``; call ``on_stream(text, now)``
    for each of its stdout stream messages (``now``: ``perf_counter()`` on arrival)."""
    while True:
        msg = await client.get_iopub_msg(timeout=TIMEOUT)
        now = time.perf_counter()
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content.get("name") == "stdout":
            on_stream(content["text"], now)
        elif kind == "error":
            raise KernelBenchError(f"plain kernel: the cell failed: {content.get('evalue')}")
        elif kind == "status" and content.get("execution_state") == "idle":
            return


# -- (a) lines/s -----------------------------------------------------------------------------


@dataclass
class LinesResult:
    """One lines run: rate, lag and the text's growth over time (for the plots)."""

    rate: float
    lag: float
    series: list[tuple[float, int]]
    """(seconds since the request, characters received)."""


def read_end(path: Path) -> float:
    """The kernel's end-of-loop ``time.time()``, written by the cell."""
    try:
        return float(path.read_text())
    except (OSError, ValueError) as exc:
        raise KernelBenchError(f"the cell did not write its end time to {path}: {exc}") from exc


async def lines_ours(setup: KernelSetup, peer: Peer, cell_id: str, lines: int,
                     end_file: Path) -> LinesResult:
    """Run a lines cell through the sidecar; time until the peer holds every line."""
    index = cell_index(peer, cell_id)
    want = len(expected_lines(lines))
    series: list[tuple[float, int]] = []
    done = anyio.Event()
    done_at = 0.0

    def on_update(now: float) -> None:
        nonlocal done_at
        text = stdout_text(peer, index)
        if text is None:
            return
        n = len(text)
        if not series or series[-1][1] != n:
            series.append((now, n))
        if n >= want and not done.is_set():
            done_at = now
            done.set()

    peer.listeners.append(on_update)
    before = last_run(peer, index).get("start")
    try:
        message, _ = peer.request_message({"type": "execute", "cell_id": cell_id})
        t0 = await peer.send(message)
        try:
            with anyio.fail_after(TIMEOUT):
                await done.wait()
        except TimeoutError:
            text = stdout_text(peer, index)
            got = 0 if text is None else len(text)
            raise setup.fail(f"{cell_id}: peer had {got} of {want} characters after "
                             f"{TIMEOUT:g} s") from None
    finally:
        peer.listeners.remove(on_update)
    await wait_for(peer, lambda: last_run(peer, index).get("start") != before
                   and last_run(peer, index).get("status") == "ok", f"{cell_id}: status ok")
    text = stdout_text(peer, index)
    if text is None or str(text) != expected_lines(lines):
        raise KernelBenchError(f"{cell_id}: the peer's stdout is not the {lines} lines printed")
    end = read_end(end_file)
    return LinesResult(lines / (done_at - t0), setup.wall(done_at) - end,
                       [(t - t0, n) for t, n in series])


async def lines_floor(setup: KernelSetup, client: AsyncKernelClient, lines: int, flush: bool,
                      end_file: Path) -> LinesResult:
    """The same loop on the plain kernel; time until the plain client has every line."""
    want = len(expected_lines(lines))
    series: list[tuple[float, int]] = []
    got = 0
    done_at = 0.0

    def on_stream(text: str, now: float) -> None:
        nonlocal got, done_at
        got += len(text)
        series.append((now, got))
        if got >= want and not done_at:
            done_at = now

    t0 = time.perf_counter()
    msg_id = client.execute(lines_code(lines, flush, end_file))
    await plain_iopub(client, msg_id, on_stream)
    if got != want:
        raise KernelBenchError(f"plain client: {got} of {want} characters of the loop")
    end = read_end(end_file)
    return LinesResult(lines / (done_at - t0), setup.wall(done_at) - end,
                       [(t - t0, n) for t, n in series])


# -- (b) print → peer latency ----------------------------------------------------------------


class StampReader:
    """Turns received stdout text (complete lines of ``time.time()`` stamps) into latencies."""

    def __init__(self, setup: KernelSetup) -> None:
        self.setup = setup
        self.partial = ""
        self.latencies: list[float] = []

    def feed(self, text: str, now: float) -> None:
        """New text that arrived at ``now`` (``perf_counter()``)."""
        *complete, self.partial = (self.partial + text).split("\n")
        arrived = self.setup.wall(now)
        self.latencies += [arrived - float(line) for line in complete if line]


async def stamps_ours(setup: KernelSetup, peer: Peer, cell_id: str, samples: int) -> list[float]:
    """Print stamps in the kernel; latency until the peer has each line."""
    index = cell_index(peer, cell_id)
    reader = StampReader(setup)
    seen = 0

    def on_update(now: float) -> None:
        nonlocal seen
        text = stdout_text(peer, index)
        if text is None:
            return
        value = str(text)
        if len(value) > seen:
            reader.feed(value[seen:], now)
            seen = len(value)

    peer.listeners.append(on_update)
    try:
        await run_and_wait(peer, cell_id, f"{cell_id}: stamped prints")
    finally:
        peer.listeners.remove(on_update)
    if len(reader.latencies) != samples:
        raise KernelBenchError(f"{cell_id}: {len(reader.latencies)} of {samples} stamps seen")
    return reader.latencies[STAMP_WARMUP:]


async def stamps_floor(setup: KernelSetup, client: AsyncKernelClient,
                       samples: int) -> list[float]:
    """The same stamps read by the plain client from iopub."""
    reader = StampReader(setup)
    msg_id = client.execute(stamps_code(samples))
    await plain_iopub(client, msg_id, reader.feed)
    if len(reader.latencies) != samples:
        raise KernelBenchError(f"plain client: {len(reader.latencies)} of {samples} stamps")
    return reader.latencies[STAMP_WARMUP:]


# -- (b2) the in-kernel notebook API and the Python client --------------------------------


def api_edit_code(samples: int) -> str:
    """Code in the kernel setting cell ``api-target``'s source to ``time.time()`` every
    ``STAMP_PERIOD`` seconds, through ``kernel_collab.notebook()``."""
    return (
        "import kernel_collab, time\nnb = kernel_collab.notebook()\n"
        "target = next(c for c in nb.cells if c.id == 'api-target')\n"
        f"for _ in range({samples}):\n    target.source = repr(time.time())\n"
        f"    time.sleep({STAMP_PERIOD})\n"
    )


def api_append_code(cells: int, end_file: Path) -> str:
    """Code in the kernel appending ``cells`` cells in one transaction, then writing to
    ``end_file`` the times its transaction started and ended (the sync is on its own thread:
    the update leaves once the transaction ends)."""
    return (
        "import kernel_collab, time, pathlib\nnb = kernel_collab.notebook()\n"
        "t0 = time.time()\nwith nb.transaction():\n"
        f"    for i in range({cells}):\n        nb.append_cell(f'y = {{i}}')\n"
        f"t1 = time.time()\npathlib.Path({str(end_file)!r}).write_text(f'{{t0!r}} {{t1!r}}')\n"
    )


def watch_stamps(setup: KernelSetup, peer: Peer, cell_id: str) -> tuple[StampReader,
                                                                        Callable[[float], None]]:
    """A reader of the ``time.time()`` stamps written into a cell's source, and the listener
    feeding it (to add to ``peer.listeners``): one latency per new stamp the peer sees."""
    index = cell_index(peer, cell_id)
    reader = StampReader(setup)
    last = str(peer.notebook.ycells[index]["source"])

    def on_update(now: float) -> None:
        nonlocal last
        value = str(peer.notebook.ycells[index]["source"])
        if value != last and value.replace(".", "", 1).isdigit():
            reader.feed(value + "\n", now)
        last = value

    return reader, on_update


async def api_edit_ours(setup: KernelSetup, peer: Peer, samples: int) -> list[float]:
    """Kernel-side edit → peer latency: each stamp the kernel writes, as the peer sees it."""
    reader, on_update = watch_stamps(setup, peer, "api-target")
    peer.listeners.append(on_update)
    try:
        await run_and_wait(peer, "api-edit", "api-edit: kernel-side edits")
    finally:
        peer.listeners.remove(on_update)
    if len(reader.latencies) < samples * 0.9:
        raise KernelBenchError(f"api-edit: {len(reader.latencies)} of {samples} edits seen")
    return reader.latencies[STAMP_WARMUP:]


async def api_edit_floor(setup: KernelSetup, watcher: Peer, writer: Peer,
                         samples: int) -> list[float]:
    """The same edits (the source set to ``time.time()`` every ``STAMP_PERIOD``, a minimal
    text edit) made by another peer of the same sidecar instead of the kernel."""
    reader, on_update = watch_stamps(setup, watcher, "api-target")
    source = writer.cell_source(cell_index(writer, "api-target"))
    watcher.listeners.append(on_update)
    stamp = ""
    try:
        for _ in range(samples + STAMP_WARMUP):
            stamp = repr(time.time())

            def edit(value: str = stamp) -> None:
                set_text(source, value)

            await writer.ws.send(writer.change(edit))
            await anyio.sleep(STAMP_PERIOD)
        index = cell_index(watcher, "api-target")
        await wait_for(watcher, lambda: str(watcher.notebook.ycells[index]["source"]) == stamp,
                       "api-edit floor: the last edit at the other peer")
    finally:
        watcher.listeners.remove(on_update)
    if len(reader.latencies) < samples * 0.9:
        raise KernelBenchError(f"api-edit floor: {len(reader.latencies)} of {samples} edits seen")
    return reader.latencies[STAMP_WARMUP:]


@dataclass
class AppendResult:
    """1,000 cells appended in the kernel: from the transaction's start to the peer having
    them all, and how much of that the kernel's transaction itself took."""

    total: float
    transaction: float


async def api_append_ours(setup: KernelSetup, peer: Peer, cells: int,
                          end_file: Path) -> AppendResult:
    """Seconds from the kernel's first append to the peer having all ``cells`` new cells."""
    before = len(peer.notebook.ycells)
    waiter = peer.expect(lambda: len(peer.notebook.ycells) >= before + cells)
    await run_and_wait(peer, "api-append", "api-append: 1,000 cells from the kernel")
    arrived = await peer.wait(waiter, TIMEOUT)
    t0, t1 = read_times(end_file)
    return AppendResult(setup.wall(arrived) - t0, t1 - t0)


def read_times(path: Path) -> tuple[float, float]:
    """The kernel's transaction start and end ``time.time()``, written by the append cell."""
    try:
        t0, t1 = (float(x) for x in path.read_text().split())
    except (OSError, ValueError) as exc:
        raise KernelBenchError(f"api-append: no start/end times in {path}: {exc}") from exc
    return t0, t1


async def api_append_floor(watcher: Peer, writer: Peer, cells: int) -> float:
    """The same cells (as ``append_cell`` makes them) appended in one transaction by another
    peer of the same sidecar: from the transaction's start to ``watcher`` having them all."""
    before = len(watcher.notebook.ycells)
    waiter = watcher.expect(lambda: len(watcher.notebook.ycells) >= before + cells)
    ynb = writer.notebook

    def append() -> None:
        for i in range(cells):
            ynb.ycells.append(ynb.create_ycell({
                "id": new_cell_id(), "cell_type": "code", "source": f"y = {i}", "metadata": {},
                "outputs": [], "execution_count": None}))

    t0 = time.perf_counter()
    await writer.ws.send(writer.change(append))
    try:
        return await watcher.wait(waiter, TIMEOUT) - t0
    except PeerError as exc:
        raise KernelBenchError(f"api-append floor: {exc}") from exc


def api_notebook(path: Path, samples: int, end_file: Path, kernel: str = COLLAB_KERNEL) -> Path:
    """The notebook of the in-kernel API rows: its kernel says where it runs (cell
    ``where``), edits a cell's source (``api-edit``) and appends cells (``api-append``)."""
    return write_notebook(path, {
        "warm": "x = 0",
        "where": "import os\nprint(os.getpid(), os.readlink('/proc/self/ns/net'))",
        "api-target": "0",
        "api-edit": api_edit_code(samples + STAMP_WARMUP),
        "api-append": api_append_code(API_APPEND_CELLS, end_file),
    }, kernel)


async def where(peer: Peer) -> tuple[int, str]:
    """Run cell ``where``: the kernel's pid and network namespace."""
    await run_and_wait(peer, "where", "where: the kernel's pid and network namespace")
    text = stdout_text(peer, cell_index(peer, "where"))
    try:
        pid, netns = str(text).split()
        return int(pid), netns
    except ValueError:
        raise KernelBenchError(f"where: unexpected output {str(text)!r}") from None


async def api_rows(setup: KernelSetup, notebook: Path, end_file: Path, prefix: str,
                   ours: Recorder, floor: Recorder, kernel: str = COLLAB_KERNEL,
                   check: Callable[[int, str], None] | None = None) -> None:
    """The in-kernel API rows (``{prefix}.api_edit``, ``{prefix}.api_append``) in a session
    of ``notebook`` with two peers, and their floor: the same edits and appends made by one
    peer, seen by the other, through the same sidecar. ``check(pid, netns)`` may refuse the
    kernel (not where it should run)."""
    samples = setup.ctx.plan.running_samples
    async with collab_session(setup, notebook, 2, kernel) as (watcher, writer):
        pid, netns = await where(watcher)
        if check is not None:
            check(pid, netns)
        for x in await api_edit_ours(setup, watcher, samples):
            ours.add(f"{prefix}.api_edit", x)
        for x in await api_edit_floor(setup, watcher, writer, samples):
            floor.add(f"{prefix}.api_edit", x)
        # The floor first: ours then appends to the larger document (never to its advantage).
        floor.add(f"{prefix}.api_append", await api_append_floor(watcher, writer,
                                                                 API_APPEND_CELLS))
        res = await api_append_ours(setup, watcher, API_APPEND_CELLS, end_file)
        ours.add(f"{prefix}.api_append", res.total)
        ours.note(f"{prefix}.api_append", f"the kernel's transaction (1,000 append_cell) took "
                  f"{res.transaction:.2f} s of the {res.total:.2f} s")


async def client_round_trips(setup: KernelSetup, rel: str, samples: int) -> list[float]:
    """``await (await nb.run_async(cell)).wait()`` for a trivial cell, from the Python client
    through the server: request to outputs back."""
    from kernel_collab.client import connect

    times = []
    async with connect(setup.server.url, rel, token=setup.server.token, name="bench") as nb:
        for _ in range(samples):
            t = time.perf_counter()
            handle = await nb.run_async("api-trivial")
            await handle.wait()
            times.append(time.perf_counter() - t)
    return times[STAMP_WARMUP:]


async def floor_round_trips(client: AsyncKernelClient, samples: int) -> list[float]:
    """The plain client: ``execute_request`` → its reply and the kernel's ``idle`` after it
    (only then are a cell's outputs all in, what the Python client's ``wait()`` returns on),
    for the same trivial cell."""
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        reply = await client.execute("x = 1", reply=True, timeout=TIMEOUT)
        parent = reply["parent_header"]["msg_id"]
        while True:
            msg = await client.get_iopub_msg(timeout=TIMEOUT)
            if (msg["parent_header"].get("msg_id") == parent and msg["msg_type"] == "status"
                    and msg["content"].get("execution_state") == "idle"):  # fmt: skip
                break
        times.append(time.perf_counter() - t)
    return times[STAMP_WARMUP:]


# -- (c) queue -------------------------------------------------------------------------------


async def queue_ours(group: list[Peer], cells: int) -> tuple[float, list[float]]:
    """``cells`` trivial cells asked for by the peers in turn, all at once; cells/s until the
    first peer sees the last of them end. The queue is FIFO and each connection's requests
    are handled in order, so the last cell asked on each connection ends last. Also returns
    when each cell ended (its ``last_run.end``, seconds after the first request)."""
    first = group[0]
    base = cell_index(first, "q0")
    before = [last_run(first, base + i).get("start") for i in range(cells)]
    lasts = [cells - 1 - k for k in range(min(len(group), cells))]

    def ended(i: int) -> bool:
        run = last_run(first, base + i)
        return run.get("start") != before[i] and run.get("end") is not None

    waiter = first.expect(lambda: all(ended(i) for i in lasts))
    keys: list[tuple[Peer, str]] = []
    t0, wall0 = time.perf_counter(), time.time()
    for i in range(cells):
        peer = group[i % len(group)]
        message, key = peer.request_message({"type": "execute", "cell_id": f"q{i}"},
                                            want_reply=True)
        keys.append((peer, key))
        await peer.ws.send(message)
    try:
        t_done = await first.wait(waiter, TIMEOUT)
    except PeerError as exc:
        raise KernelBenchError(f"queue of {cells} cells did not drain: {exc}") from exc
    try:
        for peer, key in keys:
            await peer.wait_reply(key, TIMEOUT)
    except PeerError as exc:
        raise KernelBenchError(f"queue: {exc}") from exc
    bad = [i for i in range(cells)
           if not ended(i) or last_run(first, base + i).get("status") != "ok"]
    if bad:
        raise KernelBenchError(f"{len(bad)} queued cells did not run ok, e.g. q{bad[0]}: "
                               f"{last_run(first, base + bad[0])}")
    ends = sorted(float(last_run(first, base + i)["end"]) - wall0 for i in range(cells))
    return cells / (t_done - t0), ends


async def queue_floor(client: AsyncKernelClient, cells: int) -> tuple[float, list[float]]:
    """The same requests from one plain client, pipelined; cells/s until the last reply, and
    when each reply came (seconds after the first request)."""
    t0 = time.perf_counter()
    pending = {client.execute("x = 1") for _ in range(cells)}
    ends: list[float] = []
    while pending:
        msg = await client.get_shell_msg(timeout=TIMEOUT)
        parent = msg["parent_header"].get("msg_id")
        if parent in pending:
            if msg["content"].get("status") != "ok":
                raise KernelBenchError(f"plain kernel: a queued cell failed: {msg['content']}")
            pending.discard(parent)
            ends.append(time.perf_counter() - t0)
    return cells / ends[-1], ends


async def running_ours(group: list[Peer], samples: int, ctx: Context) -> tuple[list[float], int]:
    """Run request by one peer → another peer sees the cell start (``execution_state``
    "running", or already a newer ``last_run`` when start and end came in one update).
    Returns the latencies and how many showed "running" itself."""
    asker, watcher = group[0], group[1]
    index = cell_index(watcher, "probe")
    out: list[float] = []
    shown_running = 0
    for _ in range(samples):
        before = last_run(watcher, index).get("start")

        def started(b: Any = before) -> bool:
            cell = watcher.notebook.ycells[index]
            return bool(cell.get("execution_state") == "running"
                        or last_run(watcher, index).get("start") != b)

        waiter = watcher.expect(started)
        message, _ = asker.request_message({"type": "execute", "cell_id": "probe"})
        t0 = await asker.send(message)
        try:
            out.append(await watcher.wait(waiter, TIMEOUT) - t0)
        except PeerError as exc:
            raise KernelBenchError(f"probe run not seen starting: {exc}") from exc
        shown_running += watcher.notebook.ycells[index].get("execution_state") == "running"
        def ended(b: Any = before) -> bool:
            run = last_run(watcher, index)
            return run.get("start") != b and run.get("end") is not None

        await wait_for(watcher, ended, "probe run end")
        await anyio.sleep(ctx.jitter(0.002, 0.01))
    return out, shown_running


async def running_floor(client: AsyncKernelClient, samples: int, ctx: Context) -> list[float]:
    """Execute request → the plain client's own iopub says busy for it."""
    out: list[float] = []
    for _ in range(samples):
        t0 = time.perf_counter()
        msg_id = client.execute("x = 1")
        busy = 0.0
        while True:
            msg = await client.get_iopub_msg(timeout=TIMEOUT)
            if msg["parent_header"].get("msg_id") != msg_id or msg["msg_type"] != "status":
                continue
            state = msg["content"].get("execution_state")
            if state == "busy" and not busy:
                busy = time.perf_counter()
            elif state == "idle":
                break
        out.append(busy - t0)
        await anyio.sleep(ctx.jitter(0.002, 0.01))
    return out


# -- the workload ----------------------------------------------------------------------------


async def kernel_workloads(system: System, ctx: Context, ours: Recorder, floor: Recorder) -> None:
    """Every kernel measure for kernel_collab (``system`` must be the sidecar) and the floor."""
    plan = ctx.plan
    if system.shared_server:
        raise KernelBenchError("the kernel workloads run kernel_collab only")
    async with jupyter_server(ctx) as setup:
        root = setup.server.root
        ends = root / "ends"
        ends.mkdir()
        runs = [(flush, r) for r in range(plan.lines_repeats) for flush in (True, False)]
        cells = {"warm": "import time, pathlib\nx = 0"}
        for flush, r in runs:
            n = plan.lines_flushed if flush else plan.lines_buffered
            cid = _lines_id(flush, r)
            cells[cid] = lines_code(n, flush, ends / f"collab-{cid}")
        for r in range(plan.stamp_repeats):
            cells[f"stamps-{r}"] = stamps_code(plan.stamp_samples + STAMP_WARMUP)
        api_samples = plan.running_samples
        cells["api-trivial"] = "x = 1"
        kernel_nb = write_notebook(root / "kernel.ipynb", cells)
        api_nb = api_notebook(root / "api.ipynb", api_samples, ends / "api-append")
        queue_nb = write_notebook(root / "queue.ipynb", {
            "warm": "x = 0", **{f"q{i}": "x = 1" for i in range(plan.queue_cells)},
            "probe": "x = 1",
        })
        series: dict[str, Any] = {}
        """For the plots: print-loop text over time, queued cells ending over time."""

        async def ours_output() -> None:
            async with collab_session(setup, kernel_nb, 1) as (peer,):
                for flush, r in runs:
                    n = plan.lines_flushed if flush else plan.lines_buffered
                    cid = _lines_id(flush, r)
                    res = await lines_ours(setup, peer, cid, n, ends / f"collab-{cid}")
                    mode = "flushed" if flush else "buffered"
                    ours.add(f"kernel.lines.{mode}", res.rate)
                    ours.add(f"kernel.lag.{mode}", res.lag)
                    series.setdefault(f"ours.{mode}", res.series)
                for r in range(plan.stamp_repeats):
                    for x in await stamps_ours(setup, peer, f"stamps-{r}", plan.stamp_samples
                                               + STAMP_WARMUP):
                        ours.add("kernel.print_latency", x)
                for x in await client_round_trips(setup, "kernel.ipynb", api_samples):
                    ours.add("kernel.client_run", x)

        async def ours_api() -> None:
            await api_rows(setup, api_nb, ends / "api-append", "kernel", ours, floor)

        async def floor_output() -> None:
            async with plain_kernel(setup) as client:
                for flush, r in runs:
                    n = plan.lines_flushed if flush else plan.lines_buffered
                    cid = _lines_id(flush, r)
                    res = await lines_floor(setup, client, n, flush, ends / f"plain-{cid}")
                    mode = "flushed" if flush else "buffered"
                    floor.add(f"kernel.lines.{mode}", res.rate)
                    floor.add(f"kernel.lag.{mode}", res.lag)
                    series.setdefault(f"floor.{mode}", res.series)
                for _ in range(plan.stamp_repeats):
                    for x in await stamps_floor(setup, client, plan.stamp_samples + STAMP_WARMUP):
                        floor.add("kernel.print_latency", x)
                for _ in range(plan.queue_repeats):
                    rate, times = await queue_floor(client, plan.queue_cells)
                    floor.add("kernel.queue", rate)
                    series.setdefault("floor.queue", times)
                for x in await running_floor(client, plan.running_samples, ctx):
                    floor.add("kernel.running", x)
                for x in await floor_round_trips(client, api_samples):
                    floor.add("kernel.client_run", x)

        async def ours_queue() -> None:
            async with collab_session(setup, queue_nb, QUEUE_PEERS) as group:
                for _ in range(plan.queue_repeats):
                    rate, times = await queue_ours(group, plan.queue_cells)
                    ours.add("kernel.queue", rate)
                    series.setdefault("ours.queue", times)
                samples, shown = await running_ours(group, plan.running_samples, ctx)
                for x in samples:
                    ours.add("kernel.running", x)
                stats = await group[0].request({"type": "stats"})
                ours.info["queue_stats"] = stats
                ours.note("kernel.queue", f"sidecar stats over this session: "
                          f"{stats.get('commits')} group commits, p50 "
                          f"{1e3 * (stats.get('commit_p50_s') or 0):.2f} ms, p99 "
                          f"{1e3 * (stats.get('commit_p99_s') or 0):.2f} ms")
                if shown < len(samples):
                    ours.note("kernel.running", f"{len(samples) - shown} of {len(samples)} runs "
                              "reached the other peer already ended (start and end in one "
                              "update): timed to the newer last_run")

        for step in (ours_output, floor_output, ours_api, ours_queue):
            t = time.perf_counter()
            await step()
            print(f"         kernel: {step.__name__.replace('_', ' ')} done in "
                  f"{time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
        ours.info["kernel_series"] = series
        ours.info["kernel_plan"] = {
            "lines_flushed": plan.lines_flushed, "lines_buffered": plan.lines_buffered,
            "stamp_samples": plan.stamp_samples, "stamp_period_s": STAMP_PERIOD,
            "queue_cells": plan.queue_cells, "queue_peers": QUEUE_PEERS,
        }


# -- the same API rows, the kernel on another host ---------------------------------------------


REMOTE_PREFIX = "kernel.remote"
"""Keys of the rows for a kernel on another host (``tests/remote_host.py``)."""


def remote_preflight() -> str | None:
    """Why ``kernel-remote`` cannot run here (None: it can try), checked before any workload
    runs so a run that cannot make the other host fails at once."""
    import importlib.util
    import shutil

    if os.geteuid() != 0:
        return ("it makes a network namespace with its own sshd as the other host, which needs "
                "root (run as root, or leave kernel-remote out of --only)")
    missing = [tool for tool in ("ip", "ssh-keygen", SSHD) if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} missing (scripts/setup-remote installs openssh-server)"
    if importlib.util.find_spec("gateway_provisioners") is None:
        return "gateway-provisioners is not installed in this venv (it is in the test extras)"
    return None


@contextlib.asynccontextmanager
async def other_host(folder: Path) -> AsyncIterator[RemoteHost]:
    """``tests.remote_host.remote_host`` (a network namespace with its own sshd), made and
    removed in a worker thread; failing to make it is a :class:`KernelBenchError` saying why
    (it needs root, ``ip netns`` and ``/usr/sbin/sshd``)."""
    cm = remote_host(folder)
    try:
        host = await anyio.to_thread.run_sync(cm.__enter__)
    except pytest.fail.Exception as exc:
        raise KernelBenchError(f"kernel-remote: cannot make the other host: {exc}") from None
    try:
        yield host
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(cm.__exit__, None, None, None)


def same_kernel_collab(kernel_json: Path) -> None:
    """Make the kernel on the other host import the kernel_collab this process imports (the
    server, its sidecars and local kernels inherit our ``PYTHONPATH``; only the kernelspec's
    ``env`` crosses SSH)."""
    import kernel_collab

    spec = json.loads(kernel_json.read_text())
    spec["env"]["PYTHONPATH"] = str(Path(kernel_collab.__file__).resolve().parent.parent)
    kernel_json.write_text(json.dumps(spec, indent=1))


async def kernel_remote_workloads(system: System, ctx: Context, ours: Recorder,
                                  floor: Recorder) -> None:
    """The in-kernel API rows again, for a collaborative kernel on another host: a network
    namespace with its own address and sshd, the kernel launched there over SSH by
    gateway-provisioners' ``DistributedProvisioner`` wrapped by ``kernel-collab`` (as
    ``tests/integration/test_remote_kernel.py``); the Jupyter server, the sidecar and the
    peers stay on this machine. The kernel is checked to run on the other host."""
    if system.shared_server:
        raise KernelBenchError("the kernel workloads run kernel_collab only")
    base = ctx.scratch / "kernel-remote"
    t = time.perf_counter()
    async with other_host(base / "host") as host:
        try:
            specs = write_ssh_kernelspec(base / "jupyter_path", host)
        except pytest.fail.Exception as exc:
            raise KernelBenchError(f"kernel-remote: {exc}") from None
        same_kernel_collab(specs / "kernels" / KERNEL_NAME / "kernel.json")
        logs = base / "kernel-logs"
        logs.mkdir()
        async with collab_server(base, remote_server_env(host, specs, logs)) as server:
            setup = KernelSetup(server, ctx)
            ends = server.root / "ends"
            ends.mkdir()
            nb = api_notebook(server.root / "api-remote.ipynb", ctx.plan.running_samples,
                              ends / "api-append", KERNEL_NAME)
            here = os.readlink("/proc/self/ns/net")

            def check(pid: int, netns: str) -> None:
                if netns == here or pid not in host.pids():
                    raise KernelBenchError(f"kernel-remote: the kernel (pid {pid}, {netns}) "
                                           f"does not run on the other host {host.address}")

            try:
                await api_rows(setup, nb, ends / "api-append", REMOTE_PREFIX, ours, floor,
                               KERNEL_NAME, check)
            except KernelBenchError as exc:
                kernel_logs = "\n".join(f"  {p.name}:\n{p.read_text(errors='replace')[-3000:]}"
                                        for p in sorted(logs.glob("*.log")))
                raise KernelBenchError(f"{exc}\n  the remote kernel's log:\n{kernel_logs}"
                                       ) from exc
        ours.info["kernel_remote"] = {
            "host": host.address, "netns": host.netns, "kernelspec": KERNEL_NAME,
            "seconds": round(time.perf_counter() - t, 1),
        }


def _lines_id(flush: bool, repeat: int) -> str:
    return f"lines-{'flushed' if flush else 'buffered'}-{repeat}"
