"""Loading the server extension: configuration, checks, routes."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re
from functools import partial
from typing import Any

import jupyter_server
from jupyter_server.services.contents.filemanager import (
    AsyncFileContentsManager,
    FileContentsManager,
)
from jupyter_server.services.kernels import handlers as kernel_handlers
from jupyter_server.utils import url_path_join
from traitlets import Unicode
from traitlets.config import Configurable

from ..provisioner.notebook_path import NOTEBOOK_ENV
from ..provisioner.sidecars import REGISTRY, SidecarError, SidecarHandle
from .coexist import guard_jupyter_collaboration
from .handlers import (
    ExecuteHandler,
    KernelActionHandler,
    ModeHandler,
    RoomHandler,
    SyncHandler,
    collaborative_kernel_action,
)
from .rooms import RoomManager

CONTENTS_EVENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"
EXECUTE_ROUTE = r"/api/kernels/(?P<kernel_id>[\w-]+)/execute"


class KernelCollabServer(Configurable):
    """Configuration of kernel_collab's server extension."""

    kernel_name = Unicode(
        "python3-collab",
        help="Kernelspec used when a room is opened for a notebook with no session.",
    ).tag(config=True)


def load(serverapp: Any) -> None:
    """Check the server can host rooms, then register the routes."""
    config = KernelCollabServer(parent=serverapp)
    contents = serverapp.contents_manager
    if not isinstance(contents, FileContentsManager | AsyncFileContentsManager):
        raise RuntimeError(
            f"kernel_collab needs a file-based ContentsManager (the sidecar writes the "
            f".ipynb itself); this server uses {type(contents).__name__}"
        )
    web_app = serverapp.web_app
    base = web_app.settings["base_url"]
    execute = url_path_join(base, EXECUTE_ROUTE)
    for rule in web_app.wildcard_router.rules:
        matcher = getattr(rule.matcher, "regex", None)
        if (
            matcher is not None
            and "execute" in matcher.pattern  # not a catch-all such as the 404 page
            and matcher.match(url_path_join(base, "/api/kernels/x/execute"))
        ):
            raise RuntimeError(
                f"another extension already serves {execute} ({rule.target}); kernel_collab "
                "would clash with it: disable one of them"
            )
    _refuse_later_clashes(web_app, url_path_join(base, "/api/kernels/x/execute"))
    rooms = RoomManager(serverapp, config.kernel_name)
    web_app.settings["kernel_collab_rooms"] = rooms
    _pass_notebook_paths(serverapp)
    _forget_failed_kernel_starts(serverapp.kernel_manager)
    guard_stock_kernel_actions(serverapp.log)
    if guard_jupyter_collaboration(rooms):
        serverapp.log.info("kernel_collab: jupyter-collaboration's rooms are refused for "
                           "notebooks a sidecar owns")
    serverapp.event_logger.add_listener(
        schema_id=CONTENTS_EVENTS, listener=partial(_on_contents_event, rooms)
    )
    path = r"(?P<path>(?:[^/]+/)*[^/]+\.ipynb)"
    web_app.add_handlers(".*$", [
        (url_path_join(base, rf"/api/kernel-collab/rooms/{path}/(?P<action>interrupt|restart)"),
         KernelActionHandler),
        (url_path_join(base, r"/api/kernel-collab/rooms/(?P<path>.+)"), RoomHandler),
        (url_path_join(base, r"/api/kernel-collab/mode/(?P<path>.+)"), ModeHandler),
        (url_path_join(base, r"/api/kernel-collab/sync/(?P<document_id>[\w-]+)"), SyncHandler),
        (execute, ExecuteHandler),
    ])  # fmt: skip
    serverapp.log.info("kernel_collab: server extension loaded (rooms keyed by notebook)")


async def _on_contents_event(
    rooms: RoomManager, *, logger: Any, schema_id: str, data: dict[str, Any]
) -> None:
    """Rooms follow renames and moves made through Jupyter; a deletion pauses autosave."""
    action, path = data.get("action"), data.get("path")
    if action == "rename" and isinstance(path, str):
        source = rooms.absolute(str(data.get("source_path", "")).strip("/"))
        target = rooms.absolute(path.strip("/"))
        for handle in list(REGISTRY.handles.values()):
            if not handle.alive:
                continue
            if handle.notebook == source or handle.notebook.is_relative_to(source):
                new = target / handle.notebook.relative_to(source)
                REGISTRY.moved(handle, new)
                await _tell(handle, {"type": "rename", "absolute": str(new),
                                     "path": new.relative_to(rooms.root).as_posix()})
    elif action == "delete" and isinstance(path, str):
        gone = rooms.absolute(path.strip("/"))
        for handle in list(REGISTRY.handles.values()):
            if handle.alive and (handle.notebook == gone or handle.notebook.is_relative_to(gone)):
                await _tell(handle, {"type": "deleted"})


async def _tell(handle: SidecarHandle, request: dict[str, Any]) -> None:
    try:
        await handle.request(request)
    except SidecarError as exc:
        logging.getLogger("kernel_collab").error(
            "kernel_collab: could not tell the sidecar of %s about %s: %s",
            handle.notebook, request["type"], exc,
        )  # fmt: skip


def _refuse_later_clashes(web_app: Any, probe: str) -> None:
    """An extension loaded after ours that serves the execute route fails to load, saying why
    (tornado would otherwise silently give the route to whichever was added first)."""
    original = web_app.add_handlers

    def add_handlers(host_pattern: str, handlers: list[Any]) -> None:
        for spec in handlers:
            pattern = spec[0] if isinstance(spec, tuple) else getattr(spec, "regex", None)
            pattern = getattr(pattern, "pattern", pattern)
            handler = spec[1] if isinstance(spec, tuple) else getattr(spec, "handler_class", None)
            if (isinstance(pattern, str) and "execute" in pattern and handler is not ExecuteHandler
                    and re.fullmatch(pattern, probe)):  # fmt: skip
                raise RuntimeError(
                    f"{handler} would serve {probe.replace('/x/', '/{kernel_id}/')}, which "
                    "kernel_collab serves: disable one of the two extensions"
                )
        original(host_pattern, handlers)

    web_app.add_handlers = add_handlers


STOCK_KERNEL_ACTIONS_RANGE = ((2, 14), (3, 0))
"""jupyter_server versions (``>=2.14,<3``) whose ``KernelActionHandler.post`` we wrap."""


def stock_kernel_actions_unguardable() -> str | None:
    """Why jupyter_server's ``POST /api/kernels/{id}/interrupt|restart`` handler cannot be
    guarded here (None: it can)."""
    low, high = STOCK_KERNEL_ACTIONS_RANGE
    version = tuple(int(part) for part in re.findall(r"\d+", jupyter_server.__version__)[:2])
    if not low <= version < high:
        return (f"jupyter_server {jupyter_server.__version__} is outside the versions this "
                "guard was written for (>=2.14,<3)")  # fmt: skip
    post = getattr(getattr(kernel_handlers, "KernelActionHandler", None), "post", None)
    if post is None or not inspect.iscoroutinefunction(inspect.unwrap(post)):
        return "jupyter_server's KernelActionHandler.post is gone or no longer async"
    return None


def guard_stock_kernel_actions(log: Any) -> bool:
    """jupyter_server's own ``POST /api/kernels/{id}/interrupt`` and ``/restart`` need only
    ``kernels:write``. For a collaborative kernel — everyone's, with a shared queue — they need
    ``kernels:execute`` as our room routes do, and who did it is recorded in the document.
    Other kernels keep the stock behaviour. Returns whether the guard is in place (outside the
    jupyter_server versions it was written for, it logs a warning and changes nothing)."""
    reason = stock_kernel_actions_unguardable()
    if reason is not None:
        log.warning("kernel_collab: %s: POST /api/kernels/{id}/interrupt and /restart keep "
                    "jupyter_server's own check (kernels:write) for collaborative kernels, and "
                    "are recorded as done by 'unknown'", reason)  # fmt: skip
        return False
    cls = kernel_handlers.KernelActionHandler
    original: Any = cls.post
    if getattr(original, "_kernel_collab_guard", False):
        return True

    @functools.wraps(original)
    async def post(self: Any, kernel_id: str, action: str) -> None:
        rooms: RoomManager | None = self.settings.get("kernel_collab_rooms")
        # Unauthenticated requests and unknown kernels get the stock answers (403, 404).
        if self.current_user and rooms is not None and rooms.is_collaborative(kernel_id):
            await collaborative_kernel_action(self, rooms.handle_for_kernel(kernel_id), action)
        await original(self, kernel_id, action)

    post._kernel_collab_guard = True  # type: ignore[attr-defined]
    cls.post = post  # type: ignore[method-assign]
    return True


def _forget_failed_kernel_starts(manager: Any) -> None:
    """jupyter_client 8.10 keeps a kernel whose start failed in ``_pending_kernels`` forever,
    so the server's shutdown fails on it (404) and hangs. The collaborative provisioner refuses
    some starts on purpose (a second kernel for a notebook), so drop such ghosts."""
    original = manager._add_kernel_when_ready

    async def add_kernel_when_ready(kernel_id: str, km: Any, awaitable: Any) -> None:
        await original(kernel_id, km, awaitable)
        if kernel_id not in manager._kernels:
            manager._pending_kernels.pop(kernel_id, None)

    manager._add_kernel_when_ready = add_kernel_when_ready


def _pass_notebook_paths(serverapp: Any) -> None:
    """Give each notebook session's kernel the real notebook path (``JPY_SESSION_NAME`` is
    wrong when a session's name is not its file's name)."""
    sessions = serverapp.session_manager
    original = sessions.get_kernel_env
    root = os.path.abspath(serverapp.root_dir)

    def get_kernel_env(path: str | None, name: Any = None) -> dict[str, str]:
        env: dict[str, str] = original(path, name)
        if path and re.search(r"\.ipynb$", path):
            env[NOTEBOOK_ENV] = os.path.join(root, path.lstrip("/"))
        return env

    sessions.get_kernel_env = get_kernel_env
