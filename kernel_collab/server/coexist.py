"""Coexistence with jupyter-collaboration: its rooms are refused (409) for notebooks a sidecar
owns, so no file ever has two writers (docs/architecture.md, "In JupyterLab"; the patch of its
handlers: ``kernel_collab/hostpatches.py``)."""

from __future__ import annotations

from tornado import web

from .rooms import RoomManager

MESSAGE = (
    "{path} is open in a collaborative kernel's room (kernel_collab), which writes the file; "
    "jupyter-collaboration may not open a second room on it"
)


async def refuse_if_owned(rooms: RoomManager, path: str) -> None:
    """409 while a sidecar owns the notebook; not once its session moved to a plain kernel
    (the sidecar is then only saving and leaving)."""
    api_path = path.strip("/")
    if api_path.endswith(".ipynb") and rooms.handle_for_path(api_path) is not None and (
            await rooms.mode(api_path))["collaborative"]:  # fmt: skip
        raise web.HTTPError(409, MESSAGE.format(path=api_path))
