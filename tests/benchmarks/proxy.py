"""Through the Jupyter server: edit → peer latency via kernel_collab's server proxy, and how
stale the .ipynb gets while a cell keeps printing.

Ours runs as a browser uses it: ``jupyter server`` from this venv with kernel_collab's server
extension (``tests.jupyter_server_process.running_server``); ``PUT
/api/kernel-collab/rooms/{path}`` opens the notebook's room (its collaborative kernel and
sidecar) and returns its ``document_id``; peers join the WebSocket
``/api/kernel-collab/sync/{document_id}?token=…``, which the server relays to the sidecar.
The same room's sidecar is also joined straight (its runtime record gives URL and token), in
alternating rounds, so the proxy's own cost is ours via proxy / ours direct.

Theirs (jupyter-collaboration) has no other path: its peers always go through its server, so
its side of "via server" is its ordinary 10-peer latency, run again here (same edits, same
rounds) so both sides are measured in the same workload.

Save under continuous output (ours only): a cell prints ``<run> <i> <time.time()>`` every
50 ms for ``Plan.ticker_seconds``; the notebook's directory is watched (watchfiles) and the
file read at each change. The age of the file at any moment is the stamp of the newest line
printed minus the stamp of the newest line on disk. Samples: that age every 50 ms while the
cell prints (until the last line is on disk), and its peak just before each save.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import watchfiles

from tests.jupyter_server_process import JupyterServer

from .kernel import KernelBenchError, collab_servers, kernel_idle, run_and_wait, wait_for
from .peers import Peer, join
from .report import summarize
from .systems import FixedRoom, Sidecar, System, http_json
from .workloads import Context, Recorder, _latency_phase

TICK_PERIOD = 0.05
"""Seconds between two lines of the printing cell."""
AGE_GRID = 0.05
"""Seconds between two readings of the file's age (computed from the recorded saves)."""
SAVE_WAIT = 60.0
"""Longest wait for the printing cell's last line to reach the file after it ended."""
ROUNDS = 2
EXTRA_RECEIVERS = (1, 50)
"""Peers of the extra through-the-server phases of the full run (not --quick: time)."""
"""Latency rounds per path; ours alternates proxy and direct between rounds."""


def ticker_code(run: str, seconds: float) -> str:
    """Prints ``run i time.time()`` every ``TICK_PERIOD`` s for ``seconds``, flushed."""
    n = round(seconds / TICK_PERIOD)
    return (
        f"import time\nfor i in range({n}):\n"
        f"    print({run!r}, i, repr(time.time()), flush=True)\n    time.sleep({TICK_PERIOD})"
    )


def write_proxy_notebook(ctx: Context, path: Path, runs: list[str]) -> None:
    """The 10-cell benchmark notebook plus a warm-up cell and one printing cell per run."""
    nb = json.loads(ctx.notebooks["10"].read_text())
    nb["cells"].append({"cell_type": "code", "execution_count": None, "id": "warm",
                        "metadata": {}, "outputs": [], "source": "x = 0"})
    for run in runs:
        nb["cells"].append({"cell_type": "code", "execution_count": None, "id": run,
                            "metadata": {}, "outputs": [],
                            "source": ticker_code(run, ctx.plan.ticker_seconds)})
    path.write_text(json.dumps(nb, indent=1) + "\n")


def stamps_on_disk(path: Path, run: str) -> list[float] | None:
    """The stamps of the complete lines of ``run`` in the file (None: unreadable now)."""
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for cell in nb.get("cells", []):
        if cell.get("id") != run:
            continue
        text = ""
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                t = out.get("text", "")
                text += "".join(t) if isinstance(t, list) else t
        stamps = []
        for line in text.split("\n")[:-1]:  # the last piece is incomplete (or empty)
            parts = line.split()
            if len(parts) == 3 and parts[0] == run:
                stamps.append(float(parts[2]))
        return stamps
    return []


# -- the server ------------------------------------------------------------------------------


def _fail(server: JupyterServer, what: str, exc: BaseException | None = None) -> KernelBenchError:
    tail = "\n".join("    " + line for line in server.log.splitlines()[-30:])
    detail = f": {exc}" if exc is not None else ""
    return KernelBenchError(f"{what}{detail}\n  server log (last lines):\n{tail}")


async def sync_url(server: JupyterServer, rel: str) -> str:
    """Open the room of ``rel`` and return its browser-facing WebSocket URL, with the token."""
    model = await open_room(server, rel)
    ws_base = server.url.replace("http://", "ws://", 1)
    return f"{ws_base}/api/kernel-collab/sync/{model['document_id']}?token={quote(server.token)}"


async def open_room(server: JupyterServer, rel: str) -> dict[str, Any]:
    """``PUT /api/kernel-collab/rooms/{path}``: the room's model (``document_id``, …). Made
    as theirs' PUT session is (``systems.http_json``: urllib in a worker thread), so neither side
    pays a client's set-up (a new ``httpx.AsyncClient`` builds an SSL context: ~20 ms)."""
    url = f"{server.url}/api/kernel-collab/rooms/{quote(rel)}"
    try:
        model: dict[str, Any] = await anyio.to_thread.run_sync(http_json, "PUT", url, server.token)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _fail(server, f"PUT /api/kernel-collab/rooms/{rel}", exc) from exc
    if not model.get("document_id"):
        raise _fail(server, f"PUT /api/kernel-collab/rooms/{rel}: no document_id in {model}")
    return model


# -- the workload ----------------------------------------------------------------------------


async def proxy_workload(system: System, ctx: Context, rec: Recorder) -> None:
    """Ours: latency via the server's proxy and straight to the sidecar, then save under
    output. Theirs: its 10-peer latency (always through its server)."""
    plan = ctx.plan
    edits = max(1, plan.proxy_edits // ROUNDS)
    if not isinstance(system, Sidecar):
        root, nb = ctx.fresh_root(system, "10")
        async with system.launch(root, nb) as dep:
            for _ in range(ROUNDS):
                await _latency_phase(dep, nb, 10, edits, plan.proxy_warmup, "proxy", rec)
            for receivers in EXTRA_RECEIVERS if plan.mode == "full" else ():
                await _latency_phase(dep, nb, receivers, edits, plan.proxy_warmup,
                                     f"proxy{receivers}", rec)  # fmt: skip
        return

    runs = [f"tick{r}" for r in range(plan.ticker_runs)]
    base = ctx.scratch / "proxy" / secrets.token_hex(3)
    async with collab_servers(
        (base / "handoff", ()), (base / "relay", ("--KernelCollabServer.sync_route=proxy",)),
    ) as (server, relay):
        nb = server.root / "nbproxy.ipynb"
        write_proxy_notebook(ctx, nb, runs)
        write_proxy_notebook(ctx, relay.root / nb.name, [])
        via = await sync_url(server, nb.name)
        try:
            record = server.sidecar(nb)
        except AssertionError as exc:
            raise _fail(server, f"no sidecar runtime record for {nb.name}") from exc
        now = time.perf_counter()
        paths = {
            "proxy": FixedRoom(name="proxy", root=server.root, spawned_at=now, url=via),
            "relay": FixedRoom(name="relay", root=relay.root, spawned_at=now,
                               url=await sync_url(relay, nb.name)),
            "direct": FixedRoom(name="direct", root=server.root, spawned_at=now,
                                url=f"{record['url']}?token={quote(record['token'])}"),
        }  # fmt: skip
        for room in paths.values():  # the kernel up before any timing
            async with join(room.url, "opener") as opener:
                await wait_for(opener, kernel_idle(opener), f"{nb.name}: kernel idle")
                await run_and_wait(opener, "warm", f"{nb.name}: warm-up cell")
        for r in range(ROUNDS):
            for key in ("proxy", "relay", "direct")[:: 1 if r % 2 == 0 else -1]:
                await _latency_phase(paths[key], nb, 10, edits, plan.proxy_warmup, key, rec)
        for receivers in EXTRA_RECEIVERS if plan.mode == "full" else ():
            await _latency_phase(paths["proxy"], nb, receivers, edits, plan.proxy_warmup,
                                 f"proxy{receivers}", rec)  # fmt: skip
        for route, row in (("proxy", "overhead"), ("relay", "relayoverhead")):
            for what in ("each", "slowest"):
                a = summarize(rec.samples[f"latency.{route}.{what}"])
                b = summarize(rec.samples[f"latency.direct.{what}"])
                rec.given[f"latency.{row}.{what}"] = {
                    "n": a["n"], "median": a["median"] / b["median"],
                    "p99": a["p99"] / b["p99"], "p99_is_max": a["p99_is_max"] or b["p99_is_max"],
                }
        await anyio.sleep(1.2)  # autosave of the edits, before the file is watched
        async with join(via, "runner") as runner:
            for run in runs:
                await save_under_output(server, nb, runner, run, ctx, rec)


async def save_under_output(server: JupyterServer, nb: Path, runner: Peer, run: str,
                            ctx: Context, rec: Recorder) -> None:
    """Run one printing cell through the proxy; record how stale the .ipynb gets."""
    saves: list[tuple[float, float]] = []
    """(wall time the change was seen, newest stamp of ``run`` then on disk)."""
    stop = anyio.Event()
    complete = anyio.Event()
    """Set once every line of the run is on disk."""
    lines = round(ctx.plan.ticker_seconds / TICK_PERIOD)
    target = str(nb)

    def only_nb(_change: watchfiles.Change, changed: str) -> bool:
        return changed == target

    async def watch() -> None:
        newest = 0.0
        async for _ in watchfiles.awatch(nb.parent, watch_filter=only_nb, debounce=20, step=5,
                                         stop_event=stop, recursive=False):
            seen = time.time()
            stamps = await anyio.to_thread.run_sync(stamps_on_disk, nb, run)
            if stamps and stamps[-1] > newest:
                newest = stamps[-1]
                saves.append((seen, newest))
                if len(stamps) >= lines:
                    complete.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await anyio.sleep(0.5)  # the watch is set up
        await run_and_wait(runner, run, f"{nb.name}: printing cell {run}")
        with anyio.move_on_after(SAVE_WAIT):
            await complete.wait()
        stop.set()
    stamps = stamps_on_disk(nb, run) or []
    if len(stamps) != lines:
        raise _fail(server, f"{run}: {len(stamps)} of {lines} printed lines reached "
                    f"{nb.name} within {SAVE_WAIT:g} s of the cell's end")
    if not saves or saves[-1][1] != stamps[-1]:
        raise _fail(server, f"{run}: the watch did not see the save of the last line")
    first, last = stamps[0], stamps[-1]

    def newest_printed(t: float) -> float:
        return max((s for s in stamps if s <= t), default=first)

    # Peaks: the age just before each save (before the first, the file held none: age from
    # the first line printed).
    previous = first
    for seen, on_disk in saves:
        rec.add("save.output.peak", newest_printed(seen) - previous)
        previous = on_disk
    # The age every AGE_GRID s from the first line until the last line was on disk.
    t, k = first, 0
    while t <= saves[-1][0]:
        while k < len(saves) and saves[k][0] <= t:
            k += 1
        on_disk = saves[k - 1][1] if k else first
        rec.add("save.output.age", max(0.0, newest_printed(t) - on_disk))
        t += AGE_GRID
    during = [s for s, _ in saves if s <= last]
    gaps = [b - a for a, b in zip([first, *during], during, strict=False)]
    rec.info.setdefault("save_output", []).append({
        "run": run, "lines": lines, "first_stamp": first, "last_stamp": last,
        "saves": [[round(s - first, 3), round(d - first, 3)] for s, d in saves],
    })
    rec.note("save.output.peak", f"{run}: {len(during)} saves while the cell printed for "
             f"{last - first:.1f} s (largest gap between them, from the first line: "
             f"{max(gaps, default=last - first):.1f} s); last line on disk "
             f"{saves[-1][0] - last:.2f} s after it was printed")
