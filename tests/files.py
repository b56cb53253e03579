"""Notebook files for tests, and waiting for a file to change (an event, not a sleep)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import anyio
import nbformat
import watchfiles

#: ``metadata.kernelspec`` of a notebook on kernel_collab's collaborative kernel.
COLLAB_KERNELSPEC = {"name": "python3-collab", "display_name": "Python 3 (collaborative)"}
#: ``metadata.kernelspec`` of a plain ipykernel notebook (the default).
PLAIN_KERNELSPEC = {"name": "python3", "display_name": "Python 3"}


def write_notebook(
    path: Path,
    sources: Sequence[str],
    *,
    outputs: bool = False,
    kernelspec: Mapping[str, str] = PLAIN_KERNELSPEC,
) -> Path:
    """Write a valid notebook with one code cell per source, on ``kernelspec``."""
    cells = []
    for i, source in enumerate(sources):
        cell = nbformat.v4.new_code_cell(source, id=f"cell-{i}")
        if outputs:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"out {i}\n")]
            cell.execution_count = i + 1
        cells.append(cell)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(kernelspec)
    nbformat.write(nb, path)
    return path


def _holds(predicate: Callable[[], bool]) -> bool:
    try:
        return predicate()
    except (OSError, ValueError, IndexError, KeyError):
        return False  # the file is absent or being replaced: not yet


async def wait_for_file(path: Path, predicate: Callable[[], bool], timeout: float = 15) -> None:
    """Return once ``predicate()`` holds, re-checking it whenever ``path`` changes."""
    with anyio.fail_after(timeout):
        if _holds(predicate):
            return
        async for _ in watchfiles.awatch(path.parent, debounce=20, step=5, rust_timeout=200,
                                         yield_on_timeout=True):
            if _holds(predicate):
                return
