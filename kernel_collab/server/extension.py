"""Loading the server extension: configuration, checks, routes."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from jupyter_server.services.contents.filemanager import (
    AsyncFileContentsManager,
    FileContentsManager,
)
from jupyter_server.utils import url_path_join
from traitlets import Bool, Enum, Float, Unicode
from traitlets.config import Configurable

from .. import hostpatches
from ..protocol import NOTEBOOK_ENV
from ..provisioner import forks
from ..provisioner.sidecars import REGISTRY, SidecarError, SidecarHandle
from .coexist import refuse_if_owned
from .handlers import (
    ExecuteHandler,
    HistoryDiffHandler,
    HistoryHandler,
    HistoryPurgeHandler,
    HistoryRestoreHandler,
    HistoryVersionHandler,
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
    sync_route = Enum(
        ["handoff", "proxy"],
        default_value="handoff",
        help="How a browser's document connection reaches its sidecar once authorized: "
        "'handoff' passes the connection itself to the sidecar (Linux; the server leaves the "
        "path), 'proxy' relays every message through this server. Where this server "
        "terminates TLS, or a sidecar takes no handovers, it proxies.",
    ).tag(config=True)
    session_listing_wait = Float(
        10.0,
        help="Seconds GET /api/sessions waits for collaborative kernels being launched (their "
        "notebooks served already), so that JupyterLab opening such a notebook joins its "
        "session instead of asking for a second kernel. Past it the listing goes on without "
        "them: a kernel whose launch takes longer may meet a refused second start.",
    ).tag(config=True)
    prestart_fork_server = Bool(
        True,
        help="Start the sidecars' fork server with the Jupyter server (Linux), so the first "
        "notebook opened does not wait for its imports (about a second); off: it starts with "
        "the first sidecar (--CollabProvisioner.fork_sidecars=False never uses it).",
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
    hostpatches.refuse_later_clashes(
        web_app, url_path_join(base, "/api/kernels/x/execute"), ExecuteHandler)
    rooms = RoomManager(serverapp, config.kernel_name, config.session_listing_wait)
    web_app.settings["kernel_collab_rooms"] = rooms
    web_app.settings["kernel_collab_sync_route"] = config.sync_route
    hostpatches.pass_notebook_paths(serverapp.session_manager, serverapp.root_dir, NOTEBOOK_ENV)
    hostpatches.wait_for_session_starts(serverapp.session_manager, rooms.started,
                                       rooms.all_started)
    hostpatches.forget_failed_kernel_starts(serverapp.kernel_manager)
    hostpatches.finish_starts_before_cleanup(serverapp, rooms.all_started)
    hostpatches.guard_stock_kernel_actions(
        lambda handler, kernel_id, action: collaborative_kernel_action(
            handler, rooms.handle_for_kernel(kernel_id), action),
        lambda _handler, kernel_id: rooms.is_collaborative(kernel_id),
        rooms.kernel_launched,
    )  # fmt: skip
    if hostpatches.guard_jupyter_collaboration(
        partial(refuse_if_owned, rooms),
        lambda handler, file_id: handler.settings["file_id_manager"].get_path(file_id),
    ):
        serverapp.log.info("kernel_collab: jupyter-collaboration's rooms are refused for "
                           "notebooks a sidecar owns")
    serverapp.event_logger.add_listener(
        schema_id=CONTENTS_EVENTS, listener=partial(_on_contents_event, rooms)
    )
    path = r"(?P<path>(?:[^/]+/)*[^/]+\.ipynb)"
    rooms_route = url_path_join(base, rf"/api/kernel-collab/rooms/{path}")
    version = r"(?P<version>\d+)"
    web_app.add_handlers(".*$", [
        (f"{rooms_route}/(?P<action>interrupt|restart)", KernelActionHandler),
        (f"{rooms_route}/history", HistoryHandler),
        (f"{rooms_route}/history/purge", HistoryPurgeHandler),
        (f"{rooms_route}/history/{version}", HistoryVersionHandler),
        (f"{rooms_route}/history/{version}/diff", HistoryDiffHandler),
        (f"{rooms_route}/history/{version}/restore", HistoryRestoreHandler),
        (url_path_join(base, r"/api/kernel-collab/rooms/(?P<path>.+)"), RoomHandler),
        (url_path_join(base, r"/api/kernel-collab/mode/(?P<path>.+)"), ModeHandler),
        (url_path_join(base, r"/api/kernel-collab/sync/(?P<document_id>[\w-]+)"), SyncHandler),
        (execute, ExecuteHandler),
    ])  # fmt: skip
    if config.prestart_fork_server and forks.available():
        try:
            forks.FORKS.prestart()
        except forks.ForkError as exc:
            serverapp.log.warning("kernel_collab: %s; sidecars start on their own", exc)
    serverapp.log.info("kernel_collab: server extension loaded (rooms keyed by notebook)")


async def _on_contents_event(
    rooms: RoomManager, *, logger: Any, schema_id: str, data: dict[str, Any]
) -> None:
    """Rooms follow renames and moves made through Jupyter; a deletion pauses autosave."""
    action, path = data.get("action"), data.get("path")
    if action == "rename" and isinstance(path, str):
        source = rooms.absolute(str(data.get("source_path", "")).strip("/"))
        target = rooms.absolute(path.strip("/"))
        for handle in REGISTRY.live():
            if handle.notebook.is_relative_to(source):  # the notebook, or a folder of it
                new = target / handle.notebook.relative_to(source)
                REGISTRY.moved(handle, new)
                await _tell(handle, {"type": "rename", "absolute": str(new),
                                     "path": new.relative_to(rooms.root).as_posix()})
    elif action == "delete" and isinstance(path, str):
        gone = rooms.absolute(path.strip("/"))
        for handle in REGISTRY.live():
            if handle.notebook.is_relative_to(gone):
                await _tell(handle, {"type": "deleted"})


async def _tell(handle: SidecarHandle, request: dict[str, Any]) -> None:
    try:
        await handle.request(request)
    except SidecarError as exc:
        logging.getLogger("kernel_collab").error(
            "kernel_collab: could not tell the sidecar of %s about %s: %s",
            handle.notebook, request["type"], exc,
        )  # fmt: skip


