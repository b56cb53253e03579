"""Rooms keyed by notebook: finding a notebook's sidecar, or starting its collaborative session.
The provisioner's ``REGISTRY`` says which sidecar serves which notebook; this adds what the
server knows: sessions, kernels, paths under the server root, and who is asking."""

from __future__ import annotations

import contextlib
import json
import posixpath
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from jupyter_client.provisioning.factory import KernelProvisionerFactory
from jupyter_core.utils import ensure_async
from jupyter_server.auth.identity import User
from tornado import web

from ..protocol import IDENTITY_HEADER
from ..provisioner.sidecars import REGISTRY, Arrival, SidecarHandle

PROVISIONER = "kernel-collab"

MAX_IDENTITY_FIELD = 256
"""Characters kept of each field of an identity (a name of any length can join; the whole
identity travels in one header, which servers cap at 8 KiB)."""


def _field(value: str | None) -> str | None:
    return value[:MAX_IDENTITY_FIELD] if isinstance(value, str) else value


def identity_of(user: User, *, write: bool, execute: bool) -> dict[str, Any]:
    """The identity the sidecar stamps on a person's connection."""
    return {
        "username": _field(user.username),
        "name": _field(user.name or user.username),
        "display_name": _field(user.display_name or user.name or user.username),
        "initials": _field(user.initials),
        "color": _field(user.color),
        "avatar_url": _field(user.avatar_url),
        "permissions": {"write": write, "execute": execute},
    }


def identity_headers(identity: dict[str, Any]) -> dict[str, str]:
    """Headers of a proxied connection speaking for a person."""
    return {IDENTITY_HEADER: json.dumps(identity, separators=(",", ":"))}


async def ask_as(handle: SidecarHandle, identity: dict[str, Any],
                 request: dict[str, Any]) -> dict[str, Any]:
    """Send one request to a sidecar on behalf of a person and return its reply."""
    return await handle.exchange(request, identity_headers(identity))


Opened = tuple[SidecarHandle, dict[str, Any] | None, dict[str, Any] | None]
"""What :meth:`RoomManager.opening` gives: the room, its session, the room as described."""


class RoomManager:
    """Finds and opens rooms for the server extension."""

    def __init__(self, serverapp: Any, kernel_name: str, listing_wait: float = 10.0):
        self.serverapp = serverapp
        self.kernel_name = kernel_name
        self.listing_wait = listing_wait
        """Longest wait of :meth:`all_started`, in seconds."""
        self.root = Path(serverapp.root_dir).resolve()
        self._locks: dict[str, anyio.Lock] = {}
        self._starts: dict[str, anyio.Event] = {}
        """Notebooks whose collaborative session is being started (set when it ends)."""
        self._failures: dict[str, BaseException] = {}
        """Why a start ended before its room was served, for the opener to raise."""

    def api_path(self, path: str) -> str:
        """Normalise a notebook path from a URL; refuse one that leaves the server root."""
        path = path.strip("/")
        normal = posixpath.normpath(path) if path else ""
        if not normal or normal.startswith("..") or normal.startswith("/") or "\\" in normal:
            raise web.HTTPError(400, f"invalid notebook path {path!r}")
        if not normal.endswith(".ipynb"):
            raise web.HTTPError(400, f"{normal} is not a notebook (.ipynb)")
        absolute = (self.root / normal).resolve()
        if not absolute.is_relative_to(self.root):
            raise web.HTTPError(403, f"{normal} is outside the server root")
        return normal

    def absolute(self, api_path: str) -> Path:
        """The file of an API path."""
        return (self.root / api_path).resolve()

    def handle_for_path(self, api_path: str) -> SidecarHandle | None:
        """The live sidecar of a notebook, if any."""
        return REGISTRY.get(self.absolute(api_path))

    def handle_for_document(self, document_id: str) -> SidecarHandle | None:
        """The live sidecar serving a document id, if any."""
        return next((h for h in REGISTRY.live() if h.document_id == document_id), None)

    def handle_for_kernel(self, kernel_id: str) -> SidecarHandle | None:
        """The live sidecar a kernel is attached to, or is starting for, if any."""
        return next((h for h in REGISTRY.live()
                     if kernel_id in h.kernel_ids or h.starting_kernel == kernel_id), None)

    async def session_for(self, api_path: str) -> dict[str, Any] | None:
        """The server's session on a notebook path, if one exists (looked up by its path:
        listing every session built a model of each kernel, at every open)."""
        try:
            session = await self.serverapp.session_manager.get_session(path=api_path)
        except (web.HTTPError, KeyError):  # none, or its kernel is gone (the row is dropped)
            return None
        return dict(session) if session.get("kernel") else None

    def is_collaborative(self, kernel_id: str) -> bool:
        """Whether a kernel was started by the collaborative provisioner."""
        try:
            km = self.serverapp.kernel_manager.get_kernel(kernel_id)
        except KeyError:
            return False
        provisioner = getattr(km, "provisioner", None)
        return type(provisioner).__name__ == "CollabProvisioner"

    def collaborative_kernelspecs(self) -> set[str]:
        """Names of the kernelspecs whose provisioner is the collaborative one."""
        names = set()
        for name, entry in self.serverapp.kernel_spec_manager.get_all_specs().items():
            provisioner = (entry.get("spec", {}).get("metadata") or {}).get("kernel_provisioner")
            if isinstance(provisioner, dict) and provisioner.get("provisioner_name") == PROVISIONER:
                names.add(name)
        return names

    def server_wide(self) -> bool:
        """Whether every notebook session gets the collaborative provisioner."""
        return bool(KernelProvisionerFactory.instance().default_provisioner_name == PROVISIONER)

    async def mode(self, api_path: str) -> dict[str, Any]:
        """Whether a notebook opens collaboratively, and why: its room or session exists, its
        ``kernelspec.name`` is a collaborative kernelspec, or the server-wide mode is on."""
        session = await self.session_for(api_path)
        if session is not None:  # its kernel decides (a room may outlive a kernel change)
            collaborative = self.is_collaborative(session["kernel"]["id"])
            return {"collaborative": collaborative, "reason": "session",
                    "kernel_name": session["kernel"].get("name")}
        if self.handle_for_path(api_path) is not None:  # people in a room with no kernel
            return {"collaborative": True, "reason": "room"}
        if self.server_wide():
            return {"collaborative": True, "reason": "server-wide"}
        name = await self.file_kernel_name(api_path)
        return {"collaborative": name in self.collaborative_kernelspecs(), "reason": "kernelspec",
                "kernel_name": name}

    async def file_kernel_name(self, api_path: str) -> str | None:
        """The notebook's ``metadata.kernelspec.name`` (``None`` when absent or unreadable),
        read in a worker thread: parsing a large notebook held up everyone the server serves
        (~0.1 s for a 10 MB file)."""
        return await anyio.to_thread.run_sync(_kernel_name_in, self.absolute(api_path))

    @contextlib.asynccontextmanager
    async def opening(self, api_path: str) -> AsyncIterator[Opened]:
        """The notebook's room, its session (``None`` while its kernel starts) and, for a
        sidecar just started, the room as it described itself then, as soon as the document
        is served. If no collaborative session runs, one is started: its kernel launches
        beside the served document, and leaving the block waits for that start to end (never
        cancelled halfway). One opener decides at a time per notebook: a script racing a
        browser gets the same room and kernel."""
        lock = self._locks.setdefault(api_path, anyio.Lock())
        while True:
            await lock.acquire()  # released once the room is served, or known not to be
            try:
                handle, session, start = await self._find(api_path)
            except BaseException:
                lock.release()
                raise
            under_way = self._starts.get(api_path)
            if under_way is None or (handle is not None
                                     and (handle.starting_kernel or handle.kernel_ids)):
                break
            lock.release()  # a start under way whose kernel is not launching (yet): its end
            await under_way.wait()
        if not start:
            lock.release()
            assert handle is not None
            yield handle, session, None
            return
        starting = self._starts[api_path] = anyio.Event()
        arrived = Arrival()
        REGISTRY.notify(self.absolute(api_path), arrived)
        failure: BaseException | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._start_session, api_path, starting, arrived)
            try:
                await arrived.wait()  # served, its kernel launching; or the start ended
            finally:
                lock.release()
            handle = self.handle_for_path(api_path)
            if handle is not None:
                try:
                    yield handle, await self.session_for(api_path), arrived.room
                except BaseException as exc:  # noqa: BLE001 - raised once the start ended
                    failure = exc
        if failure is not None:
            raise failure
        if handle is None:
            error = self._failures.pop(api_path, None)
            if isinstance(error, web.HTTPError):
                raise error
            if error is not None:  # said as it was (a server's generic 500 says nothing)
                raise web.HTTPError(500, f"the collaborative session for {api_path} did not "
                                    f"start: {error}") from error
            raise web.HTTPError(500, f"the collaborative session for {api_path} has no sidecar")

    async def _find(
        self, api_path: str
    ) -> tuple[SidecarHandle | None, dict[str, Any] | None, bool]:
        """The notebook's room and session, and whether a session must be started for it."""
        if not self.absolute(api_path).is_file():
            raise web.HTTPError(404, f"no notebook at {api_path}")
        session = await self.session_for(api_path)
        if session is not None and not self.is_collaborative(session["kernel"]["id"]):
            raise web.HTTPError(
                409,
                f"{api_path} already has a session on kernel {session['kernel']['name']!r}, "
                "which is not collaborative; change its kernel to open it collaboratively",
            )
        handle = self.handle_for_path(api_path)
        if api_path in self._starts:  # its kernel is being started
            return handle, session, False
        start = session is None or handle is None or not handle.kernel_ids
        return handle, session, start

    async def _start_session(self, api_path: str, done: anyio.Event,
                             arrived: Arrival) -> None:  # fmt: skip
        """Create the notebook's collaborative session (the provisioner starts the sidecar,
        then launches the kernel); ``arrived`` is set once the sidecar serves and the kernel's
        launch is under way (``REGISTRY.notify``), or as this ends. A failure after that is
        logged (the room is told); one before is kept for :meth:`opening` to raise."""
        try:
            with anyio.CancelScope(shield=True):
                await self._create_session(api_path)
        except Exception as exc:  # noqa: BLE001 - logged, or raised by the opener
            if arrived.is_set():
                self.serverapp.log.error("kernel_collab: the kernel for %s did not start (the "
                                         "room stays open): %s", api_path, exc)  # fmt: skip
            else:
                self._failures[api_path] = exc
            handle = self.handle_for_path(api_path)
            if handle is not None:  # failed where the provisioner could not tell the room
                with anyio.CancelScope(shield=True):
                    await handle.kernel_failed(exc)
        finally:
            del self._starts[api_path]
            REGISTRY.unnotify(self.absolute(api_path), arrived)
            done.set()
            arrived.set()

    async def _create_session(self, api_path: str) -> None:
        """jupyter_server's session for the notebook, its checkpoint made meanwhile on a first
        open; raises what the session's creation raised (as it raised it, not in a group)."""
        failed: Exception | None = None
        async with anyio.create_task_group() as tg:
            if self.handle_for_path(api_path) is None:  # first open
                tg.start_soon(self._checkpoint, api_path)
            try:
                await self.serverapp.session_manager.create_session(
                    path=api_path,
                    name=posixpath.basename(api_path),
                    type="notebook",
                    kernel_name=await self._kernel_name_for(api_path),
                )
            except Exception as exc:  # noqa: BLE001 - raised below, once the checkpoint ended
                failed = exc
        if failed is not None:
            raise failed

    async def _checkpoint(self, api_path: str) -> None:
        """Make the notebook's checkpoint ("Revert to checkpoint" gets the version first
        opened), beside the session's start: the sidecar writes the file only once someone
        has changed it, seconds later. A failure is logged; the notebook opens all the same."""
        try:
            await ensure_async(self.serverapp.contents_manager.create_checkpoint(api_path))
        except Exception as exc:  # noqa: BLE001 - any contents manager's error: logged
            self.serverapp.log.warning("kernel_collab: no checkpoint of %s on opening it: %s",
                                       api_path, exc)  # fmt: skip

    async def all_started(self) -> None:
        """Wait until no kernel is being started for any notebook, or ``listing_wait`` s."""
        with anyio.move_on_after(self.listing_wait):
            while self._starts:
                await next(iter(self._starts.values())).wait()

    async def started(self, api_path: str) -> None:
        """Wait until no kernel is starting for the notebook (its session then exists, or
        the start failed)."""
        starting = self._starts.get(posixpath.normpath(api_path.strip("/") or "."))
        if starting is not None:
            await starting.wait()

    async def kernel_launched(self, kernel_id: str) -> None:
        """Wait until jupyter_server knows ``kernel_id`` when it is the kernel a room named
        while launching it (or until that start failed); at once for any other kernel."""
        if kernel_id in self.serverapp.kernel_manager:
            return
        handle = self.handle_for_kernel(kernel_id)
        if handle is None:
            return
        for api_path in [p for p in self._starts if self.handle_for_path(p) is handle]:
            await self.started(api_path)

    async def _kernel_name_for(self, api_path: str) -> str:
        """The notebook's own kernelspec when it is a collaborative one, else the default."""
        collaborative = self.collaborative_kernelspecs()  # each call reads every kernel.json
        if collaborative <= {self.kernel_name}:
            return self.kernel_name  # whatever the file names (its parse took ~1.5 ms)
        name = await self.file_kernel_name(api_path)
        return name if name and name in collaborative else self.kernel_name


def _kernel_name_in(path: Path) -> str | None:
    """``metadata.kernelspec.name`` of the notebook file at ``path`` (blocking)."""
    try:
        with path.open("rb") as f:
            metadata = json.load(f).get("metadata") or {}
    except (OSError, ValueError, AttributeError):
        return None
    name = (metadata.get("kernelspec") or {}).get("name")
    return name if isinstance(name, str) else None
