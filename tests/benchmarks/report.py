"""Statistics, goals, the printed table and the JSON file.

Figures are per system: median, p99 and N. With fewer than 100 samples there is no honest
99th percentile, so the column shows the maximum and marks it with ``*``. The ratio is
ours / theirs of the medians (and of the p99s), so below 1 is better for times and sizes,
above 1 for rates. Kernel rows compare ours with a plain kernel client (the floor) instead:
jupyter-collaboration cannot run a kernel without a browser. Goals come from the project's
issues and docs/architecture.md.
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
    """A target for a measure: on the ratio ours/other (of the medians, or of the p99s), or
    on our own median (or p99)."""

    on: str  # "ratio" | "ours"
    op: str  # "<=" | ">="
    value: float
    source: str = "proposed"
    stat: str = "median"  # "median" | "p99"
    floor: str | None = None
    """A measure of ours that is this row's floor: the goal is also met when ours is at most
    ``floor_factor`` times the floor ("whichever is higher")."""
    floor_factor: float = 1.2

    def text(self, unit: str, scale: float) -> str:
        stat = "" if self.stat == "median" else f"{self.stat} "
        if self.on == "ratio":
            text = f"{stat}ratio {self.op} {self.value:g}"
            return text + (f" or <= {self.floor_factor:g}x floor" if self.floor else "")
        return f"ours {stat}{self.op} {_fmt(self.value * scale)} {unit}"

    def met(self, row: dict[str, Any], floor: dict[str, Any] | None = None) -> bool:
        if self.on == "ratio":
            x = row["ratio"] if self.stat == "median" else row["ratio_p99"]
        else:
            x = row["ours"][self.stat]
        if floor is not None and row["ours"][self.stat] <= self.floor_factor * floor[self.stat]:
            return True
        if math.isnan(x):
            return False
        return bool(x <= self.value if self.op == "<=" else x >= self.value)


ISSUES = "issues"
"""Goals set in the project's issues."""
THEIRS_NO_KERNEL = (
    "jupyter-collaboration runs no kernel itself: the JupyterLab tab that runs a cell sends "
    "the request and writes the outputs into the document, so without a browser nothing runs"
)


@dataclass(frozen=True)
class Measure:
    """One row of the table."""

    key: str
    label: str
    unit: str
    scale: float  # multiply seconds (or the raw value) by this to show ``unit``
    goals: tuple[Goal, ...] = ()
    vs: str = "theirs"
    """What ours is compared with: "theirs" (jupyter-collaboration), "floor" (a plain
    jupyter_client kernel client, kernel rows) or "none" (only ours measures it)."""
    na: str = ""
    """Why theirs has no figure (rows not compared with theirs)."""

    @property
    def section(self) -> str:
        """"kernel" rows go in the second table."""
        return "kernel" if self.key.startswith("kernel.") else "collab"


def _measures() -> list[Measure]:
    out: list[Measure] = []
    half = Goal("ratio", "<=", 0.5, ISSUES)
    no_slower = Goal("ratio", "<=", 1.0, ISSUES)
    for size in NOTEBOOKS:
        name = f"{NOTEBOOKS[size][0]} cells" if size != "10MB" else "~10 MB"
        out.append(Measure(f"open.cold.{size}", f"open cold†, {name}", "s", 1.0, (half,)))
        out.append(Measure(f"open.start.{size}", f"open from process start, {name}", "s", 1.0,
                           (half,)))
        out.append(Measure(f"open.warm.{size}", f"open warm‡ (2nd peer): connect→synced, {name}",
                           "ms", 1e3, (half,)))
        if size == "1000":
            out += [
                Measure("open.room.1000", "open on a running server°: room request→synced, "
                        f"{name}", "s", 1.0, (no_slower,)),
                Measure("open.room_warm.1000", "open on a running server°, room open (2nd "
                        f"peer): room request→synced, {name}", "ms", 1e3),
            ]
    def near_floor(what: str, stat: str = "p99") -> Goal:
        """p99 (or p50) <= 0.7x theirs or <= 1.2x the bare relay's, whichever is higher."""
        return Goal("ratio", "<=", 0.7, ISSUES, stat=stat, floor=f"latency.floor10.{what}")

    for k in ("1", "10", "crowd"):
        peers = "1 peer" if k == "1" else "{crowd} peers" if k == "crowd" else f"{k} peers"
        out.append(Measure(f"latency.{k}.each", f"edit→peer, {peers}, each", "ms", 1e3,
                           (near_floor("each"),) if k == "10" else ()))
        if k != "1":
            out.append(Measure(f"latency.{k}.slowest", f"edit→slowest of {peers}", "ms", 1e3,
                               (near_floor("slowest"),) if k == "10" else ()))
        out.append(Measure(f"latency.{k}.ack", f"edit→own echo (ack), {peers}", "ms", 1e3))
        if k == "10":
            out += [
                Measure("commit", "group commit (sidecar stats, latency workload)§", "ms", 1e3,
                        vs="none", na="pycrdt-store reports no commit timings"),
                Measure("commit.share", "commit share of edit→peer, 10 peers§", "%", 100.0,
                        vs="none", na="pycrdt-store reports no commit timings"),
                Measure("loop_lag", "sidecar event-loop lag under the latency workload§", "ms",
                        1e3, vs="none", na="not measured in jupyter-collaboration's server"),
            ]
    floor_na = ("the floor runs once, with ours: the same 11 peers and edits through a bare "
                "WebSocket relay holding no document")
    out += [
        Measure("latency.floor10.each", "edit→peer, 10 peers, bare relay (floor)▹", "ms", 1e3,
                vs="none", na=floor_na),
        Measure("latency.floor10.slowest", "edit→slowest of 10 peers, bare relay (floor)▹", "ms",
                1e3, vs="none", na=floor_na),
    ]
    proxy_na = ("jupyter-collaboration has no sidecar: its peers always go through its "
                "server (its figure is the 'via server' row)")
    out += [
        Measure("latency.proxy.each", "edit→peer, 10 peers, via server (handed over), each‖", "ms",
                1e3, (near_floor("each", "median"), near_floor("each"))),
        Measure("latency.proxy.slowest", "edit→slowest of 10 peers, via server (handed over)‖",
                "ms", 1e3, (near_floor("slowest", "median"), near_floor("slowest"))),
        Measure("latency.proxy.ack", "edit→own echo (ack), 10 peers, via server (handed over)‖",
                "ms", 1e3),
        Measure("latency.proxy1.each", "edit→peer, 1 peer, via server (full run)‖", "ms",
                1e3),
        Measure("latency.proxy50.each", "edit→peer, 50 peers, via server (full run)‖",
                "ms", 1e3),
        Measure("latency.proxy50.slowest", "edit→slowest of 50 peers, via server (full run)‖",
                "ms", 1e3),
        Measure("latency.direct.each", "edit→peer, 10 peers, same room, straight to sidecar‖",
                "ms", 1e3, vs="none", na=proxy_na),
        Measure("latency.direct.slowest", "edit→slowest of 10 peers, straight to sidecar‖", "ms",
                1e3, vs="none", na=proxy_na),
        Measure("latency.relay.each", "edit→peer, 10 peers, via server relaying (proxy "
                "route)‖", "ms", 1e3, vs="none", na=proxy_na),
        Measure("latency.relay.slowest", "edit→slowest of 10 peers, via server relaying (proxy "
                "route)‖", "ms", 1e3, vs="none", na=proxy_na),
    ]
    for key, route in (("overhead", "handed over"), ("relayoverhead", "relaying")):
        out += [Measure(f"latency.{key}.{what}", f"server's cost, {route}: via server / direct, "
                        f"{what}‖", "x", 1.0, vs="none", na=proxy_na)
                for what in ("each", "slowest")]  # fmt: skip
    for phase, what in (("cold", "first open (room cold)"), ("warm", "reopened (room warm)")):
        out += [
            Measure(f"browser.open.{phase}.synced",
                    f"browser: open 1,000 cells, {what} → synced", "s", 1.0, (half,)),
            Measure(f"browser.open.{phase}.editable",
                    f"browser: open 1,000 cells, {what} → 1st cell editable", "s", 1.0,
                    (no_slower,)),
        ]
    out.append(Measure("browser.keystroke", "browser: keystroke→other browser, via server",
                       "ms", 1e3, (Goal("ratio", "<=", 1.0, ISSUES),
                                   Goal("ratio", "<=", 1.0, ISSUES, stat="p99"))))
    out += [  # compare only: no goal
        Measure("browser.keystroke.1000", "browser: keystroke→other browser, via server, "
                "1,000 cells", "ms", 1e3),
        Measure("browser.keystroke.1000.moving", "browser: keystroke→other browser, via server, "
                "1,000 cells, caret moved (←) before each key", "ms", 1e3),
    ]
    out += [
        Measure("burst.throughput", "burst{n}: edits/s until all peers have them", "edits/s",
                1.0, (Goal("ratio", ">=", 5.0, ISSUES),)),
        Measure("burst.send", "burst{n}: edits/s leaving the writer", "edits/s", 1.0),
        Measure("burst.keepup", "burst{n}: edits/s to all peers / edits/s sent", "x", 1.0,
                (Goal("ours", ">=", 0.95, ISSUES),)),
        Measure("burst.floor.keepup", "burst{n}: to all peers / sent, bare relay (floor)▹", "x",
                1.0, vs="none", na="the floor runs once, with ours"),
        Measure("burst.paced", "burst{n} paced at 90% of the floor's rate: sending time / "
                "time until all peers have it", "x", 1.0,
                (Goal("ours", ">=", 0.95, "issues: the sidecar is never the bottleneck"),)),
        Measure("burst.floor.paced", "burst{n} paced, bare relay (floor)▹", "x", 1.0,
                vs="none", na="the floor runs once, with ours"),
        Measure("burst.floor.throughput", "burst{n}: edits/s to all peers, bare relay (floor)▹",
                "edits/s", 1.0, vs="none", na="the floor runs once, with ours"),
        Measure("burst4.throughput", "burst{n}, 4 writers at once: edits/s until all peers have "
                "them", "edits/s", 1.0),
        Measure("burst4.floor.throughput", "burst{n}, 4 writers: the same through the bare "
                "relay (floor)▹", "edits/s", 1.0, vs="none", na="the floor runs once, with ours"),
        Measure("appends.rate", "an agent appends 2,000 cells, one message each: cells/s "
                "until a peer has them", "cells/s", 1.0, (Goal("ratio", ">=", 1.0, ISSUES),)),
        Measure("burst.ack", "burst{n}: first edit→last echo", "s", 1.0),
        Measure("burst.durable", "burst{n}: first edit→all in store", "s", 1.0),
        Measure("burst.durable_lag", "burst{n}: store behind the last echo by", "s", 1.0,
                (Goal("ours", "<=", 0.0, "issues; architecture: stored before relayed"),)),
        Measure("store.ratio", "store size outside history / .ipynb size after burst", "x",
                1.0, (Goal("ours", "<=", 2.0, ISSUES),)),
        Measure("store.history", "history's pages / .ipynb size after burst (own budget)", "x",
                1.0),
        Measure("store.peak", "store size with history / .ipynb size, largest seen", "x", 1.0),
        Measure("save", "edit→.ipynb on disk", "s", 1.0,
                (Goal("ours", "<=", 1.5, "architecture: autosave ~1 s after the last change"),)),
        Measure("save.output.age", "save under output: newest printed - newest on disk♦", "s",
                1.0, vs="none", na=THEIRS_NO_KERNEL),
        Measure("save.output.peak", "save under output: age just before each save♦", "s", 1.0,
                (Goal("ours", "<=", 2.0, "issues: the file never more than 2 s behind "
                      "while output keeps coming", stat="p99"),), vs="none", na=THEIRS_NO_KERNEL),
        Measure("outside", "outside .ipynb change→peer", "s", 1.0,
                (Goal("ours", "<=", 0.3, "architecture: outside changes seen in ≤ 0.3 s"),
                 Goal("ratio", "<=", 0.5, ISSUES))),
        Measure("memory.open", "RSS growth, ~10 MB notebook open / .ipynb size¶", "x", 1.0,
                (Goal("ours", "<=", 3.0, ISSUES),)),
        Measure("memory.closed", "RSS growth after it is closed / .ipynb size¶", "x", 1.0),
        Measure("rooms.memory", "{rooms} notebooks open, 1 peer each: memory per notebook "
                "(sidecar PSS + server growth)◇", "MiB", 1.0),
        Measure("rooms.cpu", "{rooms} notebooks open, 1 peer each, idle: CPU in all◇", "%",
                1.0),
        # -- kernel workloads: ours against a plain kernel client (the floor) ---------------
        Measure("kernel.lines.flushed", "print(i, flush=True), {flushed} lines: lines/s to a peer",
                "lines/s", 1.0, (Goal("ratio", ">=", 0.95, ISSUES),), vs="floor"),
        Measure("kernel.lag.flushed", "  … peer has all lines after the loop's end", "s", 1.0,
                vs="floor"),
        Measure("kernel.lines.buffered", "print(i), {buffered} lines: lines/s to a peer", "lines/s",
                1.0, (Goal("ratio", ">=", 0.95, ISSUES),), vs="floor"),
        Measure("kernel.lag.buffered", "  … peer has all lines after the loop's end", "s", 1.0,
                vs="floor"),
        Measure("kernel.print_latency", "print→peer (flushed stamp every 20 ms)", "ms", 1e3,
                (Goal("ratio", "<=", 2.0, ISSUES, stat="p99"),), vs="floor"),
        *_api_measures(),
        Measure("kernel.client_run", "Python client: run a trivial cell → its outputs back", "ms",
                1e3, (Goal("ratio", "<=", 2.0, ISSUES, stat="p99"),), vs="floor"),
        Measure("kernel.queue", "queue: {cells} trivial cells from 3 peers, cells/s", "cells/s",
                1.0, (Goal("ratio", ">=", 0.8, ISSUES),), vs="floor"),
        Measure("kernel.running", "run request→'running' at another peer ({cells}-cell nb)◊",
                "ms", 1e3,
                vs="floor"),
    ]
    return out


API_EDIT_GOALS = (
    Goal("ours", "<=", 0.004, f"{ISSUES}: kernel edit→peer over comms, p50 ≤ 4 ms (before, "
         "loopback socket: 4.0 ms)"),
    Goal("ours", "<=", 0.010, f"{ISSUES}: kernel edit→peer over comms, p99 ≤ 10 ms (before, "
         "loopback socket: 75 ms)", stat="p99"),
)
API_APPEND_GOALS = (
    Goal("ours", "<=", 1.0, f"{ISSUES}: 1,000 cells appended in the kernel, a peer has them all "
         "within 1 s (before, loopback socket: 1.34 s)"),
)


def _api_measures() -> list[Measure]:
    """The in-kernel API rows (the kernel's replica syncs over a comm on the kernel's own
    channels), for a kernel on this machine and on another host; their floor is a peer of
    the same sidecar making the same change (marked ※)."""
    out = []
    for prefix, where in (("kernel", "kernel"), ("kernel.remote", "kernel on another host")):
        out += [
            Measure(f"{prefix}.api_edit", f"notebook() API, {where}: edit→peer, over comms※",
                    "ms", 1e3, API_EDIT_GOALS, vs="floor"),
            Measure(f"{prefix}.api_append", f"notebook() API, {where}: 1,000 cells appended→"
                    "peer has all※", "s", 1.0, API_APPEND_GOALS, vs="floor"),
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
    ours: tuple[str, Recorder],
    theirs: tuple[str, Recorder],
    floor: Recorder,
    labels: dict[str, str],
) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of the report (the measures that were recorded) and footnotes. A measure
    compared with another system must be recorded for both, or this raises."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for m in MEASURES:
        other = theirs[1] if m.vs == "theirs" else floor
        a = _summary(ours[1], m.key)
        b = _summary(other, m.key) if m.vs != "none" else None
        if a is None and b is None:
            continue
        if a is None or (m.vs != "none" and b is None):
            raise ValueError(f"measure {m.key} recorded for only one side")
        assert a is not None
        sb = b if b is not None else summarize([])
        ratio = a["median"] / sb["median"] if sb["median"] else math.nan
        ratio_p99 = a["p99"] / sb["p99"] if sb["p99"] else math.nan
        label = m.label.format(**labels)
        row: dict[str, Any] = {
            "key": m.key, "label": label, "unit": m.unit, "scale": m.scale,
            "section": m.section, "vs": m.vs, "na": m.na,
            "ours": a, "theirs": sb, "ratio": ratio, "ratio_p99": ratio_p99,
            "lower_bound": {"ours": m.key in ours[1].lower_bounds,
                            "theirs": m.vs != "none" and m.key in other.lower_bounds},
            "goal": " & ".join(g.text(m.unit, m.scale) for g in m.goals) or None,
            "goal_source": "; ".join(g.source for g in m.goals) or None,
            "samples": {ours[0]: ours[1].samples.get(m.key, []),
                        ("floor" if m.vs == "floor" else theirs[0]):
                        other.samples.get(m.key, [])},
        }
        row["met"] = all(
            g.met(row, _summary(ours[1], g.floor) if g.floor else None)
            and not _unconfirmed(g, row["lower_bound"]) for g in m.goals
        ) if m.goals else None
        rows.append(row)
        sources = [(ours[0], ours[1])]
        if m.vs != "none":
            sources.append(("floor" if m.vs == "floor" else theirs[0], other))
        for who, rec in sources:
            for text in rec.notes.get(m.key, []):
                notes.append(f"{label.strip(' …')} — {who}: {text}")
    return rows, notes


def _unconfirmed(goal: Goal, bound: dict[str, bool]) -> bool:
    """Whether a lower bound (``bound``: per side) leaves the goal unknown: an upper limit
    on a lower bound, or on a ratio that is one; a lower limit on a ratio that is an upper
    bound; any ratio of two lower bounds."""
    if goal.on == "ours":
        return bound["ours"] and goal.op == "<="
    if bound["ours"] and bound["theirs"]:
        return True
    return (bound["ours"] and goal.op == "<=") or (bound["theirs"] and goal.op == ">=")


def _summary(rec: Recorder, key: str) -> dict[str, Any] | None:
    if key in rec.given:
        return rec.given[key]
    samples = rec.samples.get(key)
    return summarize(samples) if samples else None


HEAD = ["measure", "unit", "ours med", "p99", "N", "{other} med", "p99", "N", "ratio",
        "p99 ratio", "goal", "met?"]


def _bound_signs(r: dict[str, Any]) -> tuple[str, str, str]:
    """Prefixes for ours, theirs and the ratio: ``≥`` a lower bound, ``≤`` the ratio's upper
    bound (theirs a lower bound), ``~`` a ratio of two lower bounds."""
    bound = r.get("lower_bound") or {}
    a, b = bool(bound.get("ours")), bool(bound.get("theirs"))
    ratio = "~" if a and b else "≥" if a else "≤" if b else ""
    return "≥" if a else "", "≥" if b else "", ratio


def _cells(r: dict[str, Any]) -> tuple[list[str], bool]:
    cells = [r["label"], r["unit"]]
    starred = False
    signs = _bound_signs(r)
    for side, sign in (("ours", signs[0]), ("theirs", signs[1])):
        s = r[side]
        if side == "theirs" and r["vs"] == "none":
            cells += ["n/a", "", ""]
            continue
        p99 = sign + _fmt(s["p99"] * r["scale"]) + ("*" if s["p99_is_max"] else "")
        starred |= bool(s["p99_is_max"])
        cells += [sign + _fmt(s["median"] * r["scale"]), p99, str(s["n"])]
    met = "—" if r["met"] is None else ("yes" if r["met"] else "NO")
    cells += [signs[2] + _fmt(r["ratio"]), signs[2] + _fmt(r["ratio_p99"]), r["goal"] or "—",
              met]
    return cells, starred


def _render(rows: list[dict[str, Any]], other: str) -> tuple[list[str], bool]:
    head = [h.format(other=other) for h in HEAD]
    lines: list[list[str]] = []
    starred = False
    for r in rows:
        cells, star = _cells(r)
        starred |= star
        lines.append(cells)
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in (0, 1, 10) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [fmt(head), "  ".join("-" * w for w in widths), *(fmt(c) for c in lines)], starred


def table(rows: list[dict[str, Any]], notes: list[str], ours: str, theirs: str) -> str:
    """The tables as text: collaboration rows (ours vs theirs), then kernel rows (ours vs a
    plain kernel client)."""
    collab = [r for r in rows if r["section"] == "collab"]
    kernel = [r for r in rows if r["section"] == "kernel"]
    out: list[str] = []
    starred = False
    if collab:
        out.append(f"ours = {ours}; theirs = {theirs}; ratio = ours/theirs (of the medians; "
                   "p99 ratio: of the p99s)")
        lines, starred = _render(collab, "theirs")
        out += lines
    if kernel:
        if out:
            out.append("")
        out.append(f"Kernel workloads — ours = {ours}; theirs = n/a ({THEIRS_NO_KERNEL}).")
        out.append("floor = a plain jupyter_client kernel client of a plain python3 kernel "
                   "started by the same Jupyter server, running the same code and reading "
                   "iopub/shell itself (no document); ratio = ours/floor.")
        lines, star = _render(kernel, "floor")
        out += lines
        starred |= star
    keys = {r["key"] for r in rows}
    if starred:
        out.append("* N < 100: this is the maximum, not a true 99th percentile.")
    if any(k.startswith("open.cold.") for k in keys):
        out.append("† ours: from the request to the fork server, as the Jupyter server's "
                   "provisioner makes it (fork, file load, store), to the peer synced; theirs: "
                   "from the room request (PUT session) on a running server. 'from process "
                   "start': ours from a new interpreter; theirs from starting its server.")
    if any(k.startswith("open.warm.") for k in keys):
        out.append("‡ both from the WebSocket connect to synced. theirs' PUT session request, "
                   "which JupyterLab makes before joining, is made first and not timed here "
                   "(with it: a note, and for 1,000 cells the 'room open' row °); ours has none "
                   "(one sidecar, one room).")
    if "open.room.1000" in keys:
        out.append("° the open a user waits for, the server running: ours a jupyter server with "
                   "kernel_collab's extension, PUT /api/kernel-collab/rooms/{path} (starts the "
                   "sidecar and answers once it serves; the collaborative kernel launches "
                   "beside it), then a peer on its WebSocket "
                   "/api/kernel-collab/sync/{document_id}; theirs PUT "
                   "/api/collaboration/session/{path}, then a peer on its room (the same samples "
                   "as its 'open cold'). 'room open': the same request and a second peer while "
                   "the first stays.")
    if any(any(r.get("lower_bound", {}).values()) for r in rows):
        out.append("≥ a lower bound: a sample was taken at a cap (e.g. the store still being "
                   "written); ratio ≤ / ≥: its bound accordingly, ~ both sides bounds. A goal a "
                   "bound leaves unknown is not met.")
    if "commit" in keys:
        out.append("§ the sidecar's own timing of its group commits (SQLite; a small one on "
                   "the event loop, a large one in a worker thread) over the latency "
                   "workload, from its `stats` reply (N = commits); "
                   "share = commit p50 / edit→peer p50 (p99 column: p99 / p99). theirs: n/a, "
                   "pycrdt-store reports no commit timings (and relays before storing). "
                   "Event-loop lag: how much later than asked the sidecar's 50 ms sleeps "
                   "returned while peers were connected (its `stats` reply; N = samples).")
    if any(k.startswith(("latency.proxy.", "latency.direct.")) for k in keys):
        out.append("‖ ours: a jupyter server with kernel_collab's extension; PUT "
                   "/api/kernel-collab/rooms/{path}, then 11 peers on the WebSocket "
                   "/api/kernel-collab/sync/{document_id} (the server hands each connection "
                   "to the sidecar), and, in alternating rounds, 11 peers straight on the same "
                   "sidecar, and 11 on a second server set to relay "
                   "(--KernelCollabServer.sync_route=proxy, the same notebook in its own room); "
                   "cost = via server / direct (of the medians; p99 column: of the p99s). "
                   "theirs: its own 10-peer latency again (its peers always go through its "
                   "server).")
    if any(k.startswith("save.output.") for k in keys):
        out.append("♦ ours only (theirs: n/a, it runs no kernel without a browser): a cell of "
                   "the same room prints a stamped line every 50 ms, run by a peer through the "
                   "proxy; the .ipynb's directory is watched (watchfiles) and the file read at "
                   "each change; age = stamp of the newest line printed - stamp of the newest "
                   "line on disk, every 50 ms until the last line is on disk; 'before each "
                   "save' = its peak, the longest the file went stale (goal on the max).")
    if any(k.startswith("memory.") for k in keys):
        out.append("¶ VmRSS from /proc/PID/status of the process holding the document (ours: "
                   "the sidecar; theirs: the jupyter server), with one peer synced, minus the "
                   "same reading with only the 10-cell notebook open (ours: a sidecar of it; "
                   "theirs: the same server); 'closed': 2 s after the last peer left (theirs "
                   "run with YDocExtension.document_cleanup_delay=1 instead of its 60 s "
                   "default, so its room is dropped before that).")
    if any(k.startswith("latency.floor") for k in keys):
        out.append("▹ the floor of the edit rows: tests/benchmarks/broadcaster.py, a WebSocket "
                   "server in its own process that answers sync step 1 with the notebook's "
                   "initial state and relays every message to every peer (sender included: "
                   "its echo) with websockets.broadcast — no document, no store, no checks. "
                   "Both systems' peers cost what they cost here; a system adds the rest.")
    if any(k.startswith("rooms.") for k in keys):
        out.append("◇ full run only. ours: a jupyter server with kernel_collab, each notebook "
                   "opened by PUT /api/kernel-collab/rooms/{path} (kernel + sidecar, forked by "
                   "the server's fork server) and joined by one peer through the server; "
                   "memory = the server's VmRSS growth + the summed PSS of the sidecars and the "
                   "fork server (kernels not counted: theirs runs none), per notebook; CPU = "
                   "user + system time of those processes over the idle period, % of one core. "
                   "theirs: its server's VmRSS growth and CPU with the same notebooks open.")
    if any(k.endswith((".api_edit", ".api_append")) for k in keys):
        out.append("※ kernel_collab.notebook() in a collaborative kernel (its replica syncs with "
                   "the sidecar over a comm on the kernel's own channels); 'another host': a "
                   "network namespace with its own sshd, the kernel launched there over SSH by "
                   "gateway-provisioners' DistributedProvisioner wrapped by kernel-collab. "
                   "floor for these rows: the same change made by a peer of the same sidecar "
                   "(WebSocket), seen by the other peer — edit: the source set to time.time() "
                   "every 20 ms, one minimal text edit; append: 1,000 cells in one transaction.")
    if "kernel.running" in keys:
        out.append("◊ in the queue workload's notebook (its cells + 2), after the queue ran; "
                   "floor: execute_request → status 'busy' on the requesting client's own iopub "
                   "(there is no other peer to see it).")
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
