"""What each import costs a sidecar, and what an idle sidecar weighs.

``python -m tests.benchmarks.memory_imports [--sidecar]`` prints, from ``/proc/PID/smaps_rollup``
(Linux): each module imported alone in a fresh interpreter; then the sidecar's imports one after
another in one interpreter, in the order a sidecar makes them (each row: what it adds to the
rows above, so the rows add up); with ``--sidecar``, an idle sidecar of a 10-cell notebook (no
kernel; one peer synced once, so start-up is over) before and after a kernel's client is loaded.
RSS counts every page a process maps; PSS shares each page among the processes that map it (so
it depends on what else runs: other Pythons share libpython); USS counts only the process's own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from kernel_collab.sidecar.__main__ import FORMAT_CHECKER_ONLY
from tests.procfs import rollup

ALONE = [
    "anyio", "sqlite3", "traitlets.config", "pycrdt", "jupyter_ydoc",
    "websockets.asyncio.server", "watchfiles", "zmq.asyncio", "jupyter_client",
    "fastjsonschema", "jsonschema", "nbformat", "nbformat.sign",
]  # fmt: skip
"""Each imported alone, with whatever it imports itself."""

SIDECAR = [
    ("asyncio", "the event loop (ssl and hashlib included)"),
    ("anyio", ""),
    ("sqlite3", ""),
    ("traitlets.config", "the app's configuration"),
    ("pycrdt", "the Y document"),
    ("jupyter_ydoc", "the notebook schema"),
    ("websockets.asyncio.server", "the peers' server"),
    ("watchfiles", "the file watcher"),
    ("merge3", "the three-way merge"),
    ("fastjsonschema", "nbformat's validator"),
    ("jsonschema", "imported by nbformat, for error messages; format checkers skipped"),
    ("nbformat", "reading, validating and writing .ipynb"),
    ("kernel_collab.sidecar.__main__", "kernel_collab's own modules"),
    ("nbformat.sign", "later: the notary, at a signed file's load or a save"),
    ("zmq.asyncio", "later: at the first kernel attach"),
    ("jupyter_client.asynchronous.client", "later: at the first kernel attach"),
]
"""The sidecar's imports in order, and what each is for."""

# Reads smaps_rollup itself (not with tests.procfs.rollup): it imports only what it measures.
PROBE = """
import importlib, json, sys
for name in sys.argv[1].split(","):
    if name:
        sys.modules.setdefault(name, None)
rows = []
for name in sys.argv[2:]:
    if name != "-":
        importlib.import_module(name)
    fields = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0][:-1]] = int(parts[1])
    rows.append([fields["Rss"], fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]])
print(json.dumps(rows))
"""

Row = tuple[float, float, float]


def probe(modules: list[str], blocked: tuple[str, ...] = (), runs: int = 3) -> list[Row]:
    """RSS, PSS and USS (MiB) of a fresh interpreter after each of ``modules`` ("-": none),
    with ``blocked`` modules unavailable; the median of ``runs`` interpreters."""
    results = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", PROBE, ",".join(blocked), *modules],
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
        results.append([(r / 1024, p / 1024, u / 1024) for r, p, u in json.loads(out)])
    results.sort(key=lambda rows: rows[-1][1])
    return results[len(results) // 2]


async def _sync_once(url: str, token: str) -> None:
    from tests.peers import NotebookPeer

    async with NotebookPeer.connect(url, token):
        pass


def idle_sidecar(cells: int = 10) -> tuple[Row, Row]:
    """An idle sidecar of a ``cells``-cell notebook: its memory, and again after a kernel
    attaches (a dead one: only the client's imports and sockets count)."""
    import anyio

    from tests.kernel_helpers import ask
    from tests.sidecar_process import running_sidecar

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        nb = {
            "cells": [{"cell_type": "code", "execution_count": None, "id": f"cell-{i}",
                       "metadata": {}, "outputs": [], "source": f"x = {i}"}
                      for i in range(cells)],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
        }  # fmt: skip
        (root / "nb.ipynb").write_text(json.dumps(nb))
        os.environ.setdefault("KERNEL_COLLAB_ADMIN_TOKEN", "memory-admin")
        with running_sidecar(root / "nb.ipynb", root) as sidecar:
            anyio.run(_sync_once, sidecar.url, sidecar.token)
            idle = rollup(sidecar.proc.pid)
            info = {"ip": "127.0.0.1", "transport": "tcp", "shell_port": 9, "iopub_port": 9,
                    "stdin_port": 9, "control_port": 9, "hb_port": 9, "key": "k",
                    "signature_scheme": "hmac-sha256"}  # fmt: skip
            request = {"type": "attach_kernel", "kernel_id": "none", "connection_info": info}
            reply = anyio.run(ask, sidecar.url, os.environ["KERNEL_COLLAB_ADMIN_TOKEN"], request)
            assert reply["ok"], reply
            anyio.run(_sync_once, sidecar.url, sidecar.token)
            attached = rollup(sidecar.proc.pid)
    return idle, attached


def _fmt(row: Row) -> str:
    return " | ".join(f"{v:.1f}" for v in row)


def main(argv: list[str] | None = None) -> None:
    """Print the tables (and the idle sidecar with ``--sidecar``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sidecar", action="store_true", help="also measure an idle sidecar")
    args = parser.parse_args(argv)
    (base,) = probe(["-"])
    print(f"bare interpreter (Python {sys.version.split()[0]}): RSS {base[0]:.1f} MiB, "
          f"PSS {base[1]:.1f}, USS {base[2]:.1f}; the rows below add to it\n")  # fmt: skip
    print("| imported alone, in a fresh interpreter | RSS MiB | PSS MiB | USS MiB |")
    print("|---|---|---|---|")
    for name in ALONE:
        (row,) = probe([name])
        print(f"| `{name}` | {_fmt((row[0] - base[0], row[1] - base[1], row[2] - base[2]))} |")
    print("\n| the sidecar's imports, in order (each row adds to the ones above) "
          "| RSS MiB | PSS MiB | USS MiB |")
    print("|---|---|---|---|")
    rows = probe(["-", *(name for name, _ in SIDECAR)], FORMAT_CHECKER_ONLY)
    for (name, why), before, after in zip(SIDECAR, rows[:-1], rows[1:], strict=True):
        added = (after[0] - before[0], after[1] - before[1], after[2] - before[2])
        print(f"| `{name}`{': ' + why if why else ''} | {_fmt(added)} |")
    started = rows[1 + [name for name, _ in SIDECAR].index("kernel_collab.sidecar.__main__")]
    print(f"| **interpreter and every import at start, in all** | {_fmt(started)} |")
    print(f"| **in all, once the notary and a kernel's client are loaded** | {_fmt(rows[-1])} |")
    if args.sidecar:
        idle, attached = idle_sidecar()
        print(f"\nidle sidecar of a 10-cell notebook: RSS {idle[0]:.1f} MiB, PSS {idle[1]:.1f}, "
              f"USS {idle[2]:.1f}; with a kernel's client loaded: RSS {attached[0]:.1f}, "
              f"PSS {attached[1]:.1f}, USS {attached[2]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
