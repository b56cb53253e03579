"""Which notebook a kernel session belongs to (docs/architecture.md, "Lifecycle"): jupyter_server
passes the session as ``JPY_SESSION_NAME``, which is wrong when the session's name is not its
file's, so the server extension's ``KERNEL_COLLAB_NOTEBOOK`` wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..protocol import NOTEBOOK_ENV

SESSION_ENV = "JPY_SESSION_NAME"


class NotebookPathError(ValueError):
    """No notebook file can be found for the session."""


def find_notebook(env: Mapping[str, str], cwd: str | None, root: Path) -> Path | None:
    """The absolute path of the session's ``.ipynb``; ``None`` for sessions that are not on a
    notebook (consoles, bare kernels), which get a plain kernel; :class:`NotebookPathError`
    for a notebook session whose file cannot be found."""
    tried: list[Path] = []
    for raw in (env.get(NOTEBOOK_ENV), env.get(SESSION_ENV)):
        if not raw or not raw.endswith(".ipynb"):
            continue
        given = Path(raw)
        candidates = [given] if given.is_absolute() else [root / given]
        if cwd and not given.is_absolute():
            candidates.append(Path(cwd) / given.name)
        for candidate in candidates:
            candidate = candidate.resolve()
            tried.append(candidate)
            if candidate.suffix == ".ipynb" and candidate.is_file():
                return candidate
    if not tried:
        return None
    raise NotebookPathError(
        "cannot find the session's notebook; tried " + ", ".join(str(p) for p in tried)
    )
