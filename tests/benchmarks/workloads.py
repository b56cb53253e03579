"""The workloads: the same notebooks, peers and warm-up for every system.

Each workload takes a :class:`~.systems.System` and records samples (seconds, or edits/s, or
a size ratio) under measure keys that :mod:`.report` describes. A workload that cannot
complete raises; nothing is recorded half-way as if it were a result.
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import shutil
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio

from .bursts import burst_rate, paced_keepup
from .peers import Peer, PeerError, join
from .systems import (
    Deployment,
    Sidecar,
    SidecarDeployment,
    System,
    file_size,
    floor,
    history_size,
    proc_status_kib,
)

# name → (cells, bytes of PNG output per code cell)
NOTEBOOKS: dict[str, tuple[int, int]] = {
    "10": (10, 0),
    "100": (100, 0),
    "1000": (1000, 0),
    "10MB": (100, 200_000),
}
WAIT = 60.0
"""Longest wait for any one expected event (a sync, an edit reaching a peer, a save)."""


@dataclass(frozen=True)
class Plan:
    """How many samples each workload takes."""

    mode: str
    cold_n: int
    cold_n_large: int
    warm_n: int
    from_start_n: int
    from_start_sizes: tuple[str, ...]
    """Notebooks opened from process start (each one a server's start for theirs)."""
    room_n: int
    """Room requests timed on a running server (1,000 cells; ours starts kernel + sidecar)."""
    latency_edits: int
    latency_warmup: int
    latency_receivers: tuple[int, ...]
    burst_edits: int
    burst_receivers: int
    burst_repeats: int
    durable_cap: float
    save_n: int
    outside_n: int
    crowd_receivers: int
    """Peers receiving each edit in the crowd phase of the latency workload."""
    crowd_edits: int
    memory_n: int
    lines_flushed: int
    """Lines of the flushed print loop (ipykernel manages ~4,000 flushed prints/s alone)."""
    lines_buffered: int
    lines_repeats: int
    stamp_samples: int
    stamp_repeats: int
    queue_cells: int
    queue_repeats: int
    running_samples: int
    proxy_edits: int
    """Edits per path (via the server's proxy, straight to the sidecar) with 10 peers."""
    proxy_warmup: int
    ticker_seconds: float
    """How long the cell of the save-under-output workload prints (a line every 50 ms)."""
    ticker_runs: int
    rooms_n: int
    """Notebooks open at once in the many-rooms workload (full run only)."""
    rooms_idle: float
    """Seconds those notebooks stay idle while CPU is counted."""
    outside_gap: tuple[float, float]
    """Seconds (drawn between the two) between outside changes: past both systems' file poll
    (1 s) and autosave (~1 s), and not phase-locked to them."""


QUICK = Plan(  # every default workload in under 3 min (README)
    mode="quick", cold_n=3, cold_n_large=2, warm_n=5, from_start_n=1,
    from_start_sizes=("10", "1000"), room_n=3,
    latency_edits=100, latency_warmup=10, latency_receivers=(1, 10), burst_edits=5_000,
    burst_receivers=3, burst_repeats=1, durable_cap=3.0, save_n=3, outside_n=3,
    crowd_receivers=50, crowd_edits=100, memory_n=1, lines_flushed=5_000,
    lines_buffered=50_000, lines_repeats=1, stamp_samples=100, stamp_repeats=1, queue_cells=300,
    queue_repeats=3, running_samples=60, proxy_edits=100, proxy_warmup=10, ticker_seconds=4.0,
    ticker_runs=1, rooms_n=3, rooms_idle=5.0, outside_gap=(1.3, 2.0),
)
FULL = Plan(  # N >= 20 for every open, save and outside row
    mode="full", cold_n=20, cold_n_large=20, warm_n=20, from_start_n=20,
    from_start_sizes=("10", "100", "1000", "10MB"), room_n=20,
    latency_edits=1_000, latency_warmup=50, latency_receivers=(1, 10), burst_edits=10_000,
    burst_receivers=10, burst_repeats=2, durable_cap=180.0, save_n=20, outside_n=20,
    crowd_receivers=50, crowd_edits=300, memory_n=3, lines_flushed=100_000,
    lines_buffered=100_000, lines_repeats=2, stamp_samples=200, stamp_repeats=2,
    queue_cells=1_000, queue_repeats=2, running_samples=300, proxy_edits=1_000, proxy_warmup=25,
    ticker_seconds=8.0, ticker_runs=2, rooms_n=20, rooms_idle=60.0, outside_gap=(2.0, 3.0),
)


@dataclass
class Recorder:
    """Samples and notes of one system."""

    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    notes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    info: dict[str, Any] = field(default_factory=dict)
    given: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Figures a system reports itself (median, p99, n), not samples taken here."""
    lower_bounds: set[str] = field(default_factory=set)
    """Measures with a sample taken at a cap (the true figure is larger): shown as ``≥``."""

    def add(self, key: str, value: float) -> None:
        """Record one sample."""
        self.samples[key].append(value)

    def lower_bound(self, key: str, why: str | None = None) -> None:
        """Mark a measure as a lower bound (``why``: a note saying so)."""
        self.lower_bounds.add(key)
        if why is not None:
            self.note(key, f"a lower bound: {why}")

    def note(self, key: str, text: str) -> None:
        """Attach a remark to a measure (shown under the table)."""
        if text not in self.notes[key]:
            self.notes[key].append(text)


@dataclass
class Context:
    """Where a run keeps its files, and its plan."""

    scratch: Path
    plan: Plan
    notebooks: dict[str, Path] = field(default_factory=dict)
    digests: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    burst_pace: float | None = None
    """Edits/s of the paced burst (set with ours' floor, used for every system)."""
    _roots: int = 0

    def jitter(self, low: float, high: float) -> float:
        """A pause drawn uniformly from [low, high] seconds."""
        return self.rng.uniform(low, high)

    def fresh_root(self, system: System, notebook: str) -> tuple[Path, Path]:
        """A new empty root directory holding a copy of a notebook; return (root, copy)."""
        self._roots += 1
        root = self.scratch / "roots" / f"{system.name}-{self._roots:03d}"
        root.mkdir(parents=True)
        copy = root / f"nb{notebook}.ipynb"
        shutil.copyfile(self.notebooks[notebook], copy)
        return root, copy


# -- notebooks -------------------------------------------------------------------------------


def make_notebook(cells: int, png_bytes: int, seed: int = 7) -> dict[str, Any]:
    """A valid nbformat 4.5 notebook: alternating code and markdown cells with small outputs,
    or a PNG of ``png_bytes`` (random, so incompressible) on each code cell."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(cells):
        if i % 2:
            out.append({
                "cell_type": "markdown", "id": f"cell-{i}", "metadata": {},
                "source": f"## Section {i}\n\nSome prose about step {i}, *emphasised*.",
            })
            continue
        outputs: list[dict[str, Any]] = [
            {"name": "stdout", "output_type": "stream", "text": f"step {i} done\n"}
        ]
        if png_bytes:
            png = base64.b64encode(rng.randbytes(png_bytes * 3 // 4)).decode()
            outputs.append({
                "data": {"image/png": png, "text/plain": [f"<Figure {i}>"]},
                "metadata": {}, "output_type": "display_data",
            })
        out.append({
            "cell_type": "code", "execution_count": i + 1, "id": f"cell-{i}", "metadata": {},
            "outputs": outputs,
            "source": f"x{i} = {i} * 2\nprint('step {i} done')\n# cell {i}",
        })
    return {
        "cells": out,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def write_notebooks(ctx: Context) -> None:
    """Write the benchmark notebooks once per run."""
    folder = ctx.scratch / "notebooks"
    folder.mkdir(parents=True, exist_ok=True)
    for name, (cells, png) in NOTEBOOKS.items():
        path = folder / f"nb{name}.ipynb"
        nb = make_notebook(cells, png)
        path.write_text(json.dumps(nb, indent=1) + "\n")
        ctx.notebooks[name] = path
        ctx.digests[name] = content_digest(nb)


# -- helpers ---------------------------------------------------------------------------------


@asynccontextmanager
async def peers(dep: Deployment, notebook: Path, count: int) -> AsyncIterator[list[Peer]]:
    """``count`` synced peers of a notebook, each opening the room as a client does."""
    async with AsyncExitStack() as stack:
        out = []
        for i in range(count):
            url = await dep.room_url(notebook)
            out.append(await stack.enter_async_context(join(url, f"peer{i}")))
        yield out


def _text(x: Any) -> Any:
    return "".join(x) if isinstance(x, list) else x


def content_digest(nb: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What must survive a load: each cell's id, type, source and output payloads."""
    out = []
    for cell in nb["cells"]:
        outputs = tuple(
            (o.get("output_type"), _text(o.get("text")),
             tuple((k, _text(v)) for k, v in sorted(o.get("data", {}).items())))
            for o in cell.get("outputs", [])
        )
        out.append((cell.get("id"), cell["cell_type"], _text(cell["source"]), outputs))
    return out


def check_content(peer: Peer, ctx: Context, size: str) -> None:
    """Fail unless the synced document holds the whole notebook (a complete load)."""
    expected = ctx.digests[size]
    got = content_digest(peer.notebook.get())
    if got != expected:
        bad = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                   min(len(got), len(expected)))
        raise PeerError(f"{peer.name}: synced document differs from the {size} notebook "
                        f"({len(got)} vs {len(expected)} cells, first difference at cell {bad})")


def check_cells(peer: Peer, notebook: str) -> None:
    """Fail unless the synced document has the notebook's cell count (cheap check)."""
    expected = NOTEBOOKS[notebook][0]
    got = len(peer.notebook.ycells)
    if got != expected:
        raise PeerError(f"{peer.name}: synced {got} cells, the notebook has {expected}")


async def timed_join(dep: Deployment, notebook: Path, size: str, t0: float | None = None) -> float:
    """Open the room and join one peer; seconds from ``t0`` (default: now) to synced."""
    start = time.perf_counter() if t0 is None else t0
    url = await dep.room_url(notebook)
    async with join(url, "opener") as peer:
        check_cells(peer, size)
        return peer.synced_at - start


async def poll(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Call ``check`` every 5 ms until it is true; return when it was first seen true."""
    with anyio.move_on_after(timeout):
        while True:
            if await check():
                return time.perf_counter()
            await anyio.sleep(0.005)
    raise TimeoutError(f"{what}: not seen within {timeout:g} s")


def write_atomically(path: Path, text: str) -> Path:
    """Write a temporary file beside ``path``; the caller renames it into place."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(3)}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return tmp


# -- 1. open ---------------------------------------------------------------------------------


async def warm_join(dep: Deployment, notebook: Path, size: str) -> tuple[float, float]:
    """A peer joining an open room: seconds from its WebSocket connect to synced, and from the
    room request a client makes first (theirs' PUT session; ours has none: the same)."""
    t0 = time.perf_counter()
    url = await dep.room_url(notebook)
    t1 = time.perf_counter()
    async with join(url, "warm") as peer:
        check_cells(peer, size)
        return peer.synced_at - t1, peer.synced_at - t0


async def open_time(system: System, ctx: Context, rec: Recorder) -> None:
    """Cold and warm open of each notebook size, from process start, and (1,000 cells) on a
    running Jupyter server from the room request a browser makes."""
    plan = ctx.plan
    if system.shared_server:
        with_put: dict[str, list[float]] = defaultdict(list)
        root, warm_nb = ctx.fresh_root(system, "10")
        async with system.launch(root, warm_nb) as dep:  # its first room: the warm-up
            rec.add("open.start.10", await timed_join(dep, warm_nb, "10", dep.spawned_at))
            for size in NOTEBOOKS:
                n = plan.cold_n_large if size == "10MB" else plan.cold_n
                copies = []
                for i in range(n):
                    copy = root / f"cold{size}-{i}.ipynb"
                    shutil.copyfile(ctx.notebooks[size], copy)
                    copies.append(copy)
                for i, copy in enumerate(copies):
                    t0 = time.perf_counter()
                    url = await dep.room_url(copy)
                    async with join(url, "first") as first:
                        check_cells(first, size)
                        rec.add(f"open.cold.{size}", first.synced_at - t0)
                        if size == "1000":  # on a running server, from the room request
                            rec.add("open.room.1000", first.synced_at - t0)
                        if i == 0:
                            check_content(first, ctx, size)
                            for _ in range(plan.warm_n):
                                connect, request = await warm_join(dep, copy, size)
                                rec.add(f"open.warm.{size}", connect)
                                with_put[size].append(request)
                                if size == "1000":
                                    rec.add("open.room_warm.1000", request)
        for size, times in with_put.items():
            rec.info.setdefault("open_warm_with_request", {})[size] = times
            rec.note(f"open.warm.{size}", "with the PUT session request before it (as "
                     f"JupyterLab opens): median {statistics.median(times) * 1e3:.1f} ms")
        for size in plan.from_start_sizes:  # the warm-up above was one from start, 10 cells
            for _ in range(plan.from_start_n - 1 if size == "10" else plan.from_start_n):
                root, nb = ctx.fresh_root(system, size)
                async with system.launch(root, nb) as dep:
                    rec.add(f"open.start.{size}", await timed_join(dep, nb, size, dep.spawned_at))
        return

    assert isinstance(system, Sidecar)
    root, nb = ctx.fresh_root(system, "10")
    async with system.launch(root, nb) as dep:  # warm-up (the fork server's start): not timed
        await timed_join(dep, nb, "10")
    for size in NOTEBOOKS:
        for _ in range(plan.from_start_n if size in plan.from_start_sizes else 0):
            root, nb = ctx.fresh_root(system, size)
            async with system.launch(root, nb, fresh=True) as dep:
                rec.add(f"open.start.{size}", await timed_join(dep, nb, size, dep.spawned_at))
        n = plan.cold_n_large if size == "10MB" else plan.cold_n
        for i in range(n):
            root, nb = ctx.fresh_root(system, size)
            async with system.launch(root, nb) as dep:
                url = await dep.room_url(nb)
                async with join(url, "first") as first:
                    check_cells(first, size)
                    rec.add(f"open.cold.{size}", first.synced_at - dep.spawned_at)
                    if i == 0:
                        check_content(first, ctx, size)
                        for _ in range(plan.warm_n):
                            connect, _ = await warm_join(dep, nb, size)
                            rec.add(f"open.warm.{size}", connect)
    await open_rooms(ctx, rec)


async def open_rooms(ctx: Context, rec: Recorder) -> None:
    """Ours on a running ``jupyter server`` with kernel_collab's extension, as a browser opens
    a notebook: ``PUT /api/kernel-collab/rooms/{path}`` (starts the sidecar and, beside the
    served document, the collaborative kernel) → a peer on the server's
    ``/api/kernel-collab/sync/{document_id}`` synced;
    then, the room open, the same request and a second peer (warm). The server's first room
    is a warm-up. Rooms stay open (as theirs' do) and their sessions are deleted at the end;
    each next room is opened once the last one's kernel is idle (booting, it took a core from
    the next open: theirs starts no kernel)."""
    from .kernel import collab_server, kernel_idle, wait_for  # kernel.py imports this module
    from .proxy import open_room

    async with collab_server(ctx.scratch / "open-rooms") as server:
        token = quote(server.token)
        for i in range(-1, ctx.plan.room_n):
            size = "10" if i < 0 else "1000"
            name = f"room{size}-{i + 1}.ipynb"
            shutil.copyfile(ctx.notebooks[size], server.root / name)
            t0 = time.perf_counter()
            model = await open_room(server, name)  # answered before the kernel is up
            url = f"{server.sync_url(model['document_id'])}?token={token}"
            async with join(url, "first") as first:
                check_cells(first, size)
                if i >= 0:
                    rec.add("open.room.1000", first.synced_at - t0)
                if i == 0:
                    check_content(first, ctx, size)
                    for _ in range(ctx.plan.warm_n):
                        t0 = time.perf_counter()
                        again = await open_room(server, name)
                        url = f"{server.sync_url(again['document_id'])}?token={token}"
                        async with join(url, "warm") as peer:
                            check_cells(peer, size)
                            rec.add("open.room_warm.1000", peer.synced_at - t0)
                # Its kernel started: the next open is timed once it is up (theirs starts no
                # kernel, and one person opens one notebook, not one while others boot).
                await wait_for(first, kernel_idle(first), f"{name}: kernel idle", 60)

        async def close(session: str) -> None:
            async with server.client() as http:
                response = await http.delete(f"/api/sessions/{session}")
            if response.status_code != 204:
                raise PeerError(f"DELETE session {session}: {response.status_code} "
                                f"{response.text}")

        async with server.client() as http:
            response = await http.get("/api/sessions")
        if response.status_code != 200:
            raise PeerError(f"GET /api/sessions: {response.status_code} {response.text}")
        async with anyio.create_task_group() as tg:
            for session in response.json():
                tg.start_soon(close, session["id"])


# -- 2. edit → peer latency ------------------------------------------------------------------


async def _latency_phase(
    dep: Deployment, nb: Path, receivers: int, edits: int, warmup: int, key: str, rec: Recorder
) -> None:
    """``receivers + 1`` peers; the first types ``edits`` characters into cell 0, one at a
    time, each once every other peer and its own echo have it."""
    async with peers(dep, nb, receivers + 1) as group:
        writer, others = group[0], group[1:]
        for i in range(warmup + edits):
            msg, clock = writer.edit(0, "x")
            t = await writer.send(msg)
            seen = [await r.wait_clock(writer.client_id, clock, WAIT) for r in others]
            ack = await writer.wait_clock(writer.client_id, clock, WAIT)
            if i >= warmup:
                for s in seen:
                    rec.add(f"latency.{key}.each", s - t)
                rec.add(f"latency.{key}.slowest", max(seen) - t)
                rec.add(f"latency.{key}.ack", ack - t)
            await anyio.sleep(0.005)


async def edit_latency(system: System, ctx: Context, rec: Recorder) -> None:
    """One writer types into cell 0; time until each other peer (and its own echo) has it.
    Then, for ours, the sidecar's own commit timings (``stats`` request) over those edits;
    then the same with a crowd of peers."""
    plan = ctx.plan
    root, nb = ctx.fresh_root(system, "10")
    async with system.launch(root, nb) as dep:
        for k in plan.latency_receivers:
            await _latency_phase(dep, nb, k, plan.latency_edits, plan.latency_warmup, str(k),
                                 rec)
        if isinstance(dep, SidecarDeployment):
            async with peers(dep, nb, 1) as (asker,):
                stats = await asker.request({"type": "stats"})
            rec.info["latency_stats"] = stats
            commits = int(stats.get("commits") or 0)
            p50, p99 = stats.get("commit_p50_s"), stats.get("commit_p99_s")
            if not commits or p50 is None or p99 is None:
                raise PeerError(f"{system.name}: stats reply without commit timings: {stats}")
            rec.given["commit"] = {"n": commits, "median": p50, "p99": p99,
                                   "p99_is_max": commits < 100}
            k = max(plan.latency_receivers)
            each = sorted(rec.samples[f"latency.{k}.each"])
            lat_p50 = statistics.median(each)
            lat_p99 = each[max(0, -(-99 * len(each) // 100) - 1)]
            rec.given["commit.share"] = {"n": commits, "median": p50 / lat_p50,
                                         "p99": p99 / lat_p99, "p99_is_max": False}
            lags = int(stats.get("loop_lag_samples") or 0)
            if lags:
                rec.given["loop_lag"] = {"n": lags, "median": stats.get("loop_lag_p50_s"),
                                         "p99": stats.get("loop_lag_p99_s"),
                                         "p99_is_max": lags < 100}
        await _latency_phase(dep, nb, plan.crowd_receivers, plan.crowd_edits,
                             max(5, plan.latency_warmup // 2), "crowd", rec)
    if isinstance(system, Sidecar):  # the floor: the same peers, a relay with no document
        async with floor(root, nb) as bare:
            await _latency_phase(bare, nb, 10, plan.latency_edits, plan.latency_warmup,
                                 "floor10", rec)  # fmt: skip


# -- 3 + 4. burst, durability, store size ----------------------------------------------------


async def wait_durable(
    dep: Deployment, nb: Path, client_id: int, clock: int, cap: float, rec: Recorder
) -> tuple[float, int, bool]:
    """When a store read first found ``clock`` of ``client_id`` (the read's start time), how
    many reads it took, and whether it gave up at ``cap`` s (then the time is the cap's). Gives
    up after ``cap`` s, or 15 s without the store growing (then the time is infinite)."""
    start = time.perf_counter()
    last_growth, last_state = start, (-1, -1)
    reads = 0
    while True:
        t = time.perf_counter()
        stored = await anyio.to_thread.run_sync(dep.stored_clock, nb, client_id)
        reads += 1
        if stored >= clock:
            return t, reads, False
        state = (stored, file_size(dep.store_files()))
        if state != last_state:
            last_growth, last_state = t, state
        if t - last_growth > 15.0:
            rec.note("burst.durable", f"store stopped growing at clock {stored} of {clock}: "
                     "updates lost")
            return float("inf"), reads, False
        if t - start > cap:
            rec.note("burst.durable", f"not all in the store after the {cap:g} s cap "
                     f"(clock {stored} of {clock}); the cap is recorded: a lower bound")
            return t, reads, True
        await anyio.sleep(0.1)


STORE_SAMPLE_PERIOD = 0.005
"""Seconds between two readings of the store's size during a burst."""


class StoreSampler(threading.Thread):
    """Samples a store's size on disk every ``period`` seconds, in a thread of its own so the
    event loop (the peers) is not slowed and the sampling is not delayed by it."""

    def __init__(self, files: list[Path], period: float = STORE_SAMPLE_PERIOD) -> None:
        super().__init__(daemon=True)
        self.files = files
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self.error: Exception | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                self.samples.append((time.perf_counter(), file_size(self.files)))
                self._halt.wait(self.period)
        except Exception as exc:  # noqa: BLE001 - stop() raises it, in the workload
            self.error = exc

    def stop(self) -> list[tuple[float, int]]:
        """Stop sampling (and take one last sample); return ``(perf_counter, bytes)``."""
        self._halt.set()
        self.join()
        if self.error is not None:
            raise RuntimeError(f"store size sampling failed: {self.error!r}") from self.error
        self.samples.append((time.perf_counter(), file_size(self.files)))
        return self.samples


async def burst(system: System, ctx: Context, rec: Recorder) -> None:
    """A burst of single-character edits: throughput to every peer, durability, store size
    (sampled all along, until every edit is stored)."""
    plan = ctx.plan
    for repeat in range(plan.burst_repeats):
        root, nb = ctx.fresh_root(system, "100")
        nb_bytes = nb.stat().st_size
        async with system.launch(root, nb) as dep, peers(dep, nb, plan.burst_receivers + 1) as g:
            writer, receivers = g[0], g[1:]
            wid = writer.client_id
            for _ in range(20):  # warm-up
                msg, clock = writer.edit(0, "w")
                await writer.send(msg)
            for r in g:
                await r.wait_clock(wid, clock, WAIT)
            sampler = StoreSampler(dep.store_files())
            sampler.start()
            t0 = time.perf_counter()
            for _ in range(plan.burst_edits):
                msg, clock = writer.edit(0, "x")
                await writer.ws.send(msg)
            t_sent = time.perf_counter()
            cap, wait = plan.durable_cap, max(WAIT, plan.durable_cap)
            # The echo first, then at once the store: how far the store is behind the echo.
            t_ack = await writer.wait_clock(wid, clock, wait)
            durable, reads, capped = await wait_durable(dep, nb, wid, clock, cap, rec)
            t_all = max([await r.wait_clock(wid, clock, wait) for r in receivers])
            series = sampler.stop()
            if reads == 1:
                # The store already held every edit when first read after the echo: it was
                # not behind (by design for ours: stored before relayed).
                lag = 0.0
                rec.note("burst.durable_lag", "0: the first store read after the last echo "
                         f"(started {(durable - t_ack) * 1e3:.0f} ms after it) already held "
                         "every edit")
            else:
                lag = durable - t_ack  # start of the first read that held them all
            rec.add("burst.throughput", plan.burst_edits / (t_all - t0))
            rec.add("burst.send", plan.burst_edits / (t_sent - t0))
            rec.add("burst.keepup", (t_sent - t0) / (t_all - t0))
            rec.add("burst.ack", t_ack - t0)
            rec.add("burst.durable", durable - t0)
            rec.add("burst.durable_lag", lag)
            if capped:  # wait_durable noted it
                rec.lower_bound("burst.durable")
                rec.lower_bound("burst.durable_lag", f"the store did not hold every edit at "
                                f"the {cap:g} s cap; the cap is recorded")
            if repeat == 0:
                rec.info["store_series"] = {
                    "notebook_bytes": nb_bytes, "edits": plan.burst_edits,
                    "t": [round(t - t0, 4) for t, _ in series], "bytes": [b for _, b in series],
                    "t_sent": t_sent - t0, "t_ack": t_ack - t0,
                    "t_durable": None if durable == float("inf") else durable - t0,
                }
            store_at_durable = file_size(dep.store_files())
            await anyio.sleep(3.0)  # let autosave and any compaction run
            store = file_size(dep.store_files())
            history = await anyio.to_thread.run_sync(history_size, dep.store_files())
            stored = await anyio.to_thread.run_sync(dep.stored_clock, nb, wid)
            if stored < clock:  # still writing: the sizes below will grow
                for key in ("store.ratio", "store.peak"):
                    rec.lower_bound(key, "the store still lacked edits when its size was read, "
                                    f"3 s after the wait for it ended (clock {stored} of "
                                    f"{clock})")
            rec.add("store.ratio", (store - history) / nb_bytes)
            rec.add("store.history", history / nb_bytes)
            # The largest size seen: sampled from the first edit until all were stored (or the
            # cap), and the settled reading.
            rec.add("store.peak", max(store, *(b for _, b in series)) / nb_bytes)
            rec.info.setdefault("store", []).append({
                "notebook_bytes": nb_bytes, "store_bytes_at_durable": store_at_durable,
                "store_bytes_settled": store, "history_bytes": history,
                "files": {p.name: p.stat().st_size for p in dep.store_files() if p.exists()},
                "notebook_bytes_after": nb.stat().st_size,
                "store_reads_until_durable": reads,
            })


    await _capacity(system, ctx, rec)
    await _appends(system, ctx, rec)


APPENDED_CELLS = 2_000
"""Cells an agent appends one transaction each (the appends row)."""


async def _appends(system: System, ctx: Context, rec: Recorder) -> None:
    """An agent building a notebook cell by cell: ``APPENDED_CELLS`` cells appended to the
    100-cell notebook, each its own transaction and message, sent back to back; cells/s until
    another peer has them all. Whatever a server does per inserted cell that grows with the
    notebook shows here (ours checked every cell's id for each: quadratic)."""
    root, nb = ctx.fresh_root(system, "100")
    async with system.launch(root, nb) as dep, peers(dep, nb, 2) as (writer, watcher):
        before = len(watcher.notebook.ycells)
        done = watcher.expect(lambda: len(watcher.notebook.ycells) >= before + APPENDED_CELLS)
        ynb = writer.notebook

        def append(i: int) -> Callable[[], None]:
            return lambda: ynb.ycells.append(ynb.create_ycell({
                "id": secrets.token_hex(8), "cell_type": "code", "source": f"step_{i} = {i}",
                "metadata": {}, "outputs": [], "execution_count": None}))

        # Made first: the row times the server, not the peer making them.
        messages = [writer.change(append(i)) for i in range(APPENDED_CELLS)]
        t0 = time.perf_counter()
        for message in messages:
            await writer.ws.send(message)
        rec.add("appends.rate", APPENDED_CELLS / (await watcher.wait(done, WAIT) - t0))


CAPACITY_WRITERS = 4
"""Writers sending at once in the capacity row."""

PACE_SHARE = 0.9
"""The paced burst's rate, as a share of what the bare relay delivered to the same peers: a
rate the benchmark's own peers can take, so that whether the server keeps up is what is
measured (sent back to back, the peers in the benchmark's one process are the bottleneck)."""


async def _capacity(system: System, ctx: Context, rec: Recorder) -> None:
    """Edits/s until every peer has every edit: ``CAPACITY_WRITERS`` writers at once (and, for
    ours, one and four writers through the bare relay: what the same peers take at most)."""
    plan = ctx.plan
    root, nb = ctx.fresh_root(system, "100")
    count = plan.burst_receivers + CAPACITY_WRITERS
    async with system.launch(root, nb) as dep, peers(dep, nb, count) as g:
        rate, _ = await burst_rate(g[:CAPACITY_WRITERS], g, plan.burst_edits, WAIT)
        rec.add("burst4.throughput", rate)
    if isinstance(system, Sidecar):
        async with floor(root, nb) as bare:
            async with peers(bare, nb, plan.burst_receivers + 1) as g:
                rate, sent = await burst_rate(g[:1], g, plan.burst_edits, WAIT)
                rec.add("burst.floor.throughput", rate)
                rec.add("burst.floor.keepup", rate / sent)
                ctx.burst_pace = PACE_SHARE * rate
                keepup, _ = await paced_keepup(g[0], g, plan.burst_edits, ctx.burst_pace, WAIT)
                rec.add("burst.floor.paced", keepup)
            async with peers(bare, nb, count) as g:
                rate, _ = await burst_rate(g[:CAPACITY_WRITERS], g, plan.burst_edits, WAIT)
                rec.add("burst4.floor.throughput", rate)
    if ctx.burst_pace is not None:  # measured with ours, which runs first
        root, nb = ctx.fresh_root(system, "100")
        async with system.launch(root, nb) as dep, peers(dep, nb, plan.burst_receivers + 1) as g:
            keepup, sent = await paced_keepup(g[0], g, plan.burst_edits, ctx.burst_pace, WAIT)
            rec.add("burst.paced", keepup)
            rec.note("burst.paced", f"paced at {ctx.burst_pace:,.0f} edits/s ({PACE_SHARE:.0%} "
                     f"of what the bare relay delivered to the same peers); sent at {sent:,.0f}")

# -- 5. save ---------------------------------------------------------------------------------


async def save_latency(system: System, ctx: Context, rec: Recorder) -> None:
    """Time from an edit leaving a peer to the .ipynb on disk containing it."""
    root, nb = ctx.fresh_root(system, "10")
    async with system.launch(root, nb) as dep, peers(dep, nb, 1) as (writer,):
        for i in range(1 + ctx.plan.save_n):  # the first is a warm-up
            marker = f"saved{i}z{secrets.token_hex(4)}".encode()
            msg, _ = writer.edit(1, marker.decode() + " ", at=0)

            async def on_disk(m: bytes = marker) -> bool:
                return m in await anyio.Path(nb).read_bytes()

            t0 = await writer.send(msg)
            t = await poll(on_disk, WAIT, f"{system.name}: save of an edit")
            if i:
                rec.add("save", t - t0)
            await anyio.sleep(ctx.jitter(0.3, 1.0))


# -- 6. outside change -----------------------------------------------------------------------


def _source_contains(peer: Peer, cell: int, text: str) -> Callable[[], bool]:
    return lambda: text in str(peer.cell_source(cell))


async def outside_change(system: System, ctx: Context, rec: Recorder) -> None:
    """Replace the .ipynb atomically with a changed cell; time until a peer sees it."""
    root, nb = ctx.fresh_root(system, "10")
    async with system.launch(root, nb) as dep, peers(dep, nb, 1) as (peer,):
        await anyio.sleep(2.0)  # let the system settle after opening (watchers, first save)
        for i in range(1 + ctx.plan.outside_n):  # the first is a warm-up
            marker = f"outside{i}z{secrets.token_hex(4)}"
            data = json.loads(await anyio.Path(nb).read_text())
            data["cells"][2]["source"] = f"# changed {marker}\nprint('outside')"
            tmp = await anyio.to_thread.run_sync(
                write_atomically, nb, json.dumps(data, indent=1) + "\n"
            )
            waiter = peer.expect(_source_contains(peer, 2, marker))
            t0 = time.perf_counter()
            os.replace(tmp, nb)
            t = await peer.wait(waiter, WAIT)
            if i:
                rec.add("outside", t - t0)
            # Past any poll period and autosave; random so samples are not phase-locked to a
            # system's polling timer.
            await anyio.sleep(ctx.jitter(*ctx.plan.outside_gap))


# -- 7. memory -------------------------------------------------------------------------------

MEMORY_SETTLE = 1.0
"""Least seconds between a peer being synced and the RSS reading (loading, saving, the first
snapshot finish); then the reading waits for RSS to stop moving, up to ``MEMORY_SETTLE_MAX``."""
MEMORY_SETTLE_MAX = 5.0
MEMORY_AFTER_CLOSE = 2.0
"""Seconds between the last peer leaving and the 'closed' RSS reading."""
THEIR_CLEANUP_DELAY = 1.0
"""jupyter-collaboration keeps a room 60 s after its last peer leaves (``YDocExtension.
document_cleanup_delay``); the memory workload sets 1 s so 'closed' is seen within the run."""


async def _rss(dep: Deployment) -> int:
    """VmRSS of the process holding the documents, in bytes, once settled: after
    ``MEMORY_SETTLE`` s, the first of readings 0.25 s apart that moved less than 1 MiB from
    the one before (or the last, at ``MEMORY_SETTLE_MAX`` s)."""
    await anyio.sleep(MEMORY_SETTLE)
    last = proc_status_kib(dep.pid) * 1024
    with anyio.move_on_after(MEMORY_SETTLE_MAX - MEMORY_SETTLE):
        while True:
            await anyio.sleep(0.25)
            rss = proc_status_kib(dep.pid) * 1024
            if abs(rss - last) < 1 << 20:
                return rss
            last = rss
    return last


async def memory(system: System, ctx: Context, rec: Recorder) -> None:
    """RSS growth of the process holding the document (ours: the sidecar; theirs: the
    server) with the ~10 MB notebook open and a peer synced, and after it is closed, over the
    same process (theirs) or a sidecar of the 10-cell notebook (ours: one process per
    notebook), each with one synced peer. Both read ``VmRSS`` from ``/proc/PID/status``."""
    nb_bytes = ctx.notebooks["10MB"].stat().st_size
    not_fallen = 0
    for _ in range(ctx.plan.memory_n):
        entry: dict[str, Any] = {"notebook_bytes": nb_bytes}
        if system.shared_server:
            root, small = ctx.fresh_root(system, "10")
            big = root / "nb10MB.ipynb"
            shutil.copyfile(ctx.notebooks["10MB"], big)
            args = [f"--YDocExtension.document_cleanup_delay={THEIR_CLEANUP_DELAY:g}"]
            async with system.launch(root, small, args) as dep, peers(dep, small, 1):
                base = await _rss(dep)
                async with peers(dep, big, 1) as (peer,):
                    check_cells(peer, "10MB")
                    opened = await _rss(dep)
                await anyio.sleep(MEMORY_AFTER_CLOSE - MEMORY_SETTLE)
                closed = await _rss(dep)
                entry["peak_bytes"] = proc_status_kib(dep.pid, "VmHWM") * 1024
                deleted = "Deleting Y document from memory" in dep.log.read_text(errors="replace")
                rec.note("memory.closed", "its room was deleted from memory before the reading "
                         "(server log)" if deleted else "its room was NOT yet deleted from "
                         "memory at the reading (server log)")
        else:
            root, small = ctx.fresh_root(system, "10")
            async with system.launch(root, small) as dep, peers(dep, small, 1):
                base = await _rss(dep)
            root, big = ctx.fresh_root(system, "10MB")
            async with system.launch(root, big) as dep:
                async with peers(dep, big, 1) as (peer,):
                    check_cells(peer, "10MB")
                    opened = await _rss(dep)
                await anyio.sleep(MEMORY_AFTER_CLOSE - MEMORY_SETTLE)
                closed = await _rss(dep)
                entry["peak_bytes"] = proc_status_kib(dep.pid, "VmHWM") * 1024
            rec.note("memory.closed", "the sidecar keeps the document while it runs (its kernel "
                     "may still be running); it exits, returning all of it, once the kernel is "
                     "shut down and the last peer has left")
        entry.update(base_bytes=base, open_bytes=opened, closed_bytes=closed)
        rec.info.setdefault("memory", []).append(entry)
        rec.add("memory.open", (opened - base) / nb_bytes)
        rec.add("memory.closed", (closed - base) / nb_bytes)
        not_fallen += closed >= opened
    if not_fallen:
        rec.note("memory.closed", f"RSS did not fall after closing in {not_fallen} of "
                 f"{ctx.plan.memory_n} runs (memory freed inside the process can stay with its "
                 "allocator)")


WORKLOADS: dict[str, Callable[[System, Context, Recorder], Awaitable[None]]] = {
    "open": open_time,
    "latency": edit_latency,
    "burst": burst,
    "save": save_latency,
    "outside": outside_change,
    "memory": memory,
}
