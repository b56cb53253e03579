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


def _child(request: dict[str, Any], fds: list[int], inherited: list[int]) -> None:
    """Become the sidecar the request describes; never returns."""
    code = 1
    try:
        for fd in inherited:
            os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()  # like start_new_session: the server's Ctrl+C is not the sidecar's
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
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(request, fds, inherited)
    for fd in fds[:-1]:  # the child's streams are the child's now
        os.close(fd)
    return pid


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
    inherited = [sock.fileno(), wake_r, wake_w]
    while True:
        readable, _, _ = select.select([sock.fileno(), wake_r], [], [])
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
            return
        request, fds = received
        try:
            pid = _fork(request, fds, inherited)
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            sock.sendall(protocol.encode_frame({"error": f"fork failed: {exc}"}))
            continue
        status[pid] = fds[-1]
        sock.sendall(protocol.encode_frame({"pid": pid}))
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
