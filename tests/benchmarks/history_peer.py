"""jupyter-collaboration's side of ``tests.benchmarks.history``, run in the peer's venv.

    .peer-venv/bin/python tests/benchmarks/history_peer.py STREAM DB [TIMELINE_BUDGET_S]

Reads Y updates from STREAM (``<u32 length><update>`` records, written while they are made;
length 0xFFFFFFFF ends it) and writes each into pycrdt-store's ``SQLiteYStore`` at DB with the
defaults jupyter-collaboration uses (``jupyter_server_ydoc.stores.SQLiteYStore`` only makes
them configurable: never squashed, a checkpoint every 100 updates), as its room does for each
update. Then lists the history as its timeline handler does (``TimelineHandler.get`` in
``jupyter_server_ydoc/handlers.py``: every update read back and applied one by one to a fork
whose undo manager counts the steps), stopping after TIMELINE_BUDGET_S seconds (default 30):
it slows down as the fork grows. Prints one JSON line. Imports nothing of kernel_collab.
"""

from __future__ import annotations

import json
import struct
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

import anyio
from jupyter_ydoc import YNotebook
from pycrdt import Doc
from pycrdt.store import SQLiteYStore

END_OF_STREAM = 0xFFFFFFFF


async def _read_exactly(f: IO[bytes], n: int) -> bytes:
    """``n`` bytes of a file still being written (waits for them)."""
    data = b""
    while len(data) < n:
        chunk = f.read(n - len(data))
        if chunk:
            data += chunk
        else:
            await anyio.sleep(0.05)
    return data


async def main(stream: Path, db: Path, budget: float) -> dict[str, Any]:
    """Store the stream, then list it as the timeline does."""

    class Store(SQLiteYStore):
        db_path = str(db)

    count = 0
    started = time.perf_counter()
    async with Store(path="json:notebook:bench") as ystore:
        with stream.open("rb") as f:
            while True:
                (n,) = struct.unpack("<I", await _read_exactly(f, 4))
                if n == END_OF_STREAM:
                    break
                await ystore.write(await _read_exactly(f, n))
                count += 1
        write_s = time.perf_counter() - started

        t0 = time.perf_counter()
        fork: Doc[Any] = Doc()
        undo_manager = YNotebook(fork).undo_manager
        updates = [(item[0], item[-1]) async for item in ystore.read()]
        steps = []
        applied = 0
        for update, timestamp in updates:
            before = len(undo_manager.undo_stack)
            fork.apply_update(update)
            applied += 1
            if len(undo_manager.undo_stack) > before:
                steps.append(timestamp)
            if time.perf_counter() - t0 > budget:
                break
        timeline_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in (db, Path(f"{db}-wal"), Path(f"{db}-journal"))
               if p.exists())  # fmt: skip
    return {"db": str(db), "bytes": size, "updates": count, "write_s": write_s,
            "timeline": len(steps), "timeline_s": timeline_s, "timeline_applied": applied,
            "timeline_of": len(updates),
            "version": version("pycrdt-store")}  # fmt: skip


if __name__ == "__main__":
    budget = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
    result = anyio.run(main, Path(sys.argv[1]), Path(sys.argv[2]), budget)
    print(json.dumps(result))
