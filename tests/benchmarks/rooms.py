"""Many notebooks on one server: the memory and CPU each open notebook costs while idle.

Ours: a Jupyter server with kernel_collab; N collaborative notebooks opened as a browser opens
them (``PUT /api/kernel-collab/rooms/…``, which starts the kernel and the sidecar), one peer
each through the server's proxy, then idle. Counted: the server's RSS growth plus the summed
PSS of the sidecars and of the fork server that forked them (PSS, not RSS: RSS counts every
shared page once per process). The kernels are not counted (theirs has none).
Theirs: jupyter-collaboration's server with the same N notebooks, one peer each: its RSS
growth (every room lives in that process). CPU: user + system time of the same processes
over the idle period, in percent of one core.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path
from urllib.parse import quote

import anyio

from tests.procfs import parent_pid, rollup, stat_fields

from .kernel import COLLAB_KERNEL, collab_server
from .peers import join
from .proxy import open_room
from .systems import System, proc_status_kib
from .workloads import Context, Recorder, check_cells, peers


def _cpu_s(pid: int) -> float:
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _record(rec: Recorder, n: int, memory_kib: float, cpu_s: float, idle: float) -> None:
    rec.add("rooms.memory", memory_kib / 1024 / n)
    rec.add("rooms.cpu", 100 * cpu_s / idle)
    rec.info.setdefault("rooms", []).append(
        {"notebooks": n, "memory_mib": round(memory_kib / 1024, 1), "cpu_s": round(cpu_s, 2),
         "idle_s": idle})  # fmt: skip


async def rooms(system: System, ctx: Context, rec: Recorder) -> None:
    """N notebooks open, one peer each, idle: memory per notebook and CPU in all."""
    n, idle = ctx.plan.rooms_n, ctx.plan.rooms_idle
    if system.shared_server:
        root, first = ctx.fresh_root(system, "10")
        notebooks = [first]
        for i in range(1, n):
            notebooks.append(root / f"nb10-{i}.ipynb")
            shutil.copyfile(first, notebooks[-1])
        async with system.launch(root, first) as dep, contextlib.AsyncExitStack() as stack:
            await anyio.sleep(1.0)
            before = proc_status_kib(dep.pid)
            for nb in notebooks:
                (peer,) = await stack.enter_async_context(peers(dep, nb, 1))
                check_cells(peer, "10")
            cpu = _cpu_s(dep.pid)
            await anyio.sleep(idle)
            cpu = _cpu_s(dep.pid) - cpu
            _record(rec, n, proc_status_kib(dep.pid) - before, cpu, idle)
        return
    async with collab_server(ctx.scratch / "rooms" / secrets.token_hex(3)) as server:
        names = [f"nb10-{i}.ipynb" for i in range(n)]
        for name in names:
            shutil.copyfile(ctx.notebooks["10"], server.root / name)
            _set_kernelspec(server.root / name)
        await anyio.sleep(1.0)
        before = proc_status_kib(server.proc.pid)
        ws_base = server.url.replace("http://", "ws://", 1)
        async with contextlib.AsyncExitStack() as stack:
            for name in names:
                model = await open_room(server, name)
                url = (f"{ws_base}/api/kernel-collab/sync/{model['document_id']}"
                       f"?token={quote(server.token)}")  # fmt: skip
                peer = await stack.enter_async_context(join(url, f"rooms-{name}"))
                check_cells(peer, "10")
            pids = [int(r["pid"]) for r in server.sidecars()]
            forkers = {parent_pid(pid) for pid in pids} - {server.proc.pid}
            ours = pids + sorted(forkers)
            cpu = sum(_cpu_s(pid) for pid in [server.proc.pid, *ours])
            await anyio.sleep(idle)
            cpu = sum(_cpu_s(pid) for pid in [server.proc.pid, *ours]) - cpu
            ours_kib = sum(rollup(p).pss for p in ours) * 1024
            memory = proc_status_kib(server.proc.pid) - before + ours_kib
            _record(rec, n, memory, cpu, idle)
            rec.note("rooms.memory", f"{len(pids)} sidecars ({len(forkers)} fork server) and "
                     "the server's growth; the kernels not counted")  # fmt: skip


def _set_kernelspec(path: Path) -> None:
    nb = json.loads(path.read_text())
    nb.setdefault("metadata", {})["kernelspec"] = {
        "name": COLLAB_KERNEL, "display_name": "Python 3 (collaborative)", "language": "python"
    }
    path.write_text(json.dumps(nb))
