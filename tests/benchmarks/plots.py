"""PNG plots of a run (matplotlib, Agg backend), written beside ``latest.json``.

- ``latency.png``: distributions (CDFs, log time axis) of edit→peer latency, ours vs theirs,
  for 1, 10 and the crowd of peers, and of print→peer latency, ours vs the plain client.
- ``throughput.png``: bars of edits/s in the burst (ours vs theirs), lines/s from ``print``
  and cells/s through the queue (ours vs the plain client), on log axes.
- ``store.png``: the store's size on disk during the burst (sampled every few ms, both
  systems), against the notebook's size and twice it.
- ``kernel.png``: characters of a print loop a peer (ours) or the plain client (floor) had,
  over time from the run request; and queued cells ending over time.

A plot whose data was not recorded (a workload left out with ``--only``) is not written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# matplotlib is a benchmark-only requirement (requirements.txt, installed by run.sh), so
# the project's mypy run must pass without it too.
import matplotlib  # type: ignore[import-not-found, unused-ignore]

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
from matplotlib.axes import Axes  # type: ignore[import-not-found, unused-ignore]
from matplotlib.ticker import (  # type: ignore[import-not-found, unused-ignore]
    FuncFormatter,
    NullFormatter,
)

from .workloads import STORE_SAMPLE_PERIOD, Plan, Recorder

NAMES = ("latency.png", "throughput.png", "store.png", "kernel.png")
"""Every file this module writes."""
OURS_COLOR = "tab:blue"
THEIRS_COLOR = "tab:orange"
FLOOR_COLOR = "tab:gray"


def _cdf(ax: Axes, samples: list[float], label: str, color: str, scale: float = 1e3) -> None:
    if not samples:
        return
    xs = sorted(x * scale for x in samples)
    n = len(xs)
    ax.step(xs, [(i + 1) / n for i in range(n)], where="post", label=f"{label} (N={n})",
            color=color)


def _finish(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency(out: Path, names: tuple[str, str], ours: Recorder, theirs: Recorder,
            floor: Recorder, plan: Plan) -> Path | None:
    """CDFs of edit→peer latency (ours vs theirs) and print→peer latency (ours vs floor)."""
    panels: list[tuple[str, list[tuple[str, list[float], str]]]] = []
    for key, title in (("1", "1 peer"), ("10", "10 peers"),
                       ("crowd", f"{plan.crowd_receivers} peers")):
        a, b = ours.samples.get(f"latency.{key}.each"), theirs.samples.get(f"latency.{key}.each")
        if a and b:
            panels.append((f"edit→peer, {title}, each",
                           [(names[0], a, OURS_COLOR), (names[1], b, THEIRS_COLOR)]))
    a, b = ours.samples.get("kernel.print_latency"), floor.samples.get("kernel.print_latency")
    if a and b:
        panels.append(("print→peer (kernel)", [(names[0], a, OURS_COLOR),
                                              ("plain kernel client", b, FLOOR_COLOR)]))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        for label, samples, color in series:
            _cdf(ax, samples, label, color)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of samples ≤ x")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Latency distributions (CDF; left is better)", fontsize=11)
    return _finish(fig, out / "latency.png")


def _median(samples: list[float]) -> float:
    xs = sorted(samples)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def throughput(out: Path, names: tuple[str, str], ours: Recorder, theirs: Recorder,
               floor: Recorder, plan: Plan) -> Path | None:
    """Bars (medians) of the rates, each panel in its own unit."""
    panels: list[tuple[str, str, list[tuple[str, float, str]]]] = []
    a, b = ours.samples.get("burst.throughput"), theirs.samples.get("burst.throughput")
    if a and b:
        panels.append((f"burst of {plan.burst_edits:,} edits", "edits/s to all peers",
                       [(names[0], _median(a), OURS_COLOR), (names[1], _median(b), THEIRS_COLOR)]))
    bars: list[tuple[str, float, str]] = []
    for mode, label in (("flushed", "flushed"), ("buffered", "buffered")):
        a, b = ours.samples.get(f"kernel.lines.{mode}"), floor.samples.get(f"kernel.lines.{mode}")
        if a and b:
            bars += [(f"{label}\n{names[0]}", _median(a), OURS_COLOR),
                     (f"{label}\nplain client", _median(b), FLOOR_COLOR)]
    if bars:
        panels.append(("print loop → peer", "lines/s", bars))
    a, b = ours.samples.get("kernel.queue"), floor.samples.get("kernel.queue")
    if a and b:
        panels.append((f"queue, {plan.queue_cells:,} trivial cells", "cells/s",
                       [(names[0], _median(a), OURS_COLOR),
                        ("plain client", _median(b), FLOOR_COLOR)]))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (title, unit, series) in zip(axes[0], panels, strict=True):
        labels = [s[0] for s in series]
        values = [s[1] for s in series]
        ax.bar(range(len(series)), values, color=[s[2] for s in series])
        ax.set_xticks(range(len(series)), labels, fontsize=7)
        for i, v in enumerate(values):
            ax.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    if any(p[1] == "lines/s" for p in panels):
        ax = axes[0][[p[1] for p in panels].index("lines/s")]
        ax.axhline(50_000, color="green", linestyle="--", linewidth=1)
        ax.annotate("goal 50,000", (0, 50_000), fontsize=7, color="green", va="bottom")
    fig.suptitle("Throughput (medians; higher is better)", fontsize=11)
    return _finish(fig, out / "throughput.png")


def store(out: Path, names: tuple[str, str], ours: Recorder, theirs: Recorder) -> Path | None:
    """The store's size over the burst, one panel per system (their time scales differ)."""
    series = [(names[0], ours.info.get("store_series"), OURS_COLOR),
              (names[1], theirs.info.get("store_series"), THEIRS_COLOR)]
    if not all(s for _, s, _ in series):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), sharey=True, squeeze=False)
    edits = 0
    for ax, (label, data, color) in zip(axes[0], series, strict=True):
        assert data is not None
        edits = data["edits"]
        ax.plot(data["t"], [b / 1e3 for b in data["bytes"]], color=color, linewidth=1.0,
                marker=".", markersize=2)
        ax.axvline(data["t_ack"], color="black", linestyle=":", linewidth=1)
        ax.annotate(" last echo", (data["t_ack"], 0.97), xycoords=("data", "axes fraction"),
                    fontsize=7, va="top")
        if data.get("t_durable") is not None:
            ax.axvline(data["t_durable"], color="black", linestyle="--", linewidth=1)
            ax.annotate(" all stored", (data["t_durable"], 0.89),
                        xycoords=("data", "axes fraction"), fontsize=7, va="top")
        nb_kb = data["notebook_bytes"] / 1e3
        ax.axhline(nb_kb, color="gray", linewidth=0.8)
        ax.axhline(2 * nb_kb, color="green", linestyle="--", linewidth=0.8)
        ax.annotate(".ipynb", (0, nb_kb), xycoords=("axes fraction", "data"), fontsize=7,
                    va="bottom")
        ax.annotate("2x .ipynb (goal)", (0, 2 * nb_kb), xycoords=("axes fraction", "data"),
                    fontsize=7, va="bottom", color="green")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.set_xlabel("seconds since the burst's first edit")
        ax.set_title(label, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("store on disk, kB (db + WAL + journal)")
    fig.suptitle(f"Store size during a burst of {edits:,} edits (sampled every "
                 f"{STORE_SAMPLE_PERIOD * 1e3:g} ms)", fontsize=11)
    return _finish(fig, out / "store.png")


def kernel(out: Path, name: str, ours: Recorder, plan: Plan) -> Path | None:
    """Print-loop text arriving and queued cells ending over time, ours vs the plain client."""
    data = ours.info.get("kernel_series")
    if not data:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), squeeze=False)
    who = (("ours", name, OURS_COLOR), ("floor", "plain kernel client", FLOOR_COLOR))
    for ax, mode, lines in ((axes[0][0], "flushed", plan.lines_flushed),
                            (axes[0][1], "buffered", plan.lines_buffered)):
        for side, label, color in who:
            points = data.get(f"{side}.{mode}")
            if points:
                ax.plot([p[0] for p in points], [p[1] / 1e3 for p in points], label=label,
                        color=color, linewidth=1.2, drawstyle="steps-post")
        ax.set_xlabel("seconds since the run request")
        ax.set_ylabel("thousand characters received")
        ax.set_title(f"{lines:,} {mode} prints → peer / client", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[0][2]
    for side, label, color in who:
        ends = data.get(f"{side}.queue")
        if ends:
            ax.plot(ends, range(1, len(ends) + 1), label=label, color=color, linewidth=1.2)
    ax.set_xlabel("seconds since the first request")
    ax.set_ylabel("cells ended")
    ax.set_title(f"queue: {plan.queue_cells:,} trivial cells", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("Kernel workloads over time", fontsize=11)
    return _finish(fig, out / "kernel.png")


def write_all(out: Path, names: tuple[str, str], ours: Recorder, theirs: Recorder,
              floor: Recorder, plan: Plan) -> list[Path]:
    """Write every plot that has data; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    made = [
        latency(out, names, ours, theirs, floor, plan),
        throughput(out, names, ours, theirs, floor, plan),
        store(out, names, ours, theirs),
        kernel(out, names[0], ours, plan),
    ]
    return [p for p in made if p is not None]
