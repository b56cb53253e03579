"""The server's end of the sidecars' fork server (docs/architecture.md, "The fork server"):
``FORKS.spawn`` starts the fork server on first use and asks it for a sidecar, returning a
:class:`ForkedProcess` that the registry uses as it uses anyio's ``Process``."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio

from .. import protocol


class ForkError(RuntimeError):
    """The fork server could not be started or did not fork; the message says why."""


def available() -> bool:
    """Whether this platform can pass descriptors and watch another process's exit (Linux)."""
    return sys.platform == "linux" and hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")


class _PipeReader:
    """Chunks read from a pipe, as ``anyio.abc.Process.stdout`` yields them."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            await anyio.wait_readable(self.fd)
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                return
            yield chunk


class ForkedProcess:
    """A sidecar forked by the fork server: its pid, stdin, stdout and exit code."""

    def __init__(self, pid: int, stdin: int, stdout: int, status: int) -> None:
        self.pid = pid
        self.stdin = stdin
        """Kept open: the sidecar saves and exits when it closes (this process is gone)."""
        self.stdout = _PipeReader(stdout)
        self._status = status
        self._pidfd: int | None = None
        with contextlib.suppress(ProcessLookupError):  # exited, and reaped, already
            self._pidfd = os.pidfd_open(pid)
        self._returncode: int | None = None
        self._orphaned = False
        for fd in (stdout, status):
            os.set_blocking(fd, False)

    @property
    def returncode(self) -> int | None:
        """The exit code once the sidecar has exited (-1 if the fork server died before it)."""
        if self._returncode is None:
            self._poll()
        return self._returncode

    def _poll(self) -> None:
        if not self._orphaned:
            try:
                data = os.read(self._status, 32)
            except BlockingIOError:
                return
            if data:
                self._exited(int(data))
                return
            self._orphaned = True  # the fork server died: only the pidfd can tell now
        if self._pidfd is None or select.select([self._pidfd], [], [], 0)[0]:
            self._exited(-1)

    def _exited(self, code: int) -> None:
        self._returncode = code
        for fd in (self.stdout.fd, self._status, self._pidfd):
            if fd is None:
                continue
            with contextlib.suppress(RuntimeError):  # outside an event loop: nobody waits
                anyio.notify_closing(fd)  # wakes a task waiting on it
            os.close(fd)
        os.close(self.stdin)

    def send_signal(self, signum: int) -> None:
        """Signal the sidecar (nothing once it has exited)."""
        if self.returncode is None and self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signum)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    async def wait(self) -> int:
        """Wait for the exit code."""
        while (code := self.returncode) is None:
            with contextlib.suppress(anyio.ClosedResourceError):  # another task saw the exit
                watched = self._pidfd if self._orphaned else self._status
                if watched is not None:
                    await anyio.wait_readable(watched)
        return code


class ForkServer:
    """The fork server of this Jupyter server process (started on first use, restarted if it
    died)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lock = anyio.Lock()

    def _start(self) -> socket.socket:
        if self._process is not None and self._process.poll() is None and self._sock:
            return self._sock
        if self._sock is not None:
            self._sock.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "kernel_collab.sidecar.forkserver", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            ours.close()
            raise ForkError(f"the fork server did not start: {exc}") from exc
        finally:
            theirs.close()
        self._sock = ours
        return ours

    def prestart(self) -> None:
        """Start the fork server now (it imports in the background), not at the first fork."""
        self._start()

    async def spawn(self, argv: list[str], env: dict[str, str], cwd: str | None = None,
                    stderr: int = 2) -> ForkedProcess:  # fmt: skip
        """Fork a sidecar running ``python -m kernel_collab.sidecar ARGV`` in ``env`` and
        ``cwd`` (this process's by default), its stderr on the descriptor ``stderr``."""
        async with self._lock:
            sock = self._start()
            stdin_r, stdin_w = os.pipe()
            stdout_r, stdout_w = os.pipe()
            status_r, status_w = os.pipe()
            request = {"argv": argv, "env": env, "cwd": cwd or os.getcwd()}
            try:
                socket.send_fds(sock, [protocol.encode_frame(request)],
                                [stdin_r, stdout_w, stderr, status_w])  # fmt: skip
                reply = await _read_frame(sock)
            except (OSError, ValueError) as exc:
                for fd in (stdin_w, stdout_r, status_r):
                    os.close(fd)
                raise ForkError(f"the fork server did not answer: {exc}") from exc
            finally:
                for fd in (stdin_r, stdout_w, status_w):
                    os.close(fd)
        if not isinstance(reply.get("pid"), int):
            for fd in (stdin_w, stdout_r, status_r):
                os.close(fd)
            raise ForkError(f"the fork server did not fork: {reply.get('error', reply)}")
        return ForkedProcess(reply["pid"], stdin_w, stdout_r, status_r)


async def _read_frame(sock: socket.socket) -> dict[str, Any]:
    data = b""
    while (reply := protocol.decode_frame(data)) is None:
        with anyio.fail_after(30):
            await anyio.wait_readable(sock)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the fork server exited")
        data += chunk
    return reply


FORKS = ForkServer()
