"""Soak: 50 peers editing and a kernel printing, for 1 minute (10 with ``pytest --soak``).

Memory and store are sampled every few seconds; the growth *rates* over the second half of
the run must stay within bounds (the store is compacted, the document's content is bounded),
and every peer converges at the end. The 10-minute run also holds the sidecar to a bare
replica of the same document in its own process (``tests/replica_process.py``): Y keeps an item
for every deleted run of text, so the document itself grows with edits spread over many cells;
the sidecar may grow at most 0.5 MiB/min faster than that.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.files import write_notebook
from tests.jupyter_server_process import JupyterServer
from tests.kernel_helpers import ask
from tests.peers import NotebookPeer

pytestmark = pytest.mark.anyio

PEERS = 50
CELLS = 10
EDIT_PERIOD = 0.5
"""Seconds between two edits of one peer (50 peers: ~100 edits/s in all)."""
SAMPLE_PERIOD = 2.0
OWN_GROWTH_LIMIT = 0.5
"""MiB/min the sidecar may grow faster than a bare replica of its document (10-minute soak)."""
PRINTER = (
    "import time\n"
    "for i in range({n}):\n"
    "    print(f'\\rtick {{i}}', end='', flush=True)\n"
    "    time.sleep(0.05)\n"
    "print()\n"
)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _store_mib(root: Path) -> float:
    """The store's files, less the pages history takes (it has its own budget: every commit
    of the last ten minutes is a version)."""
    files = sum(p.stat().st_size for p in root.glob(".kernel_collab.db*"))
    db = sqlite3.connect(f"file:{root / '.kernel_collab.db'}?mode=ro", uri=True)
    try:
        history: int = db.execute("SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name LIKE "
                             "'%history%'").fetchone()[0]  # fmt: skip
    finally:
        db.close()
    return (files - history) / 2**20


@contextlib.asynccontextmanager
async def _bare_replica(url: str, token: str) -> AsyncIterator[int]:
    """A bare replica of the document in its own process (its pid), synced on entry."""
    command = [sys.executable, "-m", "tests.replica_process", url, token]
    async with await anyio.open_process(command, stderr=None) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        output = b""
        while not output.endswith(b"\n"):
            output += await proc.stdout.receive()
        assert output == b"synced\n"
        yield proc.pid
        await proc.stdin.aclose()  # it leaves


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (units per minute) of (seconds, value) points."""
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    return 60 * sum((t - mx) * (v - my) for t, v in points) / var if var else 0.0


@pytest.mark.timeout(20 * 60)  # the 10-minute soak (--soak) must run to its end
async def test_fifty_peers_and_a_printing_kernel_for_a_while(
    server: JupyterServer, request: pytest.FixtureRequest,
    report_figure: Callable[[str], None],
) -> None:
    minutes = 10.0 if request.config.getoption("--soak") else 1.0
    seconds = 60 * minutes
    nb = write_notebook(server.root / "soak.ipynb", [
        PRINTER.format(n=int(seconds / 0.05) + 40), *[f"x = {i}" for i in range(CELLS)],
    ])  # fmt: skip
    await server.start_session("soak.ipynb")
    record = server.sidecar(nb)
    url, token, pid = record["url"], record["token"], int(record["pid"])
    samples: list[dict[str, float]] = []
    edits = 0
    rng = random.Random(1)

    async with contextlib.AsyncExitStack() as stack:
        peers = [await stack.enter_async_context(NotebookPeer.connect(url, token))
                 for _ in range(PEERS)]  # fmt: skip
        replica = await stack.enter_async_context(_bare_replica(url, token))
        assert (await ask(url, token, {"type": "execute", "cell_id": "cell-0"}))["ok"]
        start = time.monotonic()
        deadline = start + seconds

        async def edit(peer: NotebookPeer, n: int) -> None:
            nonlocal edits
            await anyio.sleep(rng.uniform(0, EDIT_PERIOD))
            while time.monotonic() < deadline:
                cell = 1 + rng.randrange(CELLS)
                text = peer.notebook.ycells[cell]["source"]
                with peer.doc.transaction():  # bounded content: replace a short tail
                    if len(text) > 60:
                        del text[0:20]
                    text += f" p{n}"
                edits += 1
                await anyio.sleep(EDIT_PERIOD)

        async def sample() -> None:
            while time.monotonic() < deadline:
                samples.append({"t": time.monotonic() - start, "rss": _rss_mib(pid),
                                "replica": _rss_mib(replica), "store": _store_mib(server.root),
                                "ipynb": nb.stat().st_size / 2**20})  # fmt: skip
                await anyio.sleep(SAMPLE_PERIOD)

        async with anyio.create_task_group() as tg:
            for n, peer in enumerate(peers):
                tg.start_soon(edit, peer, n)
            tg.start_soon(sample)
        for peer in peers:
            await peer.flush()
        final: dict[str, Any] = peers[0].notebook.get()
        for peer in peers[1:]:  # everyone converges on the same notebook
            await peer.wait_until(lambda p: [c["source"] for c in p.notebook.get()["cells"]]
                                  == [c["source"] for c in final["cells"]])  # fmt: skip
    half = [s for s in samples if s["t"] >= seconds / 2]
    rss_rate = _slope([(s["t"], s["rss"]) for s in half])
    replica_rate = _slope([(s["t"], s["replica"]) for s in half])
    store_rate = _slope([(s["t"], s["store"]) for s in half])
    end = samples[-1]
    report_figure(f"soak: {edits} edits, {PEERS} peers for {minutes:g} min (seed 1); sidecar RSS "
          f"{samples[0]['rss']:.0f} → {end['rss']:.0f} MiB ({rss_rate:+.2f} MiB/min over the "
          f"second half; a bare replica of the document {replica_rate:+.2f}); store "
          f"{end['store']:.2f} MiB ({store_rate:+.3f} MiB/min), .ipynb {end['ipynb']:.3f} MiB")
    assert edits > PEERS * seconds / EDIT_PERIOD * 0.5
    assert rss_rate < 10, f"sidecar memory keeps growing: {rss_rate:.1f} MiB/min"
    if request.config.getoption("--soak"):
        assert rss_rate - replica_rate <= OWN_GROWTH_LIMIT, (
            f"the sidecar grows {rss_rate:.2f} MiB/min, {rss_rate - replica_rate:.2f} faster "
            f"than a bare replica of its document ({replica_rate:.2f})")
    assert store_rate < 0.5, f"the store keeps growing: {store_rate:.2f} MiB/min"
    assert max(s["store"] for s in half) < 2 + 4 * max(s["ipynb"] for s in half)
