"""HTTP and WebSocket routes of the server extension (what each takes and returns:
docs/reference.md). Reading needs ``contents:read``, editing ``contents:write``, running
``kernels:execute``; jupyter_server's own interrupt and restart of a collaborative kernel go
through :func:`collaborative_kernel_action` first (wrapped in by ``extension.py``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio
from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.websocket import WebSocketClosedError, WebSocketHandler
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ..protocol import CLOSE_TRY_AGAIN
from ..provisioner.sidecars import SidecarError, SidecarHandle, admin_headers
from . import handoff
from .history import summarise
from .rooms import RoomManager, ask_as, identity_headers, identity_of

MAX_CLIENT_NAME = 64
"""Characters kept of the name a script gives itself (as the sidecar keeps of ``?name=``)."""


async def allowed(handler: JupyterHandler, action: str, resource: str) -> bool:
    """Whether the server's authorizer lets the current user ``action`` on ``resource``."""
    return bool(await ensure_async(
        handler.authorizer.is_authorized(handler, handler.current_user, action, resource)
    ))  # fmt: skip


async def identity_for(handler: JupyterHandler) -> dict[str, Any]:
    """The current user as the sidecar sees them, with their permissions."""
    return identity_of(
        handler.current_user,
        write=await allowed(handler, "write", "contents"),
        execute=await allowed(handler, "execute", "kernels"),
    )


class _Base(APIHandler):
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """jupyter_server's JSON error, its message as written: tornado doubles each ``%``
        of a message given without arguments (for its log), and APIHandler shows the message
        as stored ("no notebook at 100%%.ipynb")."""
        exc_info = kwargs.get("exc_info")
        error = exc_info[1] if exc_info else None
        if isinstance(error, web.HTTPError) and error.log_message:
            message = error.log_message % error.args
            self.set_header("Content-Type", "application/json")
            self.log.warning("wrote error: %r", message)  # as APIHandler logs it
            self.finish(json.dumps({"message": message, "reason": error.reason}))
            return
        super().write_error(status_code, **kwargs)

    @property
    def rooms(self) -> RoomManager:
        return self.settings["kernel_collab_rooms"]  # type: ignore[no-any-return]

    async def require(self, action: str, resource: str) -> None:
        """403 unless the current user may ``action`` on ``resource``."""
        if not await allowed(self, action, resource):
            raise web.HTTPError(403, f"you need {resource}:{action} for this")

    def room(self, path: str) -> tuple[str, SidecarHandle]:
        """The notebook's API path and its room's sidecar (404 when no room is open)."""
        api_path = self.rooms.api_path(path)
        handle = self.rooms.handle_for_path(api_path)
        if handle is None:
            raise web.HTTPError(404, f"no collaborative room is open for {api_path}")
        return api_path, handle

    async def ask(self, handle: SidecarHandle, request: dict[str, Any],
                  refused: int | None = None) -> dict[str, Any]:  # fmt: skip
        """A request to the sidecar on the current user's behalf: 503 if it is unreachable, a
        refusal answered with ``refused`` (default: as :func:`refusal_status` says)."""
        try:
            reply = await ask_as(handle, await identity_for(self), request)
        except SidecarError as exc:
            raise web.HTTPError(503, str(exc)) from exc
        if not reply.get("ok"):
            error = str(reply.get("error"))
            raise web.HTTPError(refused or refusal_status(error), error)
        return reply

    async def room_model(self, handle: SidecarHandle, api_path: str,
                         session: dict[str, Any] | None,
                         info: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        """What the room routes return (``info``: the room as a sidecar that just started
        described it; else it is asked)."""
        if info is None:
            try:
                info = await handle.request({"type": "room_info"})
            except SidecarError as exc:
                raise web.HTTPError(503, str(exc)) from exc
        return {
            "document_id": info.get("document_id"),
            "path": api_path,
            "kernel_id": info.get("kernel_id") or handle.starting_kernel,
            "session_id": (session or {}).get("id"),
            "epoch": info.get("epoch"),
            "kernel_status": info.get("kernel_status"),
            "queue": info.get("queue", []),
            "running": info.get("running"),
            "peers": info.get("peers", []),
            "permissions": (await identity_for(self))["permissions"],
        }


class RoomHandler(_Base):
    """``GET``/``PUT /api/kernel-collab/rooms/{path}``."""

    @web.authenticated
    async def get(self, path: str) -> None:
        """The room of a notebook (404 when none is open)."""
        await self.require("read", "contents")
        api_path, handle = self.room(path)
        session = await self.rooms.session_for(api_path)
        self.finish(json.dumps(await self.room_model(handle, api_path, session)))

    @web.authenticated
    async def put(self, path: str) -> None:
        """Ensure the room, starting the collaborative session if none runs."""
        await self.require("read", "contents")
        api_path = self.rooms.api_path(path)
        if self.rooms.handle_for_path(api_path) is None:
            await self.require("write", "sessions")
        async with self.rooms.opening(api_path) as (handle, session, described):
            # Answered as soon as the document is served: a kernel started for it launches
            # meanwhile (the room says "starting"), and this waits for that start to end.
            self.finish(json.dumps(await self.room_model(handle, api_path, session, described)))


class ModeHandler(_Base):
    """``GET /api/kernel-collab/mode/{path}``: whether the notebook opens collaboratively."""

    @web.authenticated
    async def get(self, path: str) -> None:
        """How the notebook opens, decided as a browser opens it (with the room, if open)."""
        await self.require("read", "contents")
        api_path = self.rooms.api_path(path)
        mode = await self.rooms.mode(api_path)
        handle = self.rooms.handle_for_path(api_path) if mode["collaborative"] else None
        if handle is not None:  # open already: the client can join without a PUT
            session = await self.rooms.session_for(api_path)
            try:
                mode["room"] = await self.room_model(handle, api_path, session)
            except web.HTTPError as exc:  # going away or restarting: the client PUTs
                self.log.info("kernel_collab: room of %s not described: %s", api_path, exc)
        self.finish(json.dumps(mode))


async def collaborative_kernel_action(handler: JupyterHandler, handle: SidecarHandle | None,
                                      action: str) -> None:
    """Before a collaborative kernel is interrupted or restarted: 403 unless the current user
    may run code (``kernels:execute``), then tell the sidecar who does it, so the document
    records them (``handle`` None: the kernel has no room, nothing to record)."""
    if not await allowed(handler, "execute", "kernels"):
        raise web.HTTPError(403, f"you need kernels:execute to {action} a collaborative kernel")
    if handle is None:
        return
    try:
        reply = await ask_as(handle, await identity_for(handler),
                             {"type": "kernel_action", "action": action})  # fmt: skip
    except SidecarError as exc:  # the kernel must stay interruptible without its sidecar
        handler.log.warning("kernel_collab: %s not recorded: %s", action, exc)
        return
    if not reply.get("ok"):
        raise web.HTTPError(403, str(reply.get("error")))


class KernelActionHandler(_Base):
    """``POST /api/kernel-collab/rooms/{path}/{interrupt|restart}``: recorded with who did it."""

    @web.authenticated
    async def post(self, path: str, action: str) -> None:
        """Interrupt or restart the room's kernel on behalf of the current user."""
        await self.require("execute", "kernels")
        api_path = self.rooms.api_path(path)
        await self.rooms.started(api_path)  # a kernel still starting is acted on once up
        handle = self.rooms.handle_for_path(api_path)
        session = await self.rooms.session_for(api_path)
        if handle is None or session is None:
            raise web.HTTPError(404, f"no collaborative kernel runs for {api_path}")
        await self.ask(handle, {"type": "kernel_action", "action": action}, refused=403)
        kernel_id = session["kernel"]["id"]
        manager: Any = self.kernel_manager
        if action == "interrupt":
            await ensure_async(manager.interrupt_kernel(kernel_id))
        else:
            await ensure_async(manager.restart_kernel(kernel_id))
        self.finish(json.dumps({"ok": True, "kernel_id": kernel_id, "action": action}))


def refusal_status(error: str) -> int:
    """The HTTP status of a sidecar's refusal, from its reason."""
    if error.startswith("unknown request type"):
        return 501  # a sidecar that keeps no history
    if " may not " in error or " may only read" in error:
        return 403
    if "not in the history" in error or "cannot be rebuilt" in error:
        return 404  # purged, thinned or never there
    if "is the newest" in error:
        return 409  # purging the version that is the notebook now
    return 400


class _HistoryBase(_Base):
    """The history routes: the room's sidecar is asked on the current user's behalf."""

    async def history_request(self, path: str, request: dict[str, Any],
                              action: str = "read") -> dict[str, Any]:
        """The sidecar's reply to ``request`` (403 unless the user may ``action`` contents;
        404 when no room is open)."""
        await self.require(action, "contents")
        return await self.ask(self.room(path)[1], request)

    async def version(self, path: str, version: int) -> dict[str, Any]:
        """A stored version: ``{version, notebook, trusted, outputs_dropped}``."""
        reply = await self.history_request(path, {"type": "history_get", "version": version})
        return {key: reply.get(key) for key in ("version", "notebook", "trusted")} | {
            "outputs_dropped": bool(reply.get("outputs_dropped"))}  # fmt: skip

    async def latest(self, path: str) -> int:
        """The newest version's number: the document as it is now."""
        versions = (await self.history_request(path, {"type": "history"})).get("versions")
        if not versions:
            raise web.HTTPError(404, "this notebook has no stored version yet")
        return int(versions[-1]["version"])


class HistoryHandler(_HistoryBase):
    """``GET /api/kernel-collab/rooms/{path}/history``: the versions, oldest first."""

    @web.authenticated
    async def get(self, path: str) -> None:
        reply = await self.history_request(path, {"type": "history"})
        self.finish(json.dumps({"versions": reply.get("versions", [])}))


class HistoryVersionHandler(_HistoryBase):
    """``GET /api/kernel-collab/rooms/{path}/history/{N}``: one version."""

    @web.authenticated
    async def get(self, path: str, version: str) -> None:
        self.finish(json.dumps(await self.version(path, int(version))))


class HistoryDiffHandler(_HistoryBase):
    """``GET /api/kernel-collab/rooms/{path}/history/{N}/diff?against=current|M``."""

    @web.authenticated
    async def get(self, path: str, version: str) -> None:
        """From version N to the current document (the newest version) or to version M."""
        against = self.get_argument("against", "current")
        if against == "current":
            other = await self.latest(path)
        elif against.isdecimal():
            other = int(against)
        else:
            raise web.HTTPError(400, "against is 'current' or a version number")
        old = await self.version(path, int(version))
        new = old if other == int(version) else await self.version(path, other)
        dropped = old["outputs_dropped"] or new["outputs_dropped"]
        cells = await anyio.to_thread.run_sync(
            lambda: summarise(old["notebook"], new["notebook"], compare_outputs=not dropped))
        self.finish(json.dumps({"version": old["version"], "against": new["version"],
                                "outputs_dropped": dropped, "cells": cells}))  # fmt: skip


class HistoryRestoreHandler(_HistoryBase):
    """``POST /api/kernel-collab/rooms/{path}/history/{N}/restore``: a new edit for everyone."""

    @web.authenticated
    async def post(self, path: str, version: str) -> None:
        reply = await self.history_request(
            path, {"type": "restore", "version": int(version)}, action="write")
        self.finish(json.dumps({"version": reply.get("version")}))


class HistoryPurgeHandler(_HistoryBase):
    """``POST /api/kernel-collab/rooms/{path}/history/purge`` with ``{"before": N}`` or
    ``{"version": N}``."""

    @web.authenticated
    async def post(self, path: str) -> None:
        await self.require("write", "contents")
        body = self.get_json_body()
        body = body if isinstance(body, dict) else {}
        keys = [key for key in ("before", "version") if key in body]
        if len(keys) != 1 or type(body[keys[0]]) is not int:
            raise web.HTTPError(400, "the body is {\"before\": N} or {\"version\": N}")
        reply = await self.history_request(
            path, {"type": "purge", keys[0]: body[keys[0]]}, action="write")
        self.finish(json.dumps({"removed": reply.get("removed")}))


class ExecuteHandler(_Base):
    """``POST /api/kernels/{kernel_id}/execute`` — JupyterLab's server-side cell executor."""

    @web.authenticated
    async def post(self, kernel_id: str) -> None:
        """Queue a cell of the document on the kernel's shared queue."""
        await self.require("execute", "kernels")
        body = self.get_json_body() or {}
        cell_id, document_id = body.get("cell_id"), body.get("document_id")
        if not isinstance(cell_id, str) or not isinstance(document_id, str):
            raise web.HTTPError(400, "the body needs cell_id and document_id")
        handle = self.rooms.handle_for_kernel(kernel_id)
        if handle is None:
            raise web.HTTPError(404, f"kernel {kernel_id} is not a collaborative kernel")
        if handle.document_id != document_id:
            raise web.HTTPError(
                400, f"document {document_id} is not the notebook of kernel {kernel_id}"
            )
        reply = await self.ask(handle, {"type": "execute", "cell_id": cell_id}, refused=400)
        self.set_status(202)
        self.finish(json.dumps({"cell_id": cell_id, "position": reply.get("position")}))


class SyncHandler(WebSocketMixin, WebSocketHandler, JupyterHandler):
    """The y-websocket endpoint: the browser's connection is handed to the document's sidecar
    (``handoff``), or relayed to it (``proxy``, and where this server terminates TLS)."""

    auth_resource = "contents"
    upstream: ClientConnection | None = None

    def set_default_headers(self) -> None:
        """No API headers on a WebSocket."""

    @ws_authenticated
    async def get(self, document_id: str) -> None:
        """Authorize, find the sidecar, then upgrade."""
        rooms: RoomManager = self.settings["kernel_collab_rooms"]
        if not await allowed(self, "read", "contents"):
            raise web.HTTPError(403, "you need contents:read to join this notebook")
        handle = rooms.handle_for_document(document_id)
        if handle is None:
            raise web.HTTPError(404, f"no open room for document {document_id}")
        identity = await identity_for(self)
        client = self.get_argument("name", None)
        if client:  # a script of this person's, named by itself (as the sidecar's ?name=)
            identity["client_name"] = client[:MAX_CLIENT_NAME]
        epoch = self.get_argument("epoch", None)
        query = f"?{urlencode({'epoch': epoch})}" if epoch else ""
        # The admin token goes in a header, never in the URL: an error or a log line that
        # names the URL cannot carry it. No Origin header: the sidecar refuses those.
        headers = {**identity_headers(identity), **admin_headers(handle)}
        if self.settings.get("kernel_collab_sync_route") == "handoff" and handoff.possible(
            self, handle
        ):
            refused = handoff.refusal(self)
            if refused is not None:
                raise web.HTTPError(*refused)
            sidecar = urlsplit(handle.url)
            request = handoff.handshake(self, sidecar.path + query, sidecar.netloc, headers)
            if await handoff.hand_over(self, handle, request):
                return
        try:
            self.upstream = await ws_connect(
                handle.url + query,
                additional_headers=headers,
                max_size=None,
                compression=None,
            )
        except (OSError, InvalidHandshake) as exc:
            raise web.HTTPError(503, f"the notebook's sidecar is unreachable: {exc}") from exc
        await super().get(document_id)

    async def open(self, document_id: str) -> None:
        """Start relaying the sidecar's messages to the browser (a task cancelled in
        :meth:`on_close`, which closes the upstream connection when it ends)."""
        super().open()
        # Tornado lets Nagle's algorithm hold small frames back (up to a delayed ACK, ~40 ms
        # on Linux): every keystroke and reply here is a small frame.
        self.set_nodelay(True)
        assert self.upstream is not None
        self._relay = asyncio.ensure_future(self._relay_down(self.upstream))

    async def _relay_down(self, upstream: ClientConnection) -> None:
        code, reason = CLOSE_TRY_AGAIN, "the notebook's sidecar went away; reconnect"
        try:
            try:
                async for data in upstream:
                    self.write_message(data, binary=isinstance(data, bytes))
            except ConnectionClosed:
                pass
            except WebSocketClosedError:
                return
            upstream_code = upstream.close_code or 0
            if upstream_code in (1002, 1009) or upstream_code >= 4000:  # the peer's own fault
                code, reason = upstream_code, upstream.close_reason or reason
            self.close(code, reason)
        finally:
            await upstream.close()

    async def on_message(self, message: str | bytes) -> None:
        """Forward a browser message to the sidecar, in order."""
        if self.upstream is None:
            return
        try:
            await self.upstream.send(message)
        except ConnectionClosed:
            self.close(CLOSE_TRY_AGAIN, "the notebook's sidecar went away; reconnect")

    def on_close(self) -> None:
        """The browser left: stop relaying (which closes the upstream connection)."""
        self.upstream = None
        relay = getattr(self, "_relay", None)
        if relay is not None:
            relay.cancel()
