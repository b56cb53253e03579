"""Every place kernel_collab changes the behaviour of a host package, in one module (the lab
extension's patches of JupyterLab: ``labextension/src/hostpatches.ts``). Each patch names the
host versions it was written for; outside them, or when what it wraps is gone, it logs what
keeps the stock behaviour and changes nothing; :func:`problems` lists those cases (a unit test
fails on any). Host packages are imported inside each function: importing this costs nothing.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import logging
import os
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from .protocol import KERNEL_FEATURE

log = logging.getLogger("kernel_collab")

JUPYTER_SERVER = ((2, 14), (3, 0))
"""jupyter_server ``>=2.14,<3``: ``KernelActionHandler.post``, ``SessionManager.get_kernel_env``,
``session_exists`` and ``list_sessions``, ``web_app.add_handlers``."""
JUPYTER_CLIENT = ((8, 6), (9, 0))
"""jupyter_client ``>=8.6,<9``: ``MultiKernelManager._add_kernel_when_ready`` and
``_pending_kernels``."""
IPYKERNEL = ((7, 4), (8, 0))
"""ipykernel ``>=7.4,<8``: ``Kernel.shell_channel_thread_main`` on the shell channel thread."""
JUPYTER_SERVER_YDOC = ((2, 0), (4, 0))
"""jupyter_server_ydoc (jupyter-collaboration 4 and 5) ``>=2,<4``: ``DocSessionHandler.put``,
``YDocWebSocketHandler.prepare``, ``room_id_from_encoded_path``, ``decode_file_path``."""


def _version(module: str) -> tuple[int, ...]:
    value = str(getattr(importlib.import_module(module), "__version__", "0"))
    return tuple(int(part) for part in re.findall(r"\d+", value)[:2])


def _outside(module: str, span: tuple[tuple[int, int], tuple[int, int]]) -> list[str]:
    low, high = span
    version = _version(module)
    if low <= version < high:
        return []
    return [f"{module} {'.'.join(map(str, version))} is outside the versions this patch was "
            f"written for (>={low[0]}.{low[1]},<{high[0]})"]  # fmt: skip


def _async_method(owner: Any, name: str) -> bool:
    method = getattr(owner, name, None)
    return method is not None and inspect.iscoroutinefunction(inspect.unwrap(method))


def problems() -> list[str]:
    """Why any patch would not apply to the installed hosts (empty: every patch applies)."""
    sessions = importlib.import_module("jupyter_server.services.sessions.sessionmanager")
    found = _kernel_action_problems()
    if not callable(getattr(sessions.SessionManager, "get_kernel_env", None)):
        found.append("jupyter_server's SessionManager.get_kernel_env is gone")
    for name in ("session_exists", "list_sessions"):
        if not _async_method(sessions.SessionManager, name):
            found.append(f"jupyter_server's SessionManager.{name} is gone or not async")
    server = importlib.import_module("jupyter_server.serverapp")
    if not _async_method(server.ServerApp, "cleanup_extensions"):
        found.append("jupyter_server's ServerApp.cleanup_extensions is gone or not async")
    found += _outside("jupyter_client", JUPYTER_CLIENT)
    manager = importlib.import_module("jupyter_client.multikernelmanager")
    if not _async_method(manager.MultiKernelManager, "_add_kernel_when_ready"):
        found.append("jupyter_client's MultiKernelManager._add_kernel_when_ready is gone")
    found += _ipykernel_problems()
    try:
        ydoc = importlib.import_module("jupyter_server_ydoc.handlers")
    except ImportError:
        return found  # jupyter-collaboration is optional
    found += _outside("jupyter_server_ydoc", JUPYTER_SERVER_YDOC)
    for owner, name in (("DocSessionHandler", "put"), ("YDocWebSocketHandler", "prepare")):
        if not _async_method(getattr(ydoc, owner, None), name):
            found.append(f"jupyter_server_ydoc's {owner}.{name} is gone or no longer async")
    for name in ("room_id_from_encoded_path", "decode_file_path"):
        if not callable(getattr(ydoc, name, None)):
            found.append(f"jupyter_server_ydoc.handlers.{name} is gone")
    return found


# --- jupyter_server ---------------------------------------------------------------------------


def _kernel_action_problems() -> list[str]:
    handlers = importlib.import_module("jupyter_server.services.kernels.handlers")
    found = _outside("jupyter_server", JUPYTER_SERVER)
    if not _async_method(getattr(handlers, "KernelActionHandler", None), "post"):
        found.append("jupyter_server's KernelActionHandler.post is gone or no longer async")
    return found


def guard_stock_kernel_actions(
    act: Callable[[Any, str, str], Awaitable[None]],
    is_ours: Callable[[Any, str], bool],
    launched: Callable[[str], Awaitable[None]],
) -> bool:
    """jupyter_server's own ``POST /api/kernels/{id}/interrupt`` and ``/restart`` need only
    ``kernels:write``. For a collaborative kernel (``is_ours(handler, kernel_id)``), first
    ``act(handler, kernel_id, action)``: it checks ``kernels:execute`` (raising 403) and records
    who did it. Other kernels keep the stock behaviour. ``launched(kernel_id)`` is awaited
    first: a room names its kernel while it launches, before jupyter_server knows it (which
    would answer 404). Returns whether the guard is in place."""
    found = _kernel_action_problems()
    if found:
        log.warning("kernel_collab: %s: POST /api/kernels/{id}/interrupt and /restart keep "
                    "jupyter_server's own check (kernels:write) for collaborative kernels, and "
                    "are recorded as done by 'unknown'", found[0])  # fmt: skip
        return False
    cls = importlib.import_module("jupyter_server.services.kernels.handlers").KernelActionHandler
    original: Any = cls.post
    if getattr(original, "_kernel_collab_guard", False):
        return True

    @functools.wraps(original)
    async def post(self: Any, kernel_id: str, action: str) -> None:
        # Unauthenticated requests and unknown kernels get the stock answers (403, 404).
        if self.current_user:
            await launched(kernel_id)
            if is_ours(self, kernel_id):
                await act(self, kernel_id, action)
        await original(self, kernel_id, action)

    post._kernel_collab_guard = True  # type: ignore[attr-defined]
    cls.post = post
    return True


def pass_notebook_paths(sessions: Any, root: str, env_name: str) -> None:
    """Give each notebook session's kernel the real notebook path in ``env_name``
    (``JPY_SESSION_NAME`` is wrong when a session's name is not its file's name)."""
    original = sessions.get_kernel_env
    root = os.path.abspath(root)

    def get_kernel_env(path: str | None, name: Any = None) -> dict[str, str]:
        env: dict[str, str] = original(path, name)
        if path and re.search(r"\.ipynb$", path):
            env[env_name] = os.path.join(root, path.lstrip("/"))
        return env

    sessions.get_kernel_env = get_kernel_env


def _wait_before(owner: Any, name: str, wait: Callable[..., Awaitable[None]]) -> None:
    """Make the async method ``owner.name`` await ``wait`` (given the same arguments) first."""
    original = getattr(owner, name)

    async def waiting_first(*args: Any, **kwargs: Any) -> Any:
        await wait(*args, **kwargs)
        return await original(*args, **kwargs)

    setattr(owner, name, waiting_first)


def wait_for_session_starts(
    sessions: Any,
    started: Callable[[str], Awaitable[None]],
    all_started: Callable[[], Awaitable[None]],
) -> None:
    """While a notebook's collaborative session is being started (its room served, its kernel
    launching), ``GET /api/sessions`` (``list_sessions``) waits for every such start
    (``all_started``) and ``POST /api/sessions`` (``session_exists``) for that notebook's
    (``started(path)``). JupyterLab opening the notebook lists the sessions and joins the one
    on its path; finding none, it would start a second kernel (under a random path), which
    the provisioner refuses."""
    if not (_async_method(sessions, "session_exists") and _async_method(sessions, "list_sessions")):
        log.warning("kernel_collab: jupyter_server's SessionManager.session_exists or "
                    "list_sessions is gone or no longer async: a notebook opened while its "
                    "collaborative kernel starts may be refused a second kernel")  # fmt: skip
        return
    _wait_before(sessions, "session_exists", lambda path: started(path))  # (path=...)
    _wait_before(sessions, "list_sessions", all_started)


def finish_starts_before_cleanup(serverapp: Any, all_started: Callable[[], Awaitable[None]]
                                 ) -> None:  # fmt: skip
    """When the server stops, let the collaborative sessions being started end first
    (``all_started``, bounded), before extensions and kernels are cleaned up and the loop
    stops. A room request stays with its kernel's start; jupyter_server's contents manager,
    which that start uses, runs blocking calls in anyio worker threads whose life anyio ties
    to that request's task (no ``anyio.run`` hosts the loop), and they are not daemons: a
    request left pending kept the stopped server from exiting."""
    if not _async_method(serverapp, "cleanup_extensions"):
        log.warning("kernel_collab: jupyter_server's ServerApp.cleanup_extensions is gone or "
                    "no longer async: a server stopped while a collaborative kernel starts "
                    "may not exit")  # fmt: skip
        return
    _wait_before(serverapp, "cleanup_extensions", all_started)


def refuse_later_clashes(web_app: Any, probe: str, ours: type) -> None:
    """An extension loaded after ours that serves the route ``probe`` matches fails to load,
    saying why (tornado would otherwise silently give the route to whichever came first)."""
    original = web_app.add_handlers

    def add_handlers(host_pattern: str, handlers: list[Any]) -> None:
        for spec in handlers:
            pattern = spec[0] if isinstance(spec, tuple) else getattr(spec, "regex", None)
            pattern = getattr(pattern, "pattern", pattern)
            handler = spec[1] if isinstance(spec, tuple) else getattr(spec, "handler_class", None)
            if (isinstance(pattern, str) and "execute" in pattern and handler is not ours
                    and re.fullmatch(pattern, probe)):  # fmt: skip
                raise RuntimeError(
                    f"{handler} would serve {probe.replace('/x/', '/{kernel_id}/')}, which "
                    "kernel_collab serves: disable one of the two extensions"
                )
        original(host_pattern, handlers)

    web_app.add_handlers = add_handlers


# --- jupyter_client ---------------------------------------------------------------------------


def forget_failed_kernel_starts(manager: Any) -> None:
    """jupyter_client 8.10 keeps a kernel whose start failed in ``_pending_kernels`` forever,
    so the server's shutdown fails on it (404) and hangs. The collaborative provisioner refuses
    some starts on purpose (a second kernel for a notebook), so drop such ghosts."""
    found = _outside("jupyter_client", JUPYTER_CLIENT)
    if found or not hasattr(manager, "_add_kernel_when_ready"):
        log.warning("kernel_collab: %s: a kernel start refused by the provisioner may stay "
                    "pending in the kernel manager", (found or ["no _add_kernel_when_ready"])[0])
        return
    original = manager._add_kernel_when_ready

    async def add_kernel_when_ready(kernel_id: str, km: Any, awaitable: Any) -> None:
        await original(kernel_id, km, awaitable)
        if kernel_id not in manager._kernels:
            manager._pending_kernels.pop(kernel_id, None)

    manager._add_kernel_when_ready = add_kernel_when_ready


def start_under_way(manager: Any, kernel_id: str) -> bool:
    """Whether the kernel manager is still starting ``kernel_id`` (its start task, in
    ``_pending_kernels``, is not done; ``True`` when the manager keeps no such record)."""
    pending = getattr(manager, "_pending_kernels", None)
    if not isinstance(pending, dict):
        return True
    start = pending.get(kernel_id)
    return start is not None and not (isinstance(start, asyncio.Future) and start.done())


# --- ipykernel (inside the kernel) ------------------------------------------------------------


def _ipykernel_problems() -> list[str]:
    kernelbase = importlib.import_module("ipykernel.kernelbase")
    found = _outside("ipykernel", IPYKERNEL)
    if not _async_method(kernelbase.Kernel, "shell_channel_thread_main"):
        found.append("ipykernel's Kernel.shell_channel_thread_main is gone or no longer async")
    if not isinstance(getattr(kernelbase.Kernel, "kernel_info", None), property):
        found.append("ipykernel's Kernel.kernel_info is no longer a property")
    return found


def _advertise(kernel_class: type) -> None:
    original = getattr(kernel_class, "kernel_info", None)
    if not isinstance(original, property) or getattr(original.fget, "_kernel_collab", False):
        return

    def kernel_info(self: Any) -> dict[str, Any]:
        info = dict(original.__get__(self))
        info["supported_features"] = [*info.get("supported_features", []), KERNEL_FEATURE]
        return info

    kernel_info._kernel_collab = True  # type: ignore[attr-defined]
    kernel_class.kernel_info = property(kernel_info)  # type: ignore[attr-defined]


def take_sync_messages(kernel: Any, take: Callable[[list[Any]], bool]) -> str | None:
    """Give ``take(frames)`` each shell message first, on ipykernel's shell channel thread, before
    ipykernel routes it; a message it takes (returns True) is never dispatched (why the sidecar's
    sync messages need this: docs/architecture.md, "The kernel's comm"). Returns why it could not
    (then the in-kernel API is unavailable), or None."""
    problems = _ipykernel_problems()
    if problems:
        return "; ".join(problems)
    thread = getattr(kernel, "shell_channel_thread", None)
    if thread is None:
        return "this kernel runs without ipykernel's shell channel thread (subshells are off)"
    original = kernel.shell_channel_thread_main

    async def shell_channel_thread_main(msg: list[Any]) -> None:
        if not take(msg):
            await original(msg)

    _advertise(type(kernel))
    kernel.shell_channel_thread_main = shell_channel_thread_main  # for a kernel not started
    if getattr(kernel, "io_loop", None) is not None and kernel.shell_stream is not None:
        # Already started: the stream holds the old callback; swap it on the stream's thread.
        swapped = threading.Event()

        def swap() -> None:
            kernel.shell_stream.on_recv(shell_channel_thread_main, copy=False)
            swapped.set()

        thread.io_loop.add_callback(swap)
        if not swapped.wait(10):
            return "ipykernel's shell channel thread did not answer within 10 s"
    return None


# --- jupyter-collaboration (jupyter_server_ydoc) -----------------------------------------------


def guard_jupyter_collaboration(refuse: Callable[[str], Awaitable[None]], file_path: Callable[
        [Any, str], str | None]) -> bool:  # fmt: skip
    """With jupyter-collaboration installed too, its document sessions and room WebSockets go
    through ``refuse(path)`` first (it raises 409 for notebooks a sidecar owns), so no file
    has two writers. ``file_path(handler, file_id)`` resolves a room's file. Returns False
    when jupyter-collaboration is absent or outside the versions this was written for."""
    try:
        handlers = importlib.import_module("jupyter_server_ydoc.handlers")
    except ImportError:
        return False
    found = _outside("jupyter_server_ydoc", JUPYTER_SERVER_YDOC)
    if found:
        log.warning("kernel_collab: %s: jupyter-collaboration may open a second room on a "
                    "notebook a sidecar owns", found[0])  # fmt: skip
        return False
    session_handler = handlers.DocSessionHandler
    socket_handler = handlers.YDocWebSocketHandler
    if getattr(session_handler, "_kernel_collab_guarded", False):
        return True
    original_put = session_handler.put
    original_prepare = socket_handler.prepare

    @functools.wraps(original_put)
    async def put(self: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        await refuse(path)
        return await original_put(self, path, *args, **kwargs)

    @functools.wraps(original_prepare)
    async def prepare(self: Any) -> Any:
        room_id = handlers.room_id_from_encoded_path(self.request.path)
        if room_id.count(":") >= 2:
            _, _, file_id = handlers.decode_file_path(room_id)
            path = file_path(self, file_id)
            if path:
                await refuse(path)
        return await original_prepare(self)

    session_handler.put = put
    socket_handler.prepare = prepare
    session_handler._kernel_collab_guarded = True
    return True
