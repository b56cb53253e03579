"""Sidecar processes as seen from the Jupyter server, one :class:`SidecarHandle` per notebook path
in ``REGISTRY`` (docs/architecture.md, "Lifecycle", "Environment, ready line, runtime records")."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from jupyter_core.paths import jupyter_runtime_dir
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from .. import protocol
from ..protocol import ADMIN_TOKEN_ENV, TOKEN_ENV, parse_ready_line, write_private_json
from . import forks

SidecarProcess = Process | forks.ForkedProcess
"""A sidecar's process: forked by the fork server, or an interpreter of its own."""


class SidecarError(RuntimeError):
    """A sidecar could not be started or reached; the message says which and why."""


@dataclass
class SidecarHandle:
    """A running sidecar for one notebook."""

    notebook: Path
    root: Path
    process: SidecarProcess
    url: str
    token: str
    admin_token: str
    kernel_ids: set[str] = field(default_factory=set)
    runtime_file: Path | None = None
    document_id: str | None = None
    handoff: str = ""
    """The abstract Unix socket the server hands browser connections to ("": proxy them)."""
    starting_kernel: str | None = None
    """The id of a kernel being launched for this notebook, until it is attached or its
    start failed (the room is served meanwhile)."""

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.returncode is None

    async def exchange(self, obj: dict[str, Any], headers: dict[str, str] | None = None,
                       timeout: float = 30) -> dict[str, Any]:  # fmt: skip
        """Send one request on a connection with the admin token (and ``headers``, e.g. the
        identity of the person it is for) and return the reply, whatever it says."""
        try:
            # Speaking for nobody, it only makes requests: it need not join the room.
            url = self.url if headers else f"{self.url}?{protocol.REQUESTS_ONLY_QUERY}"
            with anyio.fail_after(timeout):
                async with ws_connect(
                    url,
                    additional_headers={**(headers or {}), **admin_headers(self)},
                    max_size=None,
                ) as ws:
                    await ws.send(protocol.encode_request(obj))
                    async for data in ws:
                        if isinstance(data, bytes) and data[:1] == bytes([protocol.REQUEST]):
                            reply = protocol.decode(data).request
                            assert reply is not None
                            return reply
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
            # InvalidHandshake: a sidecar shutting down answers 503; ConnectionClosed: it
            # went away before replying.
            raise SidecarError(f"sidecar for {self.notebook} unreachable: {exc}") from exc
        raise SidecarError(f"sidecar for {self.notebook} closed before replying")

    def is_starting(self, kernel_id: str | None = None) -> bool:
        """Whether a kernel (``kernel_id``, or any) is being launched for this notebook."""
        return self.starting_kernel is not None and kernel_id in (None, self.starting_kernel)

    async def kernel_failed(self, error: Exception, kernel_id: str | None = None) -> bool:
        """The kernel being launched for this notebook (``kernel_id``, or whichever it is)
        could not start: the room stops showing it as starting and says why (runs queued for
        it are cancelled). False when no such kernel was starting."""
        if not self.is_starting(kernel_id):
            return False
        self.starting_kernel = None
        try:
            await self.request({"type": "detach_kernel", "reason": "failed",
                                "error": f"{type(error).__name__}: {error}"})  # fmt: skip
        except SidecarError as exc:
            logging.getLogger("kernel_collab").warning("kernel_collab: %s", exc)
        return True

    async def request(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Send one admin request and return its reply (raising :class:`SidecarError`)."""
        reply = await self.exchange(obj)
        if not reply.get("ok"):
            raise SidecarError(
                f"sidecar for {self.notebook} refused {obj.get('type')}: {reply.get('error')}"
            )
        return reply


def admin_headers(handle: SidecarHandle) -> dict[str, str]:
    """Headers of a connection made with a sidecar's admin token. The token travels in a
    header rather than in the URL, so no error message or log line naming the URL has it."""
    return {"Authorization": f"token {handle.admin_token}"}


def runtime_dir() -> Path:
    """Where sidecar runtime files live (created private to the user)."""
    path = Path(jupyter_runtime_dir()) / "kernel_collab"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


class Arrival:
    """What an opener waits for (:meth:`SidecarRegistry.notify`): a sidecar registered for
    its notebook, or a kernel being launched for the one running."""

    def __init__(self) -> None:
        self._event = anyio.Event()
        self.room: dict[str, Any] | None = None
        """The room as a new sidecar's ready line described it (``None``: ask the sidecar)."""

    def set(self, room: dict[str, Any] | None = None) -> None:
        """Arrived (``room``: as the new sidecar described it)."""
        if not self._event.is_set():
            self.room = room
            self._event.set()

    def is_set(self) -> bool:
        """Whether it arrived (or the wait was ended)."""
        return self._event.is_set()

    async def wait(self) -> None:
        """Until it arrives."""
        await self._event.wait()


class SidecarRegistry:
    """The server process's sidecars, by notebook path."""

    def __init__(self) -> None:
        self.handles: dict[Path, SidecarHandle] = {}
        self.locks: dict[Path, anyio.Lock] = {}
        """One per notebook: two kernels starting at once must not start two sidecars."""
        self.arrivals: dict[Path, list[Arrival]] = {}
        """Events set once a sidecar for the notebook is registered (:meth:`notify`)."""
        self.log = logging.getLogger("kernel_collab")

    def live(self) -> Iterator[SidecarHandle]:
        """The sidecars still running (each checked when it is reached)."""
        return (handle for handle in list(self.handles.values()) if handle.alive)

    def get(self, notebook: Path) -> SidecarHandle | None:
        """The live sidecar for a notebook, if any."""
        handle = self.handles.get(notebook)
        if handle is not None and not handle.alive:
            return None
        return handle

    def notify(self, notebook: Path, event: Arrival) -> None:
        """Set ``event`` once a sidecar for ``notebook`` is registered, or a kernel is being
        launched for it (:meth:`kernel_starting`)."""
        self.arrivals.setdefault(notebook, []).append(event)

    def unnotify(self, notebook: Path, event: Arrival) -> None:
        """Drop an event given to :meth:`notify` (no longer waited for)."""
        events = self.arrivals.get(notebook, [])
        if event in events:
            events.remove(event)
        if not events:
            self.arrivals.pop(notebook, None)

    def _register(self, handle: SidecarHandle, room: dict[str, Any] | None = None) -> None:
        self.handles[handle.notebook] = handle
        self._arrived(handle.notebook, room)

    def kernel_starting(self, handle: SidecarHandle, kernel_id: str) -> None:
        """A kernel is being launched for a running sidecar's notebook (it counts as arrived
        for :meth:`notify`)."""
        handle.starting_kernel = kernel_id
        self._arrived(handle.notebook)

    def _arrived(self, notebook: Path, room: dict[str, Any] | None = None) -> None:
        for event in self.arrivals.pop(notebook, []):
            event.set(room)

    async def ensure(
        self, notebook: Path, root: Path, extra_args: list[str], start_timeout: float,
        fork: bool = True, starting_kernel: str | None = None,
    ) -> SidecarHandle:
        """The notebook's sidecar, started if none runs (``starting_kernel``: the id of the
        kernel it is started for, registered with it)."""
        async with self.locks.setdefault(notebook, anyio.Lock()):
            handle = self.get(notebook)
            if handle is None:
                handle = await self.start(notebook, root, extra_args, start_timeout, fork,
                                          starting_kernel)  # fmt: skip
            return handle

    async def _launch(self, args: list[str], env: dict[str, str], fork: bool) -> SidecarProcess:
        """Fork the sidecar from the fork server (its imports shared with the server's other
        sidecars), or run it as a new interpreter where forking is off or fails."""
        if fork and forks.available():
            try:
                return await forks.FORKS.spawn(args, env)
            except forks.ForkError as exc:
                self.log.warning("kernel_collab: %s; starting the sidecar on its own", exc)
        return await anyio.open_process(
            [sys.executable, "-m", "kernel_collab.sidecar", *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=None, env=env, start_new_session=True,
        )  # fmt: skip

    async def start(
        self, notebook: Path, root: Path, extra_args: list[str], start_timeout: float,
        fork: bool = True, starting_kernel: str | None = None,
    ) -> SidecarHandle:
        """Launch a sidecar and wait for its ready line."""
        token, admin_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        env = {**os.environ, TOKEN_ENV: token, ADMIN_TOKEN_ENV: admin_token}
        args = [str(notebook), "--root", str(root), "--port", "0", "--watch-stdin", *extra_args]
        # Abstract Unix sockets are Linux's; elsewhere browsers' connections are proxied.
        handoff = f"kernel_collab-{secrets.token_hex(16)}" if sys.platform == "linux" else ""
        if handoff:
            args += ["--handoff-socket", handoff]
        process = await self._launch(args, env, fork)
        assert process.stdout is not None
        line = b""
        with anyio.move_on_after(start_timeout):
            async for chunk in process.stdout:
                line += chunk
                if b"\n" in line:
                    break
        first = line.partition(b"\n")[0].decode(errors="replace")
        ready = parse_ready_line(first)
        if ready is None:
            if process.returncode is None:
                process.kill()
            await process.wait()
            reason = first.strip()
            raise SidecarError(
                f"the kernel_collab sidecar for {notebook} did not start "
                f"(exit code {process.returncode}): {reason or 'see the server log'}"
            )
        url, document_id = ready.url, ready.document_id
        # Known before any kernel attaches, so browsers can rejoin a restarted sidecar at once.
        handle = SidecarHandle(notebook, root, process, url, token, admin_token,
                               document_id=document_id, handoff=handoff,
                               starting_kernel=starting_kernel)  # fmt: skip
        handle.runtime_file = self._write_runtime_file(handle)
        self._register(handle, ready.room)
        self.log.info("kernel_collab: sidecar for %s at %s (pid %d)", notebook, url, process.pid)
        return handle

    def _write_runtime_file(self, handle: SidecarHandle) -> Path:
        name = sha256(str(handle.notebook).encode()).hexdigest()[:16]
        path = runtime_dir() / f"sidecar-{name}.json"
        data = {
            "notebook": str(handle.notebook),
            "root": str(handle.root),
            "url": handle.url,
            "token": handle.token,
            "admin_token": handle.admin_token,
            "pid": handle.process.pid,
        }
        write_private_json(path, data)
        return path

    def moved(self, handle: SidecarHandle, new_notebook: Path) -> None:
        """Re-key a sidecar whose notebook was renamed."""
        self.forget(handle)
        handle.notebook = new_notebook
        self._register(handle)
        handle.runtime_file = self._write_runtime_file(handle)

    def forget(self, handle: SidecarHandle) -> None:
        """Drop a stopped sidecar and its runtime file."""
        if self.handles.get(handle.notebook) is handle:
            del self.handles[handle.notebook]
        if handle.runtime_file is not None:
            handle.runtime_file.unlink(missing_ok=True)


REGISTRY = SidecarRegistry()
