"""A real Jupyter server in a subprocess, with its own root and runtime directories."""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

START_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class JupyterServer:
    """A running server: its URL, token, directories and log."""

    proc: subprocess.Popen[str]
    url: str
    token: str
    root: Path
    runtime: Path
    log_lines: list[str] = field(default_factory=list)
    log_ended: threading.Event = field(default_factory=threading.Event)
    """Set once every process writing to the server's stderr (the sidecars too) is gone."""

    @property
    def log(self) -> str:
        """Everything the server (and the sidecars it started) logged."""
        return "".join(self.log_lines)

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        """An HTTP client authenticated with the server's token (or another one)."""
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"token {token or self.token}"},
            timeout=60,
        )

    def sync_url(self, document_id: str) -> str:
        """The browser-facing WebSocket of a room."""
        return self.url.replace("http", "ws", 1) + f"/api/kernel-collab/sync/{document_id}"

    async def kernel_connection_file(self, kernel_id: str) -> str:
        """A kernel's connection file, once its launch has ended (a room is answered while
        its kernel launches; listing the sessions waits for that)."""
        async with self.client() as http:
            (await http.get("/api/sessions")).raise_for_status()
        path = self.runtime / f"kernel-{kernel_id}.json"
        assert path.exists(), f"kernel {kernel_id} has no connection file once started"
        return str(path)

    async def open_room(self, path: str, token: str | None = None) -> dict[str, Any]:
        """``PUT /api/kernel-collab/rooms/{path}``, which must succeed."""
        async with self.client(token) as http:
            response = await http.put(f"/api/kernel-collab/rooms/{path}")
            assert response.status_code == 200, response.text
            room: dict[str, Any] = response.json()
            return room

    async def start_session(self, path: str, kernel: str = "python3-collab",
                            name: str | None = None) -> dict[str, Any]:
        """``POST /api/sessions`` for a notebook, as JupyterLab does."""
        async with self.client() as http:
            body = {"path": path, "type": "notebook", "name": name if name is not None else path,
                    "kernel": {"name": kernel}}
            response = await http.post("/api/sessions", json=body)
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

    def sidecars(self) -> list[dict[str, Any]]:
        """The runtime files of the sidecars this server started."""
        folder = self.runtime / "kernel_collab"
        if not folder.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(folder.glob("sidecar-*.json"))]

    def sidecar(self, notebook: Path) -> dict[str, Any]:
        """The runtime record of a notebook's sidecar (written before the session starts)."""
        for record in self.sidecars():
            if Path(record["notebook"]) == notebook.resolve():
                return record
        raise AssertionError(f"no sidecar runtime file for {notebook}:\n{self.log}")

    def kill(self) -> None:
        """``kill -9`` the server process."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def _wait_listening(port: int, timeout: float) -> None:
    """Return once the server accepts connections: its "is running at" line comes just before
    it binds its port (a callback on its event loop), and no line says it has."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
            return
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextmanager
def running_server(
    root: Path, runtime: Path, *args: str, env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> Iterator[JupyterServer]:
    """Start ``jupyter server`` on ``root`` and stop it (SIGTERM, then kill) at the end.

    ``env`` adds to (or overrides) the environment the server and its kernels inherit (a
    value of ``""`` removes a variable); ``command`` replaces ``python -m jupyter_server``
    (e.g. another venv's ``jupyter-server``).
    """
    token = secrets.token_hex(16)
    port = free_port()
    environ = {"JUPYTER_DATA_DIR": str(runtime.parent / "data"), **os.environ, **(env or {}),
               "JUPYTER_RUNTIME_DIR": str(runtime), "JUPYTER_TOKEN": token}
    environ = {k: v for k, v in environ.items() if v != ""}
    proc = subprocess.Popen(
        [*(command or (sys.executable, "-m", "jupyter_server")), "--no-browser", f"--port={port}",
         "--ServerApp.port_retries=0", "--allow-root", f"--ServerApp.root_dir={root}",
         f"--IdentityProvider.token={token}", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True, env=environ,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    ready: queue.Queue[bool] = queue.Queue()
    ended = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "is running at" in line:
                ready.put(True)
        ready.put(False)
        ended.set()

    threading.Thread(target=pump, daemon=True).start()
    server = JupyterServer(proc, f"http://127.0.0.1:{port}", token, root, runtime, lines, ended)
    try:
        try:
            ok = ready.get(timeout=START_TIMEOUT)
        except queue.Empty:
            ok = False
        if not ok:
            raise RuntimeError("jupyter server did not start:\n" + "".join(lines))
        _wait_listening(port, START_TIMEOUT)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
