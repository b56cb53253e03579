"""Notebook history (issue #19): the store after a week of editing, listing, rebuilding.

    .venv/bin/python -m tests.benchmarks.history [--quick] [--no-peer] [--json FILE]

1. **A simulated week**: a script types 200,000 keystrokes (``--quick``: 10,000) into the cells
   of a 100-cell notebook, one Y transaction per keystroke as a browser sends them, with
   backspaces, pasted lines, cells inserted and deleted now and then, runs with small text
   outputs, a 1 MB plot (``--quick``: 0.25 MB) re-run every hour, explicit saves and a kernel
   restart a day, 9:00 to 18:00 on each of 7 days. Every change is one group commit with its
   record (``Commit``) as the room makes it, in ``SQLiteStore.append``'s transaction, at its
   simulated time; compaction (and so ``History.maintain``) runs when the sidecar's
   ``DocumentStore.wants_compaction`` says so, at the simulated time too. ``SQLiteStore.append``
   and ``compact`` take no time argument, so their few statements are repeated here with one
   (``_append``, ``_compact``). Reported: the store file (database + WAL), history's bytes, the
   versions kept, and whether history is within the default budget (64 MiB).
2. **Listing** that notebook's history: ``History.versions()`` p50/p99 (goal ≤ 100 ms), and
   rebuilding random versions of it (``History.snapshot()``).
3. **Rebuilding** versions of a 1,000-cell notebook with a history of 3,000 keystrokes
   (``--quick``: 1,000) made the same way: ``History.snapshot()`` of random versions,
   p50/p99 (goal ≤ 200 ms).

The peer: jupyter-collaboration keeps every Y update in pycrdt-store's ``SQLiteYStore``,
never thinned. ``history_peer.py``, run in ``tests/benchmarks/.peer-venv`` while the week is
replayed, stores the same updates (read from a file as they are made), then lists them as
its timeline handler does (every update read back and applied one by one to a fork), for at
most ``--timeline-budget`` seconds. Timings are taken once the peer is done. The stores are
on tmpfs when there is one (pycrdt-store commits, so fsyncs, each update); sizes do not
depend on the file system.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from pycrdt import Array, Doc, Map, Text, TransactionEvent

from kernel_collab.notebook_core.cells import shared_notebook
from kernel_collab.notebook_core.updates import merge as merge_in_groups
from kernel_collab.protocol import STATE_KEY
from kernel_collab.sidecar.docstore import ROW_OVERHEAD, DocumentStore
from kernel_collab.store import Commit, Policy, SQLiteStore
from kernel_collab.store.history import DAY, HOUR, MINUTE

HERE = Path(__file__).resolve().parent
EMPTY_UPDATE = b"\x00\x00"
END_OF_STREAM = 0xFFFFFFFF
NOTEBOOK_PATH = "notebook.ipynb"
"""Length that ends the peer's stream file."""
GOAL_LIST_S = 0.100
GOAL_SNAPSHOT_S = 0.200

PEOPLE = [
    {"kind": "person", "name": "Alice", "username": "alice"},
    {"kind": "person", "name": "Bob", "username": "bob"},
    {"kind": "script", "name": "agent"},
]
KERNEL = {"kind": "kernel", "name": "kernel"}
WORDS = ("df", "x", "y", "np", "pd", "plt", "model", "data", "i", "result", "value", "items",
         "self", "config", "path", "0", "1", "10", "0.5", "True", "None", "len", "range",
         "print", "return", "import", "for", "in", "if", "else", "def", "fit", "mean",
         "groupby", "read_csv", "append", "=", "+", "-", "*", "==", "(", ")", "[", "]", ":",
         ",", ".", "'label'", "# TODO")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Plan:
    """One simulated stretch of editing."""

    edits: int
    """Keystrokes (each its own commit), runs, saves and plots come on top."""
    cells: int
    days: int
    plot_bytes: int = 0
    """Size of the plot re-run every hour (0: none)."""
    outputs_share: float = 0.0
    """Share of the initial code cells that already have a text output."""
    seed: int = 19


@dataclass(slots=True)
class Counts:
    """What a replay did."""

    commits: int = 0
    state_commits: int = 0
    runs: int = 0
    plots: int = 0
    saves: int = 0
    restarts: int = 0
    inserted: int = 0
    deleted: int = 0
    compactions: int = 0
    compaction_times: list[float] = field(default_factory=list)
    """Each compaction's duration, history's maintenance included (the room's next commit
    waits for it)."""
    update_bytes: int = 0
    maintenance: list[str] = field(default_factory=list)


def _line(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9)))


def _source(rng: random.Random, lines: int) -> str:
    return "\n".join(_line(rng) for _ in range(lines))


class Replay:
    """Edits a notebook and commits each change as the sidecar's room does: one row per
    group commit with its record, into the store, at simulated times."""

    def __init__(self, store: SQLiteStore, plan: Plan, start: float,
                 stream: IO[bytes] | None = None):  # fmt: skip
        self.store = store
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.clock = start
        self.stream = stream
        self.counts = Counts()
        self.doc: Doc[Any] = Doc()
        self.nb = shared_notebook(self.doc)  # as the sidecar's (no document-wide undo)
        self.nb.set(self._initial())
        self.ycells = self.nb.ycells
        self.cells: list[Map[Any]] = list(self.ycells)
        self.lengths = [len(str(c["source"])) for c in self.cells]
        self.status: Map[Any] = Map()
        self.doc.get("state", type=Map)[STATE_KEY] = self.status
        self.plot_cell: Map[Any] | None = None
        if plan.plot_bytes:
            self.plot_cell = next(c for c in self.cells[10:] if c["cell_type"] == "code")
        initial = self.doc.get_update()
        self.document_id, _ = store.create(NOTEBOOK_PATH, initial, None, None)
        self._stream(initial)
        self.policy = DocumentStore(Path(store.path))
        """The sidecar's compaction policy: its counters are kept as its ``append`` and
        ``compact`` keep them, and its ``wants_compaction`` decides."""
        self.policy.snapshot_bytes = len(initial)
        self.execution_count = 0
        self._pending: list[bytes] = []
        self.doc.observe(self._on_transaction)

    def _initial(self) -> dict[str, Any]:
        rng = self.rng
        cells: list[dict[str, Any]] = []
        for i in range(self.plan.cells):
            if i % 4 == 3:
                cells.append({"id": f"cell-{i}", "cell_type": "markdown", "metadata": {},
                              "source": "## " + _source(rng, rng.randint(1, 4))})  # fmt: skip
                continue
            outputs: list[dict[str, Any]] = []
            if rng.random() < self.plan.outputs_share:
                outputs = [{"output_type": "stream", "name": "stdout",
                            "text": _source(rng, rng.randint(1, 6)) + "\n"}]  # fmt: skip
            cells.append({"id": f"cell-{i}", "cell_type": "code", "metadata": {},
                          "source": _source(rng, rng.randint(2, 10)), "outputs": outputs,
                          "execution_count": (i + 1) if outputs else None})  # fmt: skip
        return {"cells": cells, "metadata": {"kernelspec": {"name": "python3",
                "display_name": "Python 3", "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}  # fmt: skip

    def _on_transaction(self, event: TransactionEvent) -> None:
        if event.update != EMPTY_UPDATE:
            self._pending.append(event.update)

    def _stream(self, update: bytes) -> None:
        if self.stream is not None and update != EMPTY_UPDATE:
            self.stream.write(struct.pack("<I", len(update)))
            self.stream.write(update)

    # -- committing, as the room does --------------------------------------------------------

    def commit(self, authors: list[dict[str, Any]], *, kind: str = "edit", label: str = "",
               pinned: bool = False, dt: float = 0.0) -> None:  # fmt: skip
        """One group commit of what changed since the last one (``Room._commit_and_relay``),
        then compaction if the policy wants it; the clock then moves on by ``dt``."""
        batch, self._pending = self._pending, []
        if not batch:
            if not pinned:
                return
            batch = [EMPTY_UPDATE]  # Room.mark: committed even if nothing else changed
        update = batch[0] if len(batch) == 1 else merge(batch)
        record = (Commit(cells=True, authors=authors, kind=kind, label=label, pinned=True)
                  if pinned else Commit(cells=bool(authors), authors=authors))  # fmt: skip
        _append(self.store, self.document_id, [update], record, self.clock)
        self._stream(update)
        self.counts.commits += 1
        self.counts.state_commits += not authors and not pinned
        self.counts.update_bytes += len(update)
        self.policy.pending_count += 1
        self.policy.pending_bytes += len(update) + ROW_OVERHEAD
        if self.policy.wants_compaction():
            started = time.perf_counter()
            snapshot = self.doc.get_update()
            self.counts.maintenance += _compact(self.store, self.document_id, snapshot,
                                                self.clock)  # fmt: skip
            self.policy.snapshot_bytes = len(snapshot)
            self.policy.pending_bytes = self.policy.pending_count = 0
            self.counts.compactions += 1
            self.counts.compaction_times.append(time.perf_counter() - started)
        self.clock += dt

    def set_state(self, key: str, value: Any, dt: float = 0.3) -> None:
        """A change of the state map only (a hidden row)."""
        self.status[key] = value
        self.commit([], dt=dt)

    # -- what people do ----------------------------------------------------------------------

    def type_into(self, index: int, author: dict[str, Any], keystrokes: int) -> None:
        """Keystrokes at a cursor in one cell, each its own transaction and commit."""
        rng = self.rng
        text: Text = self.cells[index]["source"]
        cursor = self.lengths[index] if rng.random() < 0.7 else rng.randint(0, self.lengths[index])
        pending = ""
        for _ in range(keystrokes):
            roll = rng.random()
            if roll < 0.1 and cursor > 0:
                del text[cursor - 1 : cursor]
                cursor -= 1
                self.lengths[index] -= 1
            elif roll < 0.12:
                pasted = _line(rng) + "\n"
                text.insert(cursor, pasted)
                cursor += len(pasted)
                self.lengths[index] += len(pasted)
            else:
                if not pending:
                    pending = "\n" + _line(rng)
                text.insert(cursor, pending[0])
                pending = pending[1:]
                cursor += 1
                self.lengths[index] += 1
            self.commit([author], dt=rng.uniform(0.1, 0.4))

    def insert_cell(self, index: int, author: dict[str, Any]) -> None:
        """A new empty code cell (typed into afterwards)."""
        cell = self.nb.create_ycell({"cell_type": "code", "source": "", "metadata": {},
                                     "outputs": [], "execution_count": None})  # fmt: skip
        self.ycells.insert(index, cell)
        self.cells.insert(index, self.ycells[index])
        self.lengths.insert(index, 0)
        self.counts.inserted += 1
        self.commit([author], dt=1.0)

    def delete_cell(self, index: int, author: dict[str, Any]) -> None:
        """Delete one cell (never the plot's)."""
        if self.cells[index] == self.plot_cell:
            return
        del self.ycells[index]
        del self.cells[index]
        del self.lengths[index]
        self.counts.deleted += 1
        self.commit([author], dt=1.0)

    def run(self, cell: Map[Any], outputs: list[dict[str, Any]]) -> None:
        """A run as the sidecar records it: queued/busy (state), outputs cleared and new ones
        (the kernel's), the execution count, idle (state)."""
        self.set_state("kernel", "busy")
        youtputs: Array[Any] = cell["outputs"]
        with self.doc.transaction():
            youtputs.clear()
            for output in outputs:
                out = dict(output)
                if out["output_type"] == "stream":
                    out["text"] = Text(out["text"])
                youtputs.append(Map(out))
        self.commit([KERNEL], dt=0.5)
        self.execution_count += 1
        cell["execution_count"] = self.execution_count
        self.commit([KERNEL], dt=0.1)
        self.set_state("kernel", "idle", dt=1.0)
        self.counts.runs += 1

    def run_text(self, cell: Map[Any]) -> None:
        """A run with a small text output (most runs)."""
        rng = self.rng
        if rng.random() < 0.2:
            self.run(cell, [])
            return
        text = _source(rng, rng.randint(1, 20)) + "\n"
        if rng.random() < 0.8:
            self.run(cell, [{"output_type": "stream", "name": "stdout", "text": text}])
        else:
            self.run(cell, [{"output_type": "execute_result", "metadata": {},
                             "execution_count": self.execution_count + 1,
                             "data": {"text/plain": text}}])  # fmt: skip

    def run_plot(self) -> None:
        """The plot cell re-run: a new ``plot_bytes`` image (incompressible, like a PNG)."""
        assert self.plot_cell is not None
        png = base64.b64encode(self.rng.randbytes(self.plan.plot_bytes * 3 // 4)).decode()
        self.run(self.plot_cell, [{"output_type": "display_data", "metadata": {},
                                   "data": {"image/png": png,
                                            "text/plain": "<Figure size 640x480>"}}])  # fmt: skip
        self.counts.plots += 1

    # -- the week ----------------------------------------------------------------------------

    def day(self, day_start: float, edits: int) -> None:
        """``edits`` keystrokes in sessions between 9:00 and 18:00, the plot re-run each hour
        on the half hour, a kernel restart in the morning."""
        rng = self.rng
        start, end = day_start + 9 * HOUR, day_start + 18 * HOUR
        self.clock = max(self.clock, start)
        self.commit([], kind="restart", label="kernel restarted by Alice", pinned=True, dt=5.0)
        self.counts.restarts += 1
        sessions = []
        left = edits
        while left > 0:
            n = min(left, rng.randint(40, 400))
            sessions.append(n)
            left -= n
        typing = edits * 0.25 + len(sessions) * 5.0  # keystrokes and runs, roughly
        idle = max(0.0, end - self.clock - typing)
        weights = [rng.expovariate(1.0) for _ in sessions]
        total = sum(weights)
        next_plot = start + 30 * MINUTE
        for n, weight in zip(sessions, weights, strict=True):
            self.clock += idle * weight / total
            while self.plot_cell is not None and self.clock >= next_plot and next_plot < end:
                self.run_plot()
                next_plot += HOUR
            self.session(n)
        while self.plot_cell is not None and next_plot < end:  # the rest of the day's plots
            self.clock = max(self.clock, next_plot)
            self.run_plot()
            next_plot += HOUR

    def session(self, keystrokes: int) -> None:
        """Someone works on one cell (sometimes a new one, or deletes one first); then often
        runs it, sometimes saves."""
        rng = self.rng
        author = rng.choices(PEOPLE, weights=(0.5, 0.35, 0.15))[0]
        index = rng.randrange(len(self.cells))
        roll = rng.random()
        if roll < 0.1 or len(self.cells) < self.plan.cells * 0.9:
            index += 1
            self.insert_cell(index, author)
        elif roll < 0.2 or len(self.cells) > self.plan.cells * 1.1:
            self.delete_cell(index, author)
            index = min(index, len(self.cells) - 1)
        self.type_into(index, author, keystrokes)
        cell = self.cells[index]
        if cell["cell_type"] == "code" and cell != self.plot_cell and rng.random() < 0.6:
            self.run_text(cell)
        if rng.random() < 0.1:
            self.commit([], kind="save", label=f"saved by {author['name']}", pinned=True,
                        dt=1.0)  # fmt: skip
            self.counts.saves += 1

    def replay(self, start: float, progress: Callable[[str], None]) -> None:
        """Every day of the plan, from ``start`` (a midnight)."""
        total, days = self.plan.edits, self.plan.days
        for d in range(days):
            self.day(start + d * DAY, total * (d + 1) // days - total * d // days)
            progress(f"day {d + 1}/{self.plan.days}: {self.counts.commits:,} commits, "
                     f"{self.counts.compactions} compactions")  # fmt: skip


def merge(group: list[bytes]) -> bytes:
    """Several transactions committed as one group (merged as the room merges them)."""
    return merge_in_groups(group)


# -- the store's code path, at a simulated time ------------------------------------------------


def _append(store: SQLiteStore, document_id: str, updates: list[bytes], record: Commit,
            at: float) -> int:  # fmt: skip
    """``SQLiteStore.append`` with the history row at ``at`` (its own statements)."""
    with store._transaction():
        store._db.executemany("INSERT INTO updates (document_id, data) VALUES (?, ?)",
                              ((document_id, u) for u in updates))  # fmt: skip
        update = updates[0] if len(updates) == 1 else merge(updates)
        return store.history.record(
            document_id, update, cells=record.cells, authors=record.authors, kind=record.kind,
            label=record.label, pinned=record.pinned, at=at)  # fmt: skip


def _compact(store: SQLiteStore, document_id: str, snapshot: bytes, now: float) -> list[str]:
    """``SQLiteStore.compact`` with history's maintenance at ``now`` (its own statements)."""
    upto = store.last_update_id(document_id)
    with store._transaction():
        store._db.execute("UPDATE documents SET snapshot=?, updated=? WHERE document_id=?",
                          (zlib.compress(snapshot, 1), now, document_id))  # fmt: skip
        store._db.execute("DELETE FROM updates WHERE document_id=? AND id<=?",
                          (document_id, upto))  # fmt: skip
    done = store.history.maintain(document_id, now=now)
    store.checkpoint()
    return done


# -- measuring ---------------------------------------------------------------------------------


def file_bytes(path: Path) -> int:
    """A database's file and its WAL (and rollback journal)."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-journal"))
               if p.exists())  # fmt: skip


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


def next_midnight() -> float:
    """The simulated week starts at the next midnight (UTC), after the real time at which
    ``SQLiteStore.create`` records version 0."""
    return (time.time() // DAY + 1) * DAY


@dataclass(slots=True)
class Timing:
    """Latencies of one operation."""

    runs: int
    p50: float
    p99: float
    slowest: int | None = None
    """The version that took longest (rebuilding)."""


def time_listing(store: SQLiteStore, document_id: str, runs: int) -> Timing:
    """``History.versions()``, ``runs`` times."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        store.history.versions(document_id)
        times.append(time.perf_counter() - t0)
    return Timing(runs, *percentiles(times))


def time_rebuilding(store: SQLiteStore, document_id: str, samples: int, seed: int) -> Timing:
    """``History.snapshot()`` of ``samples`` random versions."""
    listed = [v.version for v in store.history.versions(document_id)]
    chosen = random.Random(seed).sample(listed, min(samples, len(listed)))
    times = []
    for version in chosen:
        t0 = time.perf_counter()
        store.history.snapshot(document_id, version)
        times.append(time.perf_counter() - t0)
    slowest = chosen[max(range(len(times)), key=times.__getitem__)]
    return Timing(len(chosen), *percentiles(times), slowest=slowest)


@dataclass(slots=True)
class Week:
    """The simulated week's figures."""

    plan: Plan
    counts: Counts
    replay_s: float
    file_bytes: int
    history_bytes: int
    """``History.size()``: the rows' and checkpoints' bytes (what the budget counts)."""
    history_pages: int
    """``SQLiteStore.history_bytes()``: the file pages of history's tables and indexes."""
    versions: int
    pinned: int
    flattened: int
    document_id: str
    listing: Timing | None = None
    rebuilding: Timing | None = None


def week(db: Path, plan: Plan, stream: IO[bytes] | None,
         progress: Callable[[str], None]) -> Week:  # fmt: skip
    """Replay a week into a store."""
    store = SQLiteStore(db)
    try:
        started = time.perf_counter()
        replay = Replay(store, plan, next_midnight(), stream)
        replay.replay(replay.clock, progress)
        replay_s = time.perf_counter() - started
        if stream is not None:
            stream.write(struct.pack("<I", END_OF_STREAM))
            stream.flush()
        doc_id = replay.document_id
        listed = store.history.versions(doc_id)
        sizes = (file_bytes(db), store.history.size(doc_id), store.history_bytes())
        return Week(plan, replay.counts, replay_s, *sizes, len(listed),
                    sum(v.pinned for v in listed), sum(v.outputs_dropped for v in listed),
                    doc_id)  # fmt: skip
    finally:
        store.close()


def time_week(db: Path, w: Week, runs: int, samples: int) -> None:
    """Time listing the week's versions and rebuilding some (once the peer is done: the
    machine is quiet)."""
    store = SQLiteStore(db)
    try:
        w.listing = time_listing(store, w.document_id, runs)
        w.rebuilding = time_rebuilding(store, w.document_id, samples, w.plan.seed)
    finally:
        store.close()


@dataclass(slots=True)
class Large:
    """The 1,000-cell notebook's figures."""

    plan: Plan
    counts: Counts
    versions: int
    rebuilding: Timing
    pending: int
    """Commits stored since the last compaction's snapshot."""
    reopening: Timing
    """``SQLiteStore.load``: what a sidecar reads as it starts (snapshot + pending, merged)."""


def time_reopening(store: SQLiteStore, runs: int) -> Timing:
    """``SQLiteStore.load`` of the replayed notebook, ``runs`` times."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        store.load(NOTEBOOK_PATH)
        times.append(time.perf_counter() - t0)
    return Timing(runs, *percentiles(times))


def large(tmp: Path, plan: Plan, samples: int, progress: Callable[[str], None]) -> Large:
    """A 1,000-cell notebook edited for a day; then random versions rebuilt."""
    store = SQLiteStore(tmp / "large.db")
    try:
        replay = Replay(store, plan, next_midnight())
        replay.replay(replay.clock, progress)
        doc_id = replay.document_id
        pending = store._db.execute("SELECT COUNT(*) FROM updates WHERE document_id=?",
                                    (doc_id,)).fetchone()[0]  # fmt: skip
        return Large(plan, replay.counts, len(store.history.versions(doc_id)),
                     time_rebuilding(store, doc_id, samples, plan.seed), pending,
                     time_reopening(store, samples))  # fmt: skip
    finally:
        store.close()


# -- the peer ----------------------------------------------------------------------------------


def start_peer(peer_venv: Path, stream: Path, tmp: Path,
               timeline_budget: float) -> subprocess.Popen[str] | str:  # fmt: skip
    """Start ``history_peer.py`` in the peer's venv (or say why not)."""
    python = peer_venv / "bin" / "python"
    if not python.exists():
        return f"no peer venv at {peer_venv} (tests/benchmarks/run.sh creates it)"
    probe = subprocess.run([str(python), "-c", "import pycrdt.store, jupyter_ydoc"],
                           capture_output=True, text=True)  # fmt: skip
    if probe.returncode:
        return f"pycrdt.store is not importable in {peer_venv}"
    return subprocess.Popen(
        [str(python), str(HERE / "history_peer.py"), str(stream), str(tmp / "ystore.db"),
         str(timeline_budget)], stdout=subprocess.PIPE, text=True)  # fmt: skip


def wait_peer(proc: subprocess.Popen[str] | str) -> dict[str, Any]:
    """The peer's figures, or ``{"error": why}``."""
    if isinstance(proc, str):
        return {"error": proc}
    out, _ = proc.communicate()
    if proc.returncode:
        return {"error": f"history_peer.py exited with {proc.returncode}"}
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# -- the table ---------------------------------------------------------------------------------


def mib(n: float) -> str:
    """Bytes in MiB."""
    return f"{n / 2**20:.1f} MiB"


def ms(t: Timing) -> str:
    """p50 / p99 in milliseconds."""
    def one(s: float) -> str:
        return f"{s * 1000:.1f}" if s < 0.1 else f"{s * 1000:.0f}"

    return f"{one(t.p50)} / {one(t.p99)} ms"


def mark(ok: bool) -> str:
    """✓ or ✗."""
    return "✓" if ok else "✗"


def table(w: Week, big: Large, peer: dict[str, Any], budget: int, elapsed: float,
          quick: bool, where: str) -> str:  # fmt: skip
    """The Markdown table and its note."""
    c, plan = w.counts, w.plan
    assert w.listing is not None and w.rebuilding is not None
    compactions = Timing(c.compactions, *percentiles(c.compaction_times or [0.0]))
    has_peer = "error" not in peer
    peer_name = (f"jupyter-collaboration (pycrdt-store {peer['version']})" if has_peer
                 else "jupyter-collaboration (pycrdt-store)")  # fmt: skip
    if has_peer:
        size = (f"{mib(peer['bytes'])} ({peer['updates']:,} updates)",
                f"{w.file_bytes / peer['bytes']:.2f}")
        steps = f"{peer['timeline']:,} timeline steps"
        ratio = w.listing.p50 / peer["timeline_s"]
        if peer["timeline_applied"] < peer["timeline_of"]:  # stopped at its time budget
            listing = (f"> {peer['timeline_s']:.0f} s (timeline, stopped after "
                       f"{peer['timeline_applied']:,} of {peer['timeline_of']:,} updates)",
                       f"< {ratio:.1g}")
            steps = f"{peer['timeline']:,} timeline steps in its first {peer['timeline_applied']:,}"
        else:
            listing = (f"{peer['timeline_s']:.1f} s (timeline, 1 run)", f"{ratio:.1g}")
    else:
        size, steps, listing = ("n/a", ""), "n/a", ("n/a", "")
    rows = [
        f"| history (issue #19) | kernel_collab | {peer_name} | ratio | goal |",
        "|---|---|---|---|---|",
        f"| store file after a simulated week (db + WAL) | {mib(w.file_bytes)} | {size[0]} "
        f"| {size[1]} | |",
        f"| history in it: rows + checkpoints (file pages) | {mib(w.history_bytes)} "
        f"({mib(w.history_pages)}) | all of it | | ≤ {mib(budget)}, the default budget "
        f"{mark(w.history_bytes <= budget)} |",
        f"| versions kept of {c.commits:,} commits (pinned; outputs dropped) | {w.versions:,} "
        f"({w.pinned}; {w.flattened}) | {steps} | | |",
        f"| listing them (`History.versions()`), p50 / p99 | {ms(w.listing)} | {listing[0]} "
        f"| {listing[1]} | ≤ 100 ms {mark(w.listing.p99 <= GOAL_LIST_S)} |",
        f"| rebuilding one of them (`History.snapshot()`), p50 / p99 | {ms(w.rebuilding)} "
        f"| n/a | | ≤ 200 ms {mark(w.rebuilding.p99 <= GOAL_SNAPSHOT_S)} |",
        f"| rebuilding a version of a {big.plan.cells:,}-cell notebook ({big.counts.commits:,} "
        f"commits, {big.versions:,} versions), p50 / p99 | {ms(big.rebuilding)} | n/a | "
        f"| ≤ 200 ms {mark(big.rebuilding.p99 <= GOAL_SNAPSHOT_S)} |",
        f"| reopening that notebook from the store (`SQLiteStore.load`: its snapshot and the "
        f"{big.pending:,} commits since, merged), p50 / p99 | {ms(big.reopening)} | n/a | | |",
    ]
    note = (
        f"{'Quick run (`--quick`)' if quick else 'Full run'}, {elapsed:.0f} s, stores in "
        f"{where}. The week: {plan.edits:,} keystrokes into a {plan.cells}-cell notebook, "
        f"each its own commit, 9:00 to 18:00 on {plan.days} days; {c.inserted} cells inserted "
        f"and {c.deleted} deleted; {c.runs:,} runs, {c.plots} of them the hourly "
        f"{plan.plot_bytes / 1e6:g} MB plot, most others with a small text output; "
        f"{c.saves} saves and {c.restarts} kernel restarts (pinned). In all {c.commits:,} "
        f"commits ({c.state_commits:,} of the state map only, hidden), "
        f"{mib(c.update_bytes)} of updates, {c.compactions} compactions with history's "
        f"maintenance at the sidecar's policy (each {compactions.p50 * 1000:.0f} ms at the "
        f"median, at most {max(c.compaction_times, default=0) * 1000:,.0f} ms; "
        f"{sum(c.compaction_times):.0f} s of the replay's {w.replay_s:.0f} s). Listing: "
        f"{w.listing.runs} runs; rebuilding: "
        f"{w.rebuilding.runs} random versions (slowest: {w.rebuilding.slowest}). The "
        f"{big.plan.cells:,}-cell notebook ({big.plan.outputs_share:.0%} of its code cells "
        f"with an output): {big.plan.edits:,} keystrokes and its runs in one day, "
        f"{big.counts.compactions} compaction{'' if big.counts.compactions == 1 else 's'}; "
        f"{big.rebuilding.runs} random versions "
        f"(slowest: {big.rebuilding.slowest})."
    )
    if has_peer:
        note += (
            f" The peer stored the same {peer['updates']:,} Y updates (its room writes each "
            "one) in pycrdt-store's `SQLiteYStore` with jupyter-collaboration's defaults "
            f"(never squashed; a checkpoint every 100 updates; {peer['write_s']:.0f} s). Its "
            "timeline (`GET /api/collaboration/timeline`) reads every update back and applies "
            "them one by one to a fork with an undo manager; a version is then reached by "
            "undo steps (not measured)."
        )
    else:
        note += f" No peer: {peer['error']}."
    return "\n".join(rows) + "\n\n" + note + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print the table."""
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.history",
                                description="Notebook history: store size, listing, "
                                "rebuilding (issue #19).")  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="10,000 keystrokes, a 0.25 MB plot (~10 s)")
    p.add_argument("--peer-venv", type=Path, default=HERE / ".peer-venv")
    p.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True,
                   help="replay the week into jupyter-collaboration's store too (default)")
    p.add_argument("--timeline-budget", type=float, default=None, metavar="S",
                   help="stop the peer's timeline listing after S s (default: 5, full: 20)")
    p.add_argument("--dir", type=Path, help="where the stores go (default: /dev/shm if any)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    t0 = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - t0:5.0f} s] {message}", file=sys.stderr, flush=True)

    # --quick: a twentieth of the keystrokes, a quarter of the plot (compacting a 64 MB store
    # took 15 of its 24 s; the budget is then not reached: the full run shows it).
    week_plan = Plan(edits=10_000 if args.quick else 200_000, cells=100, days=7,
                     plot_bytes=250_000 if args.quick else 1_000_000)  # fmt: skip
    large_plan = Plan(edits=1_000 if args.quick else 3_000, cells=1_000, days=1,
                      outputs_share=0.5, seed=20)  # fmt: skip
    # On tmpfs when there is one: pycrdt-store commits (and fsyncs) each update, which would
    # take it an hour, and kernel_collab's WAL checkpoints fsync too; sizes do not depend on
    # the file system.
    shm = Path("/dev/shm")
    where = args.dir or (shm if shm.is_dir() and os.access(shm, os.W_OK) else None)
    with tempfile.TemporaryDirectory(prefix="kc-history-bench-", dir=where) as name:
        tmp = Path(name)
        stream_path = tmp / "updates.bin"
        peer: subprocess.Popen[str] | str = "not run (--no-peer)"
        with stream_path.open("wb") as stream:
            if args.peer:
                budget = args.timeline_budget or (2.0 if args.quick else 20.0)
                peer = start_peer(args.peer_venv, stream_path, tmp, budget)
            feeding = not isinstance(peer, str)
            progress("the week" + (" (the peer stores the same updates meanwhile)"
                                   if feeding else ""))  # fmt: skip
            try:
                w = week(tmp / "week.db", week_plan, stream if feeding else None, progress)
            except BaseException:
                if not isinstance(peer, str):
                    peer.kill()  # it would wait for the end of the stream forever
                raise
        progress(f"the week: {mib(w.file_bytes)}, {w.versions} versions")
        if not isinstance(peer, str):
            progress("waiting for the peer")
        peer_result = wait_peer(peer)
        progress("listing and rebuilding the week's versions")
        time_week(tmp / "week.db", w, 30 if args.quick else 100, 30 if args.quick else 100)
        progress("the 1,000-cell notebook")
        big = large(tmp, large_plan, 40 if args.quick else 200, progress)
    out = table(w, big, peer_result, Policy().max_bytes, time.perf_counter() - t0, args.quick,
                str(where or tempfile.gettempdir()))  # fmt: skip
    print(out)
    if args.json:
        args.json.write_text(json.dumps({"week": asdict(w), "large": asdict(big),
                                         "peer": peer_result}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
