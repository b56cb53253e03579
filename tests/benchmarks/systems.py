"""Launchers for the systems under test, each as an async context manager.

- :class:`Sidecar` — ours: ``python -m kernel_collab.sidecar PATH --port 0 --root DIR``, one
  process per notebook, store ``DIR/.kernel_collab.db``.
- :class:`JupyterCollaboration` — theirs: ``jupyter server`` with jupyter-collaboration from
  its own venv, one process for a root of many notebooks, store ``DIR/.jupyter_ystore.db``.
  Rooms are opened as JupyterLab opens them (routes checked in jupyter_server_ydoc 3.0.x,
  ``app.py`` and ``handlers.py``): ``PUT /api/collaboration/session/{path}`` with
  ``{"format": "json", "type": "notebook"}`` → ``{fileId, sessionId}``, then the WebSocket
  ``/api/collaboration/room/json:notebook:{fileId}?sessionId=…&token=…``. Its store keys a
  document's rows (table ``yupdates``) by ``.notebook:{fileId}.y``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import anyio
from anyio.abc import Process
from pycrdt import Doc

from kernel_collab.provisioner.forks import FORKS, ForkedProcess

from .peers import decode_state_vector

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_RE = re.compile(rb"kernel_collab sidecar ready at (ws://\S+)")
START_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0


class LaunchError(RuntimeError):
    """A system did not start, answer or stop as it should; the message says which and why."""


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def proc_status_kib(pid: int, key: str = "VmRSS") -> int:
    """A ``/proc/PID/status`` figure in KiB (``VmRSS``: resident set; ``VmHWM``: its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise LaunchError(f"no {key} in /proc/{pid}/status")


def file_size(paths: list[Path]) -> int:
    """Total size of the files that exist among ``paths`` (one removed meanwhile counts 0:
    SQLite deletes its journal and may truncate its WAL at any moment)."""
    total = 0
    for p in paths:
        with suppress(FileNotFoundError):
            total += p.stat().st_size
    return total


def history_size(paths: list[Path]) -> int:
    """Bytes of the pages that notebook history takes in a store (its ``history*`` tables and
    their indexes, from SQLite's ``dbstat``; 0 for a store without them): history has its own
    byte budget, apart from the live document's bound."""
    db = next((p for p in paths if p.suffix == ".db" and p.exists()), None)
    if db is None:
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name LIKE "
                           "'%history%'").fetchone()  # fmt: skip
    finally:
        conn.close()
    return int(row[0])


async def _stop(process: Process | ForkedProcess, name: str) -> None:
    """Terminate a process we started (SIGTERM, then SIGKILL after a grace period)."""
    if process.returncode is not None:
        return
    process.terminate()
    with anyio.move_on_after(STOP_TIMEOUT, shield=True) as scope:
        await process.wait()
    if scope.cancelled_caught:
        process.kill()
        with anyio.CancelScope(shield=True):
            await process.wait()


@dataclass
class Deployment(ABC):
    """A running system serving notebooks under ``root``."""

    name: str
    root: Path
    spawned_at: float
    """``perf_counter()`` just before the server process was spawned."""
    ready_at: float = 0.0
    log: Path = field(default_factory=Path)
    pid: int = 0
    """The process that holds the documents (ours: the sidecar; theirs: the server)."""

    @abstractmethod
    async def room_url(self, notebook: Path) -> str:
        """Do whatever a client does to open ``notebook`` and return its WebSocket URL."""

    @abstractmethod
    def store_files(self) -> list[Path]:
        """The files of this system's document store (what counts towards its size)."""

    @abstractmethod
    def stored_clock(self, notebook: Path, client_id: int) -> int:
        """Blocking: the highest clock of ``client_id`` that the store holds for a notebook."""

    def log_tail(self) -> str:
        """The end of the server's log, for error messages."""
        return _tail(self.log)


class System(ABC):
    """A collaboration system the benchmarks can launch."""

    name: str
    shared_server: bool
    """True when one server process serves many notebooks (rooms open on request)."""

    def __init__(self, scratch: Path, name: str | None = None):
        self.scratch = scratch
        self._launches = 0
        if name:
            self.name = name

    def _log_path(self) -> Path:
        self._launches += 1
        logs = self.scratch / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return logs / f"{self.name}-{self._launches:03d}.log"

    @abstractmethod
    def launch(
        self, root: Path, notebook: Path, extra_args: Sequence[str] = ()
    ) -> AbstractAsyncContextManager[Deployment]:
        """Start serving ``root``; ``notebook`` is the file a per-notebook server serves.
        ``extra_args`` go to the process's command line."""

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Versions of the packages that make up the system."""


# -- ours ------------------------------------------------------------------------------------


@dataclass
class SidecarDeployment(Deployment):
    """A running kernel_collab sidecar."""

    url: str = ""
    token: str = ""
    notebook: Path = field(default_factory=Path)

    async def room_url(self, notebook: Path) -> str:
        if notebook != self.notebook:
            raise LaunchError(f"this sidecar serves {self.notebook}, not {notebook}")
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}token={quote(self.token)}"

    def store_files(self) -> list[Path]:
        db = self.root / ".kernel_collab.db"
        return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-journal")]

    def stored_clock(self, notebook: Path, client_id: int) -> int:
        """Load the document as a restarted sidecar would (kernel_collab's own store API)."""
        from kernel_collab.store import SQLiteStore

        store = SQLiteStore(self.store_files()[0])
        try:
            documents = store.list()
            stored = store.load(documents[0].path) if documents else None
        finally:
            store.close()
        doc: Doc[Any] = Doc()
        if stored is not None:
            doc.apply_update(stored.update)
        return decode_state_vector(doc.get_state()).get(client_id, 0)


class Sidecar(System):
    """kernel_collab's sidecar, run from this repository's venv."""

    name = "kernel_collab"
    shared_server = False

    def versions(self) -> dict[str, str]:
        import importlib.metadata as md

        out = {}
        for pkg in ("pycrdt", "jupyter-ydoc", "websockets", "anyio"):
            try:
                out[pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                out[pkg] = "?"
        try:
            out["kernel_collab"] = md.version("kernel_collab")
        except md.PackageNotFoundError:
            out["kernel_collab"] = "not installed (run from source tree)"
        return out

    @asynccontextmanager
    async def launch(
        self, root: Path, notebook: Path, extra_args: Sequence[str] = (), *, fresh: bool = False
    ) -> AsyncIterator[Deployment]:
        """A sidecar for ``notebook``, forked by this process's fork server as the Jupyter
        server's provisioner forks it (the first launch starts the fork server), or with
        ``fresh`` a new interpreter (the open-from-process-start rows)."""
        if not (REPO_ROOT / "kernel_collab" / "sidecar" / "__main__.py").exists():
            raise LaunchError("kernel_collab's sidecar is missing (no sidecar/__main__.py)")
        token = secrets.token_hex(16)
        log = self._log_path()
        env = dict(os.environ)
        env["KERNEL_COLLAB_TOKEN"] = token
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        args = [str(notebook), "--port", "0", "--root", str(root), *extra_args]
        with log.open("wb") as log_file:
            spawned = time.perf_counter()
            process: Process | ForkedProcess
            if fresh:
                process = await anyio.open_process(
                    [sys.executable, "-m", "kernel_collab.sidecar", *args], stdin=None,
                    stdout=-1, stderr=log_file, cwd=root, env=env,
                )  # fmt: skip
            else:
                process = await FORKS.spawn(args, env, cwd=str(root), stderr=log_file.fileno())
            dep = SidecarDeployment(
                name=self.name, root=root, spawned_at=spawned, log=log, token=token,
                notebook=notebook, pid=process.pid,
            )
            try:
                assert process.stdout is not None
                lines = _lines(process.stdout)
                with anyio.move_on_after(START_TIMEOUT):
                    async for line in lines:
                        log_file.write(b"[stdout] " + line)
                        if m := READY_RE.search(line):
                            dep.url = m.group(1).decode()
                            dep.ready_at = time.perf_counter()
                            break
                if not dep.url:
                    await _stop(process, self.name)
                    raise LaunchError(
                        f"{self.name} did not print its ready line (exit code "
                        f"{process.returncode}); {' '.join(args)}\n{_tail(log)}"
                    )
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_drain, lines, log_file)
                    try:
                        yield dep
                    finally:
                        tg.cancel_scope.cancel()
                if process.returncode is not None:
                    raise LaunchError(
                        f"{self.name} exited early (code {process.returncode})\n{_tail(log)}"
                    )
            finally:
                await _stop(process, self.name)


async def _lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Lines (with their newline; the last may lack it) of a process's stdout."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *done, pending = pending.split(b"\n")
        for line in done:
            yield line + b"\n"
    if pending:
        yield pending


async def _drain(lines: AsyncIterator[bytes], sink: IO[bytes]) -> None:
    """Copy a process's remaining stdout to its log (so the pipe never fills)."""
    with suppress(anyio.ClosedResourceError):
        async for line in lines:
            sink.write(line)


# -- the floor of the latency rows ----------------------------------------------------------


@dataclass
class FixedRoom(Deployment):
    """A room reached at one fixed WebSocket URL (the floor's relay, the server's proxy, a
    sidecar itself); it has no store the benchmark reads."""

    url: str = ""

    async def room_url(self, notebook: Path) -> str:
        return self.url

    def store_files(self) -> list[Path]:
        return []

    def stored_clock(self, notebook: Path, client_id: int) -> int:
        raise LaunchError(f"{self.name}: no store is read through a fixed room")


@asynccontextmanager
async def floor(root: Path, notebook: Path) -> AsyncIterator[FixedRoom]:
    """The bare broadcaster, serving ``notebook``'s initial state, in its own process."""
    process = await anyio.open_process(
        [sys.executable, "-m", "tests.benchmarks.broadcaster", str(notebook)], stdin=None,
        stdout=-1, stderr=None, cwd=REPO_ROOT,
    )  # fmt: skip
    dep = FixedRoom(name="floor", root=root, spawned_at=time.perf_counter(),
                          pid=process.pid)  # fmt: skip
    try:
        assert process.stdout is not None
        with anyio.move_on_after(START_TIMEOUT):
            async for line in _lines(process.stdout):
                if line.startswith(b"floor ready at "):
                    dep.url = line[len(b"floor ready at "):].strip().decode()
                    break
        if not dep.url:
            raise LaunchError(f"the floor broadcaster did not start (exit {process.returncode})")
        yield dep
    finally:
        await _stop(process, "floor")


# -- theirs ----------------------------------------------------------------------------------


def http_json(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> Any:
    """Blocking JSON request with token auth and no proxy."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"token {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=60) as resp:
        return json.loads(resp.read() or b"null")


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _StoreReader:
    """Incremental reader of one document's rows in ``.jupyter_ystore.db``."""

    doc: Doc[Any] = field(default_factory=Doc)
    rowid: int = 0


@dataclass
class JupyterDeployment(Deployment):
    """A running ``jupyter server`` with jupyter-collaboration."""

    base: str = ""
    token: str = ""
    file_ids: dict[Path, str] = field(default_factory=dict)
    _readers: dict[str, _StoreReader] = field(default_factory=dict)

    async def room_url(self, notebook: Path) -> str:
        rel = notebook.relative_to(self.root).as_posix()
        url = f"http://{self.base}/api/collaboration/session/{quote(rel)}"
        try:
            session = await anyio.to_thread.run_sync(
                http_json, "PUT", url, self.token, {"format": "json", "type": "notebook"}
            )
        except (urllib.error.URLError, OSError) as exc:
            raise LaunchError(f"PUT {url} failed: {exc}\n{self.log_tail()}") from exc
        file_id = session["fileId"]
        self.file_ids[notebook] = file_id
        return (
            f"ws://{self.base}/api/collaboration/room/json:notebook:{file_id}"
            f"?sessionId={quote(session['sessionId'])}&token={quote(self.token)}"
        )

    def store_files(self) -> list[Path]:
        db = self.root / ".jupyter_ystore.db"
        return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-journal")]

    def stored_clock(self, notebook: Path, client_id: int) -> int:
        """Apply the rows added since the last call to a private Doc; read its state."""
        key = f".notebook:{self.file_ids[notebook]}.y"
        reader = self._readers.setdefault(key, _StoreReader())
        db_path = self.store_files()[0]
        if not db_path.exists():
            return 0
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute(
                "SELECT rowid, yupdate FROM yupdates WHERE path=? AND rowid>? ORDER BY rowid",
                (key, reader.rowid),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise
        finally:
            db.close()
        for rowid, update in rows:
            reader.doc.apply_update(update)
            reader.rowid = rowid
        return decode_state_vector(reader.doc.get_state()).get(client_id, 0)


class JupyterCollaboration(System):
    """jupyter-collaboration in ``jupyter server``, from a separate venv."""

    name = "jupyter-collaboration"
    shared_server = True

    def __init__(self, scratch: Path, venv: Path, name: str | None = None):
        super().__init__(scratch, name)
        self.venv = venv
        self.server = venv / "bin" / "jupyter-server"
        if not self.server.exists():
            raise LaunchError(f"{self.server} does not exist: run tests/benchmarks/run.sh")

    def versions(self) -> dict[str, str]:
        import subprocess

        pkgs = ["jupyter-collaboration", "jupyter-server-ydoc", "jupyter_server",
                "pycrdt-websocket", "pycrdt-store", "pycrdt", "jupyter-ydoc", "jupyterlab"]
        code = (
            "import importlib.metadata as m, json, sys\n"
            "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
        )
        out = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", code, *pkgs],
            capture_output=True, text=True, check=True,
        )
        result: dict[str, str] = json.loads(out.stdout)
        return result

    @asynccontextmanager
    async def launch(
        self, root: Path, notebook: Path, extra_args: Sequence[str] = ()
    ) -> AsyncIterator[Deployment]:
        token = secrets.token_hex(16)
        port = free_port()
        log = self._log_path()
        home = root.parent / f"{root.name}.jupyter"
        env = dict(os.environ)
        env.update(
            JUPYTER_TOKEN=token,
            JUPYTER_CONFIG_DIR=str(home / "config"),
            JUPYTER_DATA_DIR=str(home / "data"),
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
            IPYTHONDIR=str(home / "ipython"),
        )
        env.pop("PYTHONPATH", None)
        cmd = [
            str(self.server), "--no-browser", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True", *extra_args,
        ]
        base = f"127.0.0.1:{port}"
        with log.open("wb") as log_file:
            spawned = time.perf_counter()
            process = await anyio.open_process(
                cmd, stdin=None, stdout=log_file, stderr=log_file, cwd=root, env=env
            )
            dep = JupyterDeployment(
                name=self.name, root=root, spawned_at=spawned, log=log, base=base, token=token,
                pid=process.pid,
            )
            try:
                with anyio.move_on_after(START_TIMEOUT):
                    while process.returncode is None:
                        try:
                            await anyio.to_thread.run_sync(
                                http_json, "GET", f"http://{base}/api/status", token
                            )
                            dep.ready_at = time.perf_counter()
                            break
                        except (urllib.error.URLError, OSError):
                            await anyio.sleep(0.01)
                if not dep.ready_at:
                    await _stop(process, self.name)
                    raise LaunchError(
                        f"{self.name} did not answer /api/status (exit code "
                        f"{process.returncode}); command: {' '.join(cmd)}\n{_tail(log)}"
                    )
                yield dep
                if process.returncode is not None:
                    raise LaunchError(
                        f"{self.name} exited early (code {process.returncode})\n{_tail(log)}"
                    )
            finally:
                await _stop(process, self.name)
