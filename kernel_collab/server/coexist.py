"""Coexistence with jupyter-collaboration: no file ever has two writers.

When jupyter-collaboration (``jupyter_server_ydoc``) is installed too, its rooms are refused
(409) for notebooks a kernel_collab sidecar owns: its document session route and its room
WebSocket. Notebooks without a sidecar, or whose session moved to a plain kernel, are
jupyter-collaboration's.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from tornado import web

from .rooms import RoomManager

MESSAGE = (
    "{path} is open in a collaborative kernel's room (kernel_collab), which writes the file; "
    "jupyter-collaboration may not open a second room on it"
)


def guard_jupyter_collaboration(rooms: RoomManager) -> bool:
    """Refuse jupyter-collaboration's rooms for notebooks with a sidecar; False if absent."""
    try:
        handlers = importlib.import_module("jupyter_server_ydoc.handlers")
    except ImportError:
        return False
    session_handler = handlers.DocSessionHandler
    socket_handler = handlers.YDocWebSocketHandler
    if getattr(session_handler, "_kernel_collab_guarded", False):
        return True

    original_put = session_handler.put
    original_prepare = socket_handler.prepare

    @functools.wraps(original_put)
    async def put(self: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        await _refuse_if_owned(rooms, path)
        return await original_put(self, path, *args, **kwargs)

    @functools.wraps(original_prepare)
    async def prepare(self: Any) -> Any:
        room_id = handlers.room_id_from_encoded_path(self.request.path)
        if room_id.count(":") >= 2:
            _, _, file_id = handlers.decode_file_path(room_id)
            path = self.settings["file_id_manager"].get_path(file_id)
            if path:
                await _refuse_if_owned(rooms, path)
        return await original_prepare(self)

    session_handler.put = put
    socket_handler.prepare = prepare
    session_handler._kernel_collab_guarded = True
    return True


async def _refuse_if_owned(rooms: RoomManager, path: str) -> None:
    """409 while a sidecar owns the notebook; not once its session moved to a plain kernel
    (the sidecar is then only saving and leaving)."""
    api_path = path.strip("/")
    if api_path.endswith(".ipynb") and rooms.handle_for_path(api_path) is not None and (
            await rooms.mode(api_path))["collaborative"]:  # fmt: skip
        raise web.HTTPError(409, MESSAGE.format(path=api_path))
