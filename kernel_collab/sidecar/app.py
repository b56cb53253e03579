"""``python -m kernel_collab.sidecar``: serve one notebook file as a shared document."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import anyio
from jupyter_ydoc import YNotebook
from pycrdt import Doc
from traitlets import Bool, Int, Unicode, default
from traitlets.config import Application

from .. import __version__
from ..notebook_core.cells import shared_notebook
from ..protocol import ADMIN_TOKEN_ENV, ERROR_PREFIX, TOKEN_ENV
from ..store import StoreError
from .awareness import AwarenessRelay
from .bridge import KernelBridge
from .disk import DiskSync
from .docstore import DocumentStore
from .execution_queue import ExecutionQueue
from .memory import one_heap
from .room import Room
from .service import SidecarParts, StartError, announce, fill, load, serve
from .stdin_relay import StdinRelay

STORE_NAME = ".kernel_collab.db"


class SidecarApp(Application):
    """Serve one notebook to y-websocket peers on 127.0.0.1, storing every change."""

    name = "kernel-collab-sidecar"
    version = __version__
    description = """Serve one notebook file as a shared Y document (jupyter_ydoc schema) to
    y-websocket peers on ws://127.0.0.1:PORT/?token=TOKEN. Every change is committed to an
    SQLite store before any peer sees it; the .ipynb follows about a second later, and edits
    made to the file outside are merged back cell by cell. Prints
    'kernel_collab sidecar ready at ws://127.0.0.1:PORT/ document=ID' once it accepts peers."""
    examples = """
    KERNEL_COLLAB_TOKEN=secret python -m kernel_collab.sidecar examples/demo.ipynb --port 0
    python -m kernel_collab.sidecar nb.ipynb --root ~/work --port 8899 --token secret
    """

    root = Unicode(
        "",
        help="Directory that PATH and the default store location are relative "
        "to (default: the current directory).",
    ).tag(config=True)
    port = Int(0, help="Port on 127.0.0.1 (0 picks a free one).").tag(config=True)
    token = Unicode(
        help=f"Token peers must present (?token= or an Authorization header). Prefer the "
        f"{TOKEN_ENV} environment variable: argv is readable by every user of the machine."
    ).tag(config=True)
    store_path = Unicode("", help=f"SQLite store file (default: ROOT/{STORE_NAME}).").tag(
        config=True
    )
    watch_stdin = Bool(
        False, help="Save and exit when stdin closes (set by the provisioner: server death)."
    ).tag(config=True)
    handoff_socket = Unicode(
        "",
        help="Name of the Linux abstract Unix socket on which the Jupyter server hands over "
        "the browser connections it has authenticated (set by the provisioner; empty: none).",
    ).tag(config=True)
    kernel_starting = Bool(
        False, help="A kernel is being launched for this notebook (set by the provisioner): "
        "the room says so until it is attached."
    ).tag(config=True)
    max_message_size = Int(
        256 * 1024 * 1024, help="Largest WebSocket message accepted from a peer, in bytes."
    ).tag(config=True)

    aliases = {
        "root": "SidecarApp.root",
        "port": "SidecarApp.port",
        "token": "SidecarApp.token",
        "handoff-socket": "SidecarApp.handoff_socket",
        "store": "SidecarApp.store_path",
        "synchronous": "DocumentStore.synchronous",
        "save-delay": "DiskSync.save_delay",
        "save-max-interval": "DiskSync.save_max_interval",
        "max-message-size": "SidecarApp.max_message_size",
        "max-output-bytes": "KernelBridge.max_output_bytes",
        "max-stream-bytes": "KernelBridge.max_stream_bytes",
        "log-level": "Application.log_level",
    }
    flags = {
        "no-watch": ({"DiskSync": {"watch": False}}, "Do not watch the file for outside edits."),
        "watch-stdin": (
            {"SidecarApp": {"watch_stdin": True}},
            "Save and exit when stdin closes (the parent process died).",
        ),
        "kernel-starting": (
            {"SidecarApp": {"kernel_starting": True}},
            "A kernel is being launched for this notebook (the room says so until attached).",
        ),
        "debug": ({"Application": {"log_level": 10}}, "Log debug messages."),
    }
    classes = [
        DocumentStore, DiskSync, Room, AwarenessRelay, KernelBridge, ExecutionQueue, StdinRelay
    ]

    @default("log_level")
    def _log_level_default(self) -> int:
        return 20  # INFO: rooms, peers, saves and merges are what an operator needs

    @default("token")
    def _token_default(self) -> str:
        return os.environ.get(TOKEN_ENV, "")

    def start(self) -> None:
        """Validate the arguments and serve until signalled."""
        if len(self.extra_args) != 1:
            self.exit_error("expected exactly one notebook PATH (see --help)")
        if not self.token:
            self.exit_error(f"a token is required: set {TOKEN_ENV} or pass --token")
        one_heap()
        try:
            anyio.run(self.run_sidecar)
        except (StartError, StoreError) as exc:
            self.exit_error(str(exc))

    def exit_error(self, message: str) -> None:
        """Print one line naming what failed and exit non-zero."""
        sys.stderr.write(f"kernel_collab sidecar: error: {message}\n")
        # Also on stdout, where whoever started the sidecar waits for its ready line.
        sys.stdout.write(f"{ERROR_PREFIX}{message}\n")
        sys.stdout.flush()
        self.exit(2)

    async def _load(self, notebook: YNotebook, store: DocumentStore, path: Path,
                    relpath: str) -> tuple[Room, DiskSync, dict[str, str] | None]:  # fmt: skip
        """Fill the document, then make the room and the file's sync, which observe it from
        then on, and finish the load (the parsed file and its bytes end with this call: the
        sidecar's whole life is spent in the caller)."""
        filled = await fill(notebook, store, path, relpath, self._file_limit())
        room = Room(notebook, store, parent=self)
        disk = DiskSync(room, path, parent=self)
        return room, disk, await load(filled, store, disk, path, relpath)

    def _file_limit(self) -> int:
        """``DiskSync.max_file_bytes`` as configured, read before the DiskSync exists (the
        document is filled before anything observes it). A command-line value is a string,
        read as the trait reads it."""
        limit = self.config.DiskSync.get("max_file_bytes", DiskSync.max_file_bytes.default_value)
        return int(limit)

    def resolve_path(self) -> tuple[Path, Path, str]:
        """The root directory, the notebook's absolute path and its path relative to root."""
        root = Path(self.root or os.getcwd()).resolve()
        given = Path(self.extra_args[0])
        path = (given if given.is_absolute() else root / given).resolve()
        try:
            relpath = path.relative_to(root).as_posix()
        except ValueError:
            relpath = path.as_posix()
        return root, path, relpath

    async def run_sidecar(self) -> None:
        """Load the notebook and serve it until stopped."""
        root, path, relpath = self.resolve_path()
        if not root.is_dir():
            raise StartError(f"{root}: root is not a directory")
        if path.suffix != ".ipynb":
            raise StartError(f"{path}: not a notebook (expected a .ipynb file)")
        store_file = Path(self.store_path) if self.store_path else root / STORE_NAME
        store = DocumentStore(store_file, parent=self)
        await store.open()
        # The client id from the OS, not from pycrdt's generator: a forked sidecar inherits its
        # fork server's generator state, and two sidecars of one notebook (a restart) must
        # never write as one client.
        notebook = shared_notebook(Doc(client_id=secrets.randbits(32)))
        try:
            room, disk, records = await self._load(notebook, store, path, relpath)
        except BaseException:
            await store.close()
            raise
        notebook.ystate["document_id"] = store.document_id
        notebook.ystate["path"] = relpath
        room.set_status("epoch", store.epoch)
        room.set_status("autosave", "on" if disk.paused is None else "paused")
        bridge = KernelBridge(room, parent=self)
        bridge.set_kernel_status("starting" if self.kernel_starting else "none")
        room.seal_load()
        queue = ExecutionQueue(room, bridge, parent=self)
        parts = SidecarParts(room, disk, store, bridge, queue, records)
        async with anyio.create_task_group() as tg:
            url, room_now = await tg.start(
                lambda task_status: serve(
                    parts,
                    relpath=relpath,
                    token=self.token,
                    admin_token=os.environ.get(ADMIN_TOKEN_ENV, ""),
                    port=self.port,
                    handoff=self.handoff_socket,
                    max_message_size=self.max_message_size,
                    watch_stdin_eof=self.watch_stdin,
                    log=self.log,
                    task_status=task_status,
                )
            )
            announce(url, store.document_id, room_now)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m kernel_collab.sidecar``."""
    app = SidecarApp()
    app.initialize(argv)
    app.start()
