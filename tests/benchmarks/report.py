"""Statistics, goals, the printed table and the JSON file.

Figures are per system: median, p99 and N. With fewer than 100 samples there is no honest
99th percentile, so the column shows the maximum and marks it with ``*``. The ratio is
ours / theirs of the medians, so below 1 is better for times and sizes, above 1 for rates.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .workloads import NOTEBOOKS, Recorder


@dataclass(frozen=True)
class Goal:
    """A target for a measure: on the ratio of medians, or on our median alone."""

    on: str  # "ratio" | "ours"
    op: str  # "<=" | ">="
    value: float
    source: str = "proposed"

    def text(self, unit: str, scale: float) -> str:
        if self.on == "ratio":
            return f"ratio {self.op} {self.value:g}"
        return f"ours {self.op} {self.value * scale:g} {unit}"

    def met(self, ratio: float, ours: float) -> bool:
        x = ratio if self.on == "ratio" else ours
        if math.isnan(x):
            return False
        return x <= self.value if self.op == "<=" else x >= self.value


@dataclass(frozen=True)
class Measure:
    """One row of the table."""

    key: str
    label: str
    unit: str
    scale: float  # multiply seconds (or the raw value) by this to show ``unit``
    goal: Goal | None = None


def _measures() -> list[Measure]:
    out: list[Measure] = []
    for size in NOTEBOOKS:
        name = f"{NOTEBOOKS[size][0]} cells" if size != "10MB" else "~10 MB"
        out.append(Measure(f"open.cold.{size}", f"open cold†, {name}", "s", 1.0))
        out.append(Measure(f"open.start.{size}", f"open from process start, {name}", "s", 1.0,
                           Goal("ratio", "<=", 1.0)))
        out.append(Measure(f"open.warm.{size}", f"open warm‡ (2nd peer), {name}", "ms", 1e3,
                           Goal("ratio", "<=", 1.0)))
    for k in (1, 10):
        peers = "1 peer" if k == 1 else f"{k} peers"
        out.append(Measure(f"latency.{k}.each", f"edit→peer, {peers}, each", "ms", 1e3,
                           Goal("ratio", "<=", 1.0)))
        if k > 1:
            out.append(Measure(f"latency.{k}.slowest", f"edit→slowest of {peers}", "ms", 1e3,
                               Goal("ratio", "<=", 1.0)))
        out.append(Measure(f"latency.{k}.ack", f"edit→own echo (ack), {peers}", "ms", 1e3))
    out += [
        Measure("burst.throughput", "burst{n}: edits/s until all peers have them", "edits/s",
                1.0, Goal("ratio", ">=", 1.0)),
        Measure("burst.send", "burst{n}: edits/s leaving the writer", "edits/s", 1.0),
        Measure("burst.ack", "burst{n}: first edit→last echo", "s", 1.0),
        Measure("burst.durable", "burst{n}: first edit→all in store", "s", 1.0,
                Goal("ratio", "<=", 1.0)),
        Measure("burst.durable_lag", "burst{n}: store behind the last echo by", "s", 1.0,
                Goal("ours", "<=", 0.01, "DESIGN.md: stored before relayed")),
        Measure("store.ratio", "store size / .ipynb size after burst", "x", 1.0,
                Goal("ratio", "<=", 1.0)),
        Measure("save", "edit→.ipynb on disk", "s", 1.0,
                Goal("ours", "<=", 1.5, "DESIGN.md: autosave ~1 s after the last change")),
        Measure("outside", "outside .ipynb change→peer", "s", 1.0,
                Goal("ours", "<=", 0.3, "DESIGN.md: outside changes seen in ≤ 0.3 s")),
    ]
    return out


MEASURES = _measures()


def summarize(samples: list[float]) -> dict[str, Any]:
    """Median, p99 (nearest rank; the maximum when N < 100) and N."""
    n = len(samples)
    if not n:
        return {"n": 0, "median": math.nan, "p99": math.nan, "p99_is_max": True}
    ordered = sorted(samples)
    rank = max(1, math.ceil(0.99 * n))
    return {
        "n": n,
        "median": statistics.median(ordered),
        "p99": ordered[rank - 1] if n >= 100 else ordered[-1],
        "p99_is_max": n < 100,
    }


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "—"
    if math.isinf(x):
        return "never"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if a >= 0.1 or x == 0 else f"{x:.3f}"


def build(
    ours: tuple[str, Recorder], theirs: tuple[str, Recorder], burst_edits: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of the report (only measures both systems recorded) and footnotes."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for m in MEASURES:
        a, b = ours[1].samples.get(m.key), theirs[1].samples.get(m.key)
        if not a and not b:
            continue
        if not a or not b:
            raise ValueError(f"measure {m.key} recorded for only one system")
        sa, sb = summarize(a), summarize(b)
        ratio = sa["median"] / sb["median"] if sb["median"] else math.nan
        met = m.goal.met(ratio, sa["median"]) if m.goal else None
        label = m.label.format(n=f" ({burst_edits:,} edits)")
        rows.append({
            "key": m.key, "label": label, "unit": m.unit, "scale": m.scale,
            "ours": sa, "theirs": sb, "ratio": ratio,
            "goal": m.goal.text(m.unit, m.scale) if m.goal else None,
            "goal_source": m.goal.source if m.goal else None, "met": met,
            "samples": {ours[0]: a, theirs[0]: b},
        })
        for who, rec in (ours, theirs):
            for text in rec.notes.get(m.key, []):
                notes.append(f"{label} — {who}: {text}")
    return rows, notes


def table(rows: list[dict[str, Any]], notes: list[str], ours: str, theirs: str) -> str:
    """The table as text."""
    head = ["measure", "unit", "ours med", "p99", "N", "theirs med", "p99", "N", "ratio",
            "goal", "met?"]
    lines: list[list[str]] = []
    starred = False
    for r in rows:
        cells = [r["label"], r["unit"]]
        for side in ("ours", "theirs"):
            s = r[side]
            p99 = _fmt(s["p99"] * r["scale"]) + ("*" if s["p99_is_max"] else "")
            starred |= s["p99_is_max"]
            cells += [_fmt(s["median"] * r["scale"]), p99, str(s["n"])]
        met = "—" if r["met"] is None else ("yes" if r["met"] else "NO")
        cells += [_fmt(r["ratio"]), r["goal"] or "—", met]
        lines.append(cells)
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in (0, 1, 9) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [f"ours = {ours}; theirs = {theirs}; ratio = ours/theirs (medians)", fmt(head),
           "  ".join("-" * w for w in widths)]
    out += [fmt(c) for c in lines]
    if starred:
        out.append("* N < 100: this is the maximum, not a true 99th percentile.")
    if any(r["key"].startswith("open.cold.") for r in rows):
        out.append("† ours: from sidecar process start (file load included); theirs: from the "
                   "room request (PUT session) on a running server.")
    if any(r["key"].startswith("open.warm.") for r in rows):
        out.append("‡ theirs includes the PUT session request JupyterLab makes before joining; "
                   "ours has none (one sidecar, one room).")
    out += [f"note: {n}" for n in notes]
    return "\n".join(out)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write the results (NaN/inf as null) atomically."""
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(clean(payload), indent=1) + "\n")
    tmp.replace(path)
