"""``python -m tests.benchmarks [--quick]``: run every workload against kernel_collab's sidecar
and jupyter-collaboration in the same run, print a table of ratios and write
``tests/benchmarks/results/latest.json``. Exits non-zero, printing no table, if a system does
not start or a workload does not complete. Use ``tests/benchmarks/run.sh``, which sets up
both environments first.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio

from . import plots, report
from .browser import browser_workload
from .kernel import kernel_remote_workloads, kernel_workloads, remote_preflight
from .proxy import proxy_workload
from .rooms import rooms
from .systems import JupyterCollaboration, Sidecar, System
from .workloads import FULL, QUICK, WORKLOADS, Context, Recorder, write_notebooks

RUNS = {**WORKLOADS, "proxy": proxy_workload, "browser": browser_workload, "rooms": rooms}
FULL_ONLY = ("browser", "rooms")
"""Left out of --quick: a browser, and twenty kernels with a minute idle."""
KERNEL_RUNS = {"kernel": kernel_workloads, "kernel-remote": kernel_remote_workloads}
"""Workloads of kernel_collab alone, against a floor: a plain kernel client, or (the in-kernel
API rows) a peer of the same sidecar. ``kernel-remote``: the in-kernel API rows with the
kernel on another host (a network namespace with its own sshd: needs root and ``ip netns``,
and fails saying so without them)."""
ALL = [*RUNS, *KERNEL_RUNS]
"""Every workload."""

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="fewer samples, no browser and no many-rooms workload (under 3 min on 2 "
                   "cores)")
    p.add_argument("--peer-venv", type=Path, default=HERE / ".peer-venv",
                   help="venv with jupyter-collaboration (made by run.sh)")
    p.add_argument("--only", default=None,
                   help=f"comma-separated workloads to run (default: all of {ALL}; with "
                   "--quick, all but browser)")
    p.add_argument("--ours", choices=["kernel_collab", "jupyter-collaboration"],
                   default="kernel_collab",
                   help="system in the 'ours' column; jupyter-collaboration gives an A/A run "
                   "that shows how far ratios move on this machine by noise alone")
    p.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return p.parse_args(argv)


def describe(exc: BaseException) -> str:
    """An exception and, for exception groups, every leaf inside it."""
    if isinstance(exc, BaseExceptionGroup):
        return "\n".join(describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


async def run(args: argparse.Namespace, scratch: Path) -> int:
    """Run the workloads for both systems, then print and save the report."""
    plan = QUICK if args.quick else FULL
    chosen = args.only or ",".join(w for w in ALL if not (args.quick and w in FULL_ONLY))
    only = [w.strip() for w in chosen.split(",") if w.strip()]
    unknown = set(only) - set(ALL)
    if unknown:
        print(f"unknown workloads: {sorted(unknown)}", file=sys.stderr)
        return 2
    if "kernel-remote" in only and args.ours == "kernel_collab":
        problem = remote_preflight()
        if problem is not None:
            print(f"kernel-remote cannot run here: {problem}", file=sys.stderr)
            return 2
    ours: System
    if args.ours == "kernel_collab":
        ours = Sidecar(scratch)
    else:
        ours = JupyterCollaboration(scratch, args.peer_venv, name="jupyter-collaboration-A")
    theirs = JupyterCollaboration(scratch, args.peer_venv)
    recs = {ours.name: Recorder(), theirs.name: Recorder()}
    floor = Recorder()
    ctx = Context(scratch=scratch, plan=plan)
    write_notebooks(ctx)
    started = time.monotonic()
    timings: dict[str, dict[str, float]] = {}
    for name in only:
        if name in KERNEL_RUNS:
            if not isinstance(ours, Sidecar):
                print(f"{name}: skipped (it runs kernel_collab only)", file=sys.stderr)
                continue
            t = time.monotonic()
            print(f"[{time.monotonic() - started:6.1f}s] {name}: {ours.name} and its floor …",
                  file=sys.stderr, flush=True)
            await KERNEL_RUNS[name](ours, ctx, recs[ours.name], floor)
            timings[name] = {ours.name: round(time.monotonic() - t, 2)}
            continue
        # Alternate who goes first, by the workload's place in the full run (whatever --only
        # picks): the burst's paced row needs ours first, where its pace is measured.
        order = [ours, theirs] if list(RUNS).index(name) % 2 == 0 else [theirs, ours]
        for system in order:
            t = time.monotonic()
            print(f"[{time.monotonic() - started:6.1f}s] {name}: {system.name} …",
                  file=sys.stderr, flush=True)
            await RUNS[name](system, ctx, recs[system.name])
            timings.setdefault(name, {})[system.name] = round(time.monotonic() - t, 2)
    labels = {"n": f" ({plan.burst_edits:,} edits)", "crowd": str(plan.crowd_receivers),
              "flushed": f"{plan.lines_flushed:,}", "buffered": f"{plan.lines_buffered:,}",
              "cells": f"{plan.queue_cells:,}", "rooms": str(plan.rooms_n)}
    rows, notes = report.build(
        (ours.name, recs[ours.name]), (theirs.name, recs[theirs.name]), floor, labels
    )
    for old in plots.NAMES:  # no stale plots beside this run's
        (args.out.parent / old).unlink(missing_ok=True)
    pngs = plots.write_all(args.out.parent, (ours.name, theirs.name), recs[ours.name],
                           recs[theirs.name], floor, plan)
    versions = {s.name: s.versions() for s in (ours, theirs)}
    label_theirs = f"{theirs.name} {versions[theirs.name].get('jupyter-collaboration', '')}"
    report.write_json(args.out, {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": plan.mode,
        "plan": plan.__dict__,
        "workloads": only,
        "systems": {"ours": ours.name, "theirs": theirs.name},
        "versions": versions,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpus": __import__("os").cpu_count()},
        "seconds": {"total": round(time.monotonic() - started, 1), "per_workload": timings},
        "rows": rows,
        "notes": notes,
        "info": {name: rec.info for name, rec in recs.items()},
        "floor": {"what": "plain jupyter_client kernel client, plain python3 kernel; for the "
                  "in-kernel API rows, a peer of the same sidecar making the same change",
                  "info": floor.info},
        "plots": [str(p) for p in pngs],
    })
    # Printed only now: any failure above exits non-zero with no table.
    print(report.table(rows, notes, ours.name, label_theirs.strip()))
    print("\nplots:")
    for png in pngs:
        print(f"  {png}")
    print(f"results: {args.out}  ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="kc-bench-"))
    ok = False
    try:
        code = anyio.run(run, args, scratch)
        ok = code == 0
        return code
    except BaseException as exc:
        print(f"\n{describe(exc)}\n", file=sys.stderr)
        raise
    finally:
        if not ok:
            print(f"benchmark FAILED, no table printed; logs and files kept in {scratch}",
                  file=sys.stderr)
        elif args.keep:
            print(f"scratch kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
