"""``python -m kernel_collab.sidecar.forkserver FD``: one process per Jupyter server that has
imported everything a sidecar needs and forks a sidecar per notebook on request, so the
notebooks share those pages (docs/architecture.md, "The fork server").

It reads fork requests on the Unix socket ``FD`` (the server's other end): a frame
(``protocol.encode_frame``) ``{"argv", "env", "cwd"}`` sent with the child's stdin, stdout,
stderr and exit-status pipe (``protocol.FORK_FDS``); it forks, answers ``{"pid": N}`` (or
``{"error": ...}``), and writes the child's exit code to its status pipe once it has reaped it.
It never runs an event loop or a thread (forking either is unsafe), and exits when the socket
closes (the server is gone); its sidecars live on, each watching its own stdin.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import select
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .. import protocol

PRELOAD = (
    "kernel_collab.sidecar.__main__",  # first: it keeps jsonschema's format checkers out
    "kernel_collab.sidecar.app",
    "nbformat.sign",
    "zmq.asyncio",
    "jupyter_client.asynchronous.client",
    "psutil",  # jupyter_client.localinterfaces imports it at a kernel's first attach (10 ms)
    "anyio._backends._asyncio",  # what anyio and the codecs import once a sidecar runs
    "anyio.streams.tls",
    "encodings.unicode_escape",
)
"""Imported once here: every sidecar of the server shares these pages."""

SPARE_DELAY = 1.0
"""Seconds after a fork request before the next spare is forked (see :class:`_Spare`)."""


def _receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """One request and its descriptors; ``None`` at end of file."""
    first, fds, _flags, _addr = socket.recv_fds(sock, 65536, protocol.FORK_FDS)
    if not first:
        for fd in fds:
            os.close(fd)
        return None
    data = first
    try:
        while (request := protocol.decode_frame(data)) is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise ValueError("the request was cut short")
            data += chunk
        if len(fds) != protocol.FORK_FDS:
            raise ValueError(f"not a fork request with its {protocol.FORK_FDS} descriptors")
    except ValueError:
        for fd in fds:
            os.close(fd)
        raise
    return request, fds


def _detach(inherited: list[int]) -> None:
    """In a new child: drop the fork server's descriptors and signal set-up, start a session
    (like start_new_session: the server's Ctrl+C is not the sidecar's). A child that cannot
    exits: it never returns into the fork server's loop."""
    try:
        for fd in inherited:
            with contextlib.suppress(OSError):
                os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
    except BaseException:  # noqa: BLE001 - reported, then this child exits with 1
        traceback.print_exc()
        os._exit(1)


def _become(request: dict[str, Any], fds: list[int]) -> None:
    """Become the sidecar the request describes (in a detached child); never returns."""
    code = 1
    try:
        *streams, status = fds
        os.close(status)
        for target, fd in enumerate(streams):  # stdin, stdout, stderr
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(request["env"]).items()})
        os.chdir(str(request["cwd"]))
        argv = [str(arg) for arg in request["argv"]]
        sys.argv = ["kernel_collab.sidecar", *argv]
        from .app import main

        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:  # noqa: BLE001 - reported, then this child exits with 1
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


def _fork(request: dict[str, Any], fds: list[int], inherited: list[int]) -> int:
    """Fork a child that becomes the sidecar at once."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _detach(inherited)
        _become(request, fds)
    return pid


class _Spare:
    """A child forked ahead of the next request, waiting for it on a socket of its own: a
    request is handed to it (its descriptors passed along) instead of forking then, which
    took ~2.5 ms of each first open (copying the fork server's page tables) and the child's
    first writes to the pages it shares (copy-on-write)."""

    def __init__(self, inherited: list[int]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            raise
        if pid == 0:
            ours.close()
            _detach(inherited)
            _wait_for_request(theirs)
        theirs.close()
        self.pid = pid
        self.sock = ours

    @classmethod
    def make(cls, inherited: list[int]) -> _Spare | None:
        """A new spare, or ``None`` if it cannot fork now (requests then fork as they come)."""
        try:
            return cls(inherited)
        except OSError as exc:
            print(f"kernel_collab fork server: no spare ({exc})", file=sys.stderr)
            return None

    def hand(self, request: dict[str, Any], fds: list[int]) -> int | None:
        """Give it the request; its pid, or ``None`` if it is gone (then fork instead)."""
        try:
            socket.send_fds(self.sock, [protocol.encode_frame(request)], fds)
        except OSError:
            return None
        finally:
            self.sock.close()
        return self.pid


def _wait_for_request(sock: socket.socket) -> None:
    """A spare's life: wait for its request and become that sidecar; exit at end of file (the
    fork server is gone) or on a bad hand-over. Never returns (into the fork server's loop,
    whatever happens)."""
    try:
        _warm_child()
    except Exception:  # noqa: BLE001 - warming only saves time: the sidecar starts all the same
        traceback.print_exc()
    try:
        received = _receive(sock)
    except BaseException as exc:  # noqa: BLE001 - reported, then this child exits with 1
        print(f"kernel_collab fork server: spare {os.getpid()} got no request ({exc!r})",
              file=sys.stderr)  # fmt: skip
        os._exit(1)
    if received is None:
        os._exit(0)
    sock.close()
    _become(*received)


def _warm_child() -> None:
    """What every sidecar does first and a spare can do before its request: parse a command
    line (traitlets builds a parser of every option of every class: 3.4 ms in a new child,
    most of it its first writes to the pages it shares), out of the open's way."""
    from .app import SidecarApp

    SidecarApp().parse_command_line(["warm.ipynb", "--port", "0"])


def _reap(status: dict[int, int]) -> None:
    """Collect exited sidecars; tell each one's server end its exit code."""
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = status.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(OSError):  # the server is gone: nobody to tell
                os.write(fd, str(os.waitstatus_to_exitcode(wait_status)).encode())
            os.close(fd)


def serve(sock: socket.socket) -> None:
    """Fork sidecars on request until the socket closes."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd does the work
    status: dict[int, int] = {}

    def inherited() -> list[int]:
        """What a child must not keep: the server's socket, the wakeup pipe, the exit-status
        pipes of its siblings."""
        return [sock.fileno(), wake_r, wake_w, *status.values()]

    spare: _Spare | None = None
    spare_due = 0.0
    while True:
        if spare is None and time.monotonic() >= spare_due:
            spare = _Spare.make(inherited())
            spare_due = time.monotonic() + SPARE_DELAY  # when one that failed is tried again
        wait = None if spare is not None else max(0.0, spare_due - time.monotonic())
        readable, _, _ = select.select([sock.fileno(), wake_r], [], [], wait)
        if wake_r in readable:
            os.read(wake_r, 512)
            _reap(status)
        if sock.fileno() not in readable:
            continue
        try:
            received = _receive(sock)
        except (ValueError, OSError) as exc:
            print(f"kernel_collab fork server: bad request ({exc})", file=sys.stderr)
            sock.sendall(protocol.encode_frame({"error": str(exc)}))
            continue
        if received is None:
            if spare is not None:
                spare.sock.close()  # the spare exits at end of file
            return
        request, fds = received
        try:
            pid = (spare and spare.hand(request, fds)) or _fork(request, fds, inherited())
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            sock.sendall(protocol.encode_frame({"error": f"fork failed: {exc}"}))
        else:
            for fd in fds[:-1]:  # the child's streams are the child's now
                os.close(fd)
            status[pid] = fds[-1]
            sock.sendall(protocol.encode_frame({"pid": pid}))
        # The next spare once this sidecar has loaded: forking and warming it beside the load
        # took a core from it.
        spare, spare_due = None, time.monotonic() + SPARE_DELAY
        _reap(status)  # a child that died at once


WARM_NOTEBOOK = (
    b'{"cells": [{"cell_type": "code", "execution_count": null, "id": "warm", "metadata": {}, '
    b'"outputs": [], "source": "x"}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
)


def _warm() -> None:
    """Do once what each sidecar's first load and save would: nbformat compiles its schema
    validator on first use (about 30 ms), and so does our cell-by-cell check of it (4.5 and
    4.4, the versions files are written in)."""
    from ..notebook_core import files, schema_check

    schema_check.checks(4)
    nb = files.parse(Path("warm.ipynb"), WARM_NOTEBOOK)
    files.validate(nb)
    files.serialize(nb)


def main() -> None:
    """Import what sidecars need, freeze it out of the collector's way, then serve."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(True)
    for name in PRELOAD:
        importlib.import_module(name)
    _warm()
    gc.collect()
    gc.freeze()  # the collector never writes to these objects' pages: they stay shared
    serve(sock)


if __name__ == "__main__":
    main()
