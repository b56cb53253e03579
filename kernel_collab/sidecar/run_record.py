"""What a run leaves in its cell: ``execution_state`` and ``metadata.kernel_collab.last_run``
(docs/architecture.md, "Keys the sidecar writes")."""

from __future__ import annotations

import time
from typing import Any

from pycrdt import Map


def _set_last_run(ycell: Map[Any], last_run: dict[str, Any]) -> None:
    metadata = ycell["metadata"]
    current = metadata.get("kernel_collab")
    ours = dict(current) if isinstance(current, dict) else {}
    ours["last_run"] = last_run
    metadata["kernel_collab"] = ours


def last_run_number(ycell: Map[Any]) -> int:
    """The number of the cell's last run (``last_run.n``; 0 if none was numbered)."""
    ours = ycell["metadata"].get("kernel_collab")
    last = ours.get("last_run") if isinstance(ours, dict) else None
    number = last.get("n") if isinstance(last, dict) else None
    return int(number) if isinstance(number, int | float) and not isinstance(number, bool) else 0


def record_start(ycell: Map[Any], by: dict[str, Any], started: float,
                 source: str | None = None, *, number: int | None = None) -> str:
    """Mark a cell running; return the source that runs (``source``, when it was sent
    before, or the cell's). ``number``: the queue's number of the run; another client's run
    (not numbered) keeps the number of the run before it."""
    source = str(ycell["source"]) if source is None else source
    last = {"by": by, "start": started, "end": None, "status": "running", "source": source,
            "n": last_run_number(ycell) if number is None else number}
    with ycell.doc.transaction():
        ycell["execution_state"] = "running"
        if ycell.get("execution_count") is not None:
            ycell["execution_count"] = None
        _set_last_run(ycell, last)
    return source


def record_end(ycell: Map[Any], status: str, error: str | None = None,
               count: int | None = None, *, timing: dict[str, str] | None = None,
               drop_timing: bool = False) -> None:
    """Mark a cell idle, with its execution count (in one transaction: JupyterLab's cell widget
    marks a cell idle itself when a count arrives), and complete its ``last_run``. ``timing``:
    JupyterLab's ``metadata.execution``, for askers who record it; ``drop_timing`` removes a
    stale one, as JupyterLab does when recording is off."""
    current = ycell["metadata"].get("kernel_collab")
    last = dict((current or {}).get("last_run") or {}) if isinstance(current, dict) else {}
    last.update(end=time.time(), status=status)
    if error:
        last["error"] = error
    with ycell.doc.transaction():
        ycell["execution_state"] = "idle"
        if count is not None:
            ycell["execution_count"] = count
        if timing:
            ycell["metadata"]["execution"] = timing
        elif drop_timing and "execution" in ycell["metadata"]:
            del ycell["metadata"]["execution"]
        _set_last_run(ycell, last)
