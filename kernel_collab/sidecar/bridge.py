"""The kernel bridge: the sidecar as a client of the kernel, the only writer of outputs
(docs/architecture.md, "Execution", "Outputs")."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import anyio
from anyio.abc import TaskStatus
from traitlets import Int
from traitlets.config import LoggingConfigurable

from ..notebook_core.cells import find_cell
from ..protocol import CELL_MESSAGE, KERNEL_FEATURE
from .events import Listeners
from .outputs import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_STREAM_BYTES, HANDLED, OutputWriter
from .room import Room
from .run_record import record_end, record_start
from .widgets import OutputWidgets

if TYPE_CHECKING:  # imported at the first attach: a room without a kernel goes without them
    import zmq.asyncio
    from jupyter_client.asynchronous.client import AsyncKernelClient
    from jupyter_client.connect import KernelConnectionInfo
    from jupyter_client.session import Session

    from .kernel_link import KernelLink

KERNEL_AUTHOR = {"kind": "kernel", "name": "kernel"}
"""Who writes outputs, in the notebook's history."""
COMM_TYPES = frozenset({"comm_open", "comm_msg", "comm_close"})
DIGEST_HISTORY_SIZE = 4096
"""Signatures of the kernel's messages remembered to refuse a replayed one (jupyter_client's
65,536 are about 9 MiB of small strings, once an hour of a cell printing 20 lines a second)."""
STDIN_WAIT = 2.0
"""Longest wait for the stdin channel's connection to show before runs start anyway (it had
connected before the watch began, or is very slow)."""
KNOWN_IGNORED = frozenset({"shutdown_reply", "debug_event"})


@dataclass
class Run:
    """One execution the bridge is waiting on."""

    msg_id: str
    cell_id: str
    by: dict[str, Any]
    started: float
    reply: dict[str, Any] | None = None
    idle: bool = False
    external: bool = False
    """Asked by another client of the kernel (its reply goes there, not to us)."""
    errored: bool = False
    record_timing: bool | None = None
    """The asker's JupyterLab setting: record ``metadata.execution`` (None: leave it)."""
    timing: dict[str, str] | None = None
    on_end: Callable[[Run], None] | None = None
    """Called as the run ends, in the transaction that ends it (the queue records the end
    and starts its next cell there: one update, no wait for the event loop)."""
    on_reply: Callable[[Run], None] | None = None
    """Called when an ``ok`` reply comes before the kernel's ``idle`` (the queue sends its
    next cell then, so the kernel does not wait for the sidecar between cells)."""
    ahead: bool = False
    """Sent while the run before it was ending: its cell is marked running, and its outputs
    cleared, only when that run ends (:meth:`KernelBridge.begin`)."""
    done: anyio.Event = field(default_factory=anyio.Event)


class KernelBridge(LoggingConfigurable):
    """Connects to a kernel and writes what it says into the document."""

    max_output_bytes = Int(
        DEFAULT_MAX_OUTPUT_BYTES,
        help="A single rich output larger than this is replaced by a visible note.",
    ).tag(config=True)
    max_stream_bytes = Int(
        DEFAULT_MAX_STREAM_BYTES,
        help="A stream output is cut (with a visible note) past this many bytes.",
    ).tag(config=True)

    def __init__(self, room: Room, **kwargs: Any):
        super().__init__(**kwargs)
        self.room = room
        self.writer = OutputWriter(
            room.notebook,
            max_output_bytes=self.max_output_bytes,
            max_stream_bytes=self.max_stream_bytes,
        )
        self.client: AsyncKernelClient | None = None
        self.kernel_id: str | None = None
        self.runs: dict[str, Run] = {}
        self.iopub_ready = False
        """Whether iopub delivers yet (a ZMQ subscription joins late; until then nothing runs)."""
        self.stdin_ready = False
        """Whether the kernel's stdin socket has our connection: it drops an ``input_request``
        to a client not yet connected, and ``input()`` would wait forever."""
        self.ready: Listeners[None] = Listeners()
        """Told each time an attached kernel's iopub and stdin deliver (runs can start)."""
        self.widgets = OutputWidgets()
        self.link: KernelLink | None = None
        """Serves the kernel's replica (set by the service)."""
        self.recent: OrderedDict[str, str] = OrderedDict()
        """Cells of finished runs by request id, for outputs that arrive late."""
        self._inputs: OrderedDict[str, Any] = OrderedDict()
        """Execution counts of other clients' runs by request id (their ``execute_input``
        comes before the kernel extension names their cell)."""
        self._attached = anyio.Event()
        self.detached = anyio.Event()
        """Set when the current kernel is detached."""
        self._context: zmq.asyncio.Context | None = None
        self._idle_held = False
        """The kernel said idle after one of our runs: written when the run ends, unless the
        queue sends its next cell then (no busy/idle flicker, no update, between queued cells)."""

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        """Whether a kernel is connected and its iopub delivers."""
        return self.client is not None and self.iopub_ready and self.stdin_ready

    def set_kernel_status(self, status: str) -> None:
        """Publish the kernel's status (starting, idle, busy, restarting, dead, none)."""
        self.room.set_status("kernel_status", status)

    def attach(self, kernel_id: str, connection_info: dict[str, Any]) -> None:
        """Connect to a (re)started kernel; the running loops pick the new client up."""
        import zmq.asyncio
        from jupyter_client.asynchronous.client import AsyncKernelClient
        from jupyter_client.session import Session

        if self.client is not None:
            self.detach("reattach")
        if self._context is None:
            self._context = zmq.asyncio.Context()
        client = AsyncKernelClient(context=self._context, log=self.log)
        client.load_connection_info(cast("KernelConnectionInfo", connection_info))
        client.session = Session(
            key=client.session.key,
            signature_scheme=connection_info.get("signature_scheme", "hmac-sha256"),
            username="kernel_collab",
            digest_history_size=DIGEST_HISTORY_SIZE,
        )
        client.start_channels(iopub=False, hb=False, stdin=True)
        self.client = client
        self.iopub_ready = self.stdin_ready = False
        self.kernel_id = kernel_id
        self.room.set_status("kernel_id", kernel_id)
        self.set_kernel_status("starting")
        self.detached = anyio.Event()
        self._attached.set()
        self.log.info("kernel %s attached", kernel_id)

    async def wait_attached(self) -> AsyncKernelClient:
        """The kernel client, once a kernel is attached."""
        while self.client is None:
            await self._attached.wait()
        return self.client

    def interrupt(self) -> None:
        """Interrupt the kernel with a control-channel ``interrupt_request``."""
        if self.client is not None:
            self.client.control_channel.send(self.client.session.msg("interrupt_request", {}))

    def detach(self, reason: str) -> None:
        """Stop talking to the kernel (restart, shutdown, death); unfinished runs end."""
        self.client = None
        self._idle_held = False  # the caller says what the kernel's status is now
        if self._attached.is_set():  # the run loop may be waiting on an unset one: keep it
            self._attached = anyio.Event()
        self.detached.set()  # the run loop closes the client once its readers are cancelled
        for run in list(self.runs.values()):
            self.finish(run, status=reason)
        self.log.info("kernel %s detached (%s)", self.kernel_id, reason)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve each attached kernel in turn until cancelled."""
        task_status.started()
        try:
            while True:
                await self._attached.wait()
                client = self.client
                assert client is not None
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._await_stdin, client)
                        tg.start_soon(self._read_iopub, client)
                        tg.start_soon(self._read_shell, client)
                        if self.link is not None:
                            await tg.start(self.link.serve, client, str(self.kernel_id))
                        await self.detached.wait()
                        tg.cancel_scope.cancel()
                finally:
                    client.stop_channels()
        finally:
            if self.client is not None:
                self.client.stop_channels()
            if self._context is not None:
                self._context.destroy(linger=0)

    async def _await_stdin(self, client: AsyncKernelClient) -> None:
        """``stdin_ready`` once the stdin socket's handshake with the kernel shows (or after
        ``STDIN_WAIT`` s: it had shown before this watch began, or is very slow)."""
        import zmq

        socket = client.stdin_channel.socket
        monitor = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        try:
            with anyio.move_on_after(STDIN_WAIT):
                await monitor.recv_multipart()
        finally:
            socket.disable_monitor()
            monitor.close(linger=0)
        self.stdin_ready = True
        self._announce_ready()

    def _announce_ready(self) -> None:
        if self.iopub_ready and self.stdin_ready:
            if not self.runs:
                self.set_kernel_status("idle")
            self.ready.emit(None)

    # -- execution ---------------------------------------------------------------------------

    def execute(self, cell_id: str, code: str, by: dict[str, Any],
                record_timing: bool | None = None,
                on_end: Callable[[Run], None] | None = None,
                on_reply: Callable[[Run], None] | None = None, ahead: bool = False) -> Run:
        """Send one cell to the kernel (recording JupyterLab's timing metadata if asked);
        ``on_end(run)`` is called as it ends (see :class:`Run`). ``ahead``: its cell is
        cleared by :meth:`begin`, when the run before it ends, instead of now."""
        client = self.client
        if client is None:
            raise RuntimeError("no kernel attached")
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": True,  # prompts go to the person who asked (stdin_relay)
            "stop_on_error": True,
        }
        metadata = {"cellId": cell_id, "kernel_collab": {"by": by}}
        msg = client.session.msg("execute_request", content, metadata=metadata)
        run = Run(msg["header"]["msg_id"], cell_id, by, time.time(), record_timing=record_timing,
                  on_end=on_end, on_reply=on_reply, ahead=ahead)
        if record_timing:
            run.timing = {}
        self.runs[run.msg_id] = run
        if not ahead:
            self._clear(cell_id)
        client.shell_channel.send(msg)
        return run

    def begin(self, run: Run) -> None:
        """The turn of a run sent ahead has come: clear its cell (before any of its output
        is written: see :meth:`_apply`)."""
        run.ahead = False
        self._clear(run.cell_id)

    def _start_external(self, msg_id: str, parent: dict[str, Any], content: Any) -> None:
        """A run asked by another client of the kernel (a console, nbclient, a JupyterLab
        without our extension): into its cell if it names one of ours, else noted."""
        content = content if isinstance(content, dict) else {}
        cell_id = content.get("cell_id")
        ycell = find_cell(self.room.notebook, cell_id) if isinstance(cell_id, str) else None
        who = str(parent.get("username") or "unknown")
        if ycell is None or not msg_id:
            noted = self.room.status.get("other_runs")
            count = int(noted.get("count", 0)) if isinstance(noted, dict) else 0
            self.room.set_status("other_runs", {"count": count + 1, "last_by": who,
                                                "last_at": time.time()})  # fmt: skip
            return
        by = {"username": who, "name": who, "client": "kernel client"}
        run = Run(msg_id, str(cell_id), by, time.time(), external=True)
        self.runs[msg_id] = run
        self._clear(run.cell_id)
        record_start(ycell, by, run.started)
        count = self._inputs.pop(msg_id, None)  # its execute_input came first
        if count is not None:
            self.writer.handle(run.cell_id, "execute_input", {"execution_count": count})

    def _clear(self, cell_id: str) -> None:
        with self.room.doc.transaction():  # cleared and vouched for at once: nothing in between
            if self.writer.clear(cell_id):
                self.room.trust.start_run(cell_id)

    def finish(self, run: Run, *, status: str) -> None:
        """Mark a run as over (its cell idle), tell its ``on_end`` and wake whoever waits on
        it; one transaction (with what ``on_end`` writes)."""
        try:
            self._finish(run, status)
        finally:
            run.done.set()

    def _finish(self, run: Run, status: str) -> None:
        with self.room.doc.transaction():
            if run.external:
                ycell = find_cell(self.room.notebook, run.cell_id)
                if ycell is not None:
                    record_end(ycell, status, count=self.writer.take_count(run.cell_id))
            self.runs.pop(run.msg_id, None)
            self.room.trust.end_run(run.cell_id)
            self.recent[run.msg_id] = run.cell_id
            while len(self.recent) > 1000:
                self.recent.popitem(last=False)
            run.reply = run.reply or {"status": status}
            if run.on_end is not None:
                run.on_end(run)
            if self._idle_held and not any(not r.external for r in self.runs.values()):
                self._idle_held = False  # no next cell of ours was sent: the kernel is idle
                self.set_kernel_status("idle")

    # -- loops -------------------------------------------------------------------------------

    async def _read_shell(self, client: AsyncKernelClient) -> None:
        client.kernel_info()
        while True:
            # Ready only once iopub delivers (as jupyter_client's wait_for_ready): until then,
            # ask again; each reply's status message on iopub proves the subscription.
            msg = None
            with anyio.move_on_after(0.5):
                msg = await client.shell_channel.get_msg()
            if msg is None:
                if not self.iopub_ready:
                    client.kernel_info()
                continue
            if msg.get("msg_type") == "kernel_info_reply":
                self._note_kernel_api(msg.get("content") or {})
            parent = msg.get("parent_header", {}).get("msg_id")
            run = self.runs.get(parent)
            if run is None or msg.get("msg_type") != "execute_reply":
                continue
            run.reply = msg.get("content", {})
            if run.timing is not None:
                started = (msg.get("metadata") or {}).get("started")
                if started:
                    run.timing["shell.execute_reply.started"] = _iso(started)
                run.timing["shell.execute_reply"] = _iso(msg.get("header", {}).get("date"))
            if run.idle:
                self.finish(run, status=str(run.reply.get("status", "ok")))
            elif run.on_reply is not None and run.reply.get("status") == "ok":
                run.on_reply(run)

    def _note_kernel_api(self, info: dict[str, Any]) -> None:
        """Say in the room whether ``kernel_collab.notebook()`` works in this kernel."""
        ready = KERNEL_FEATURE in (info.get("supported_features") or [])
        if self.room.status.get("kernel_api") != ready and not ready:
            self.log.info("kernel %s (%s) has no kernel_collab extension: no in-kernel API; "
                          "outputs, the queue and the rest work as usual", self.kernel_id,
                          (info.get("language_info") or {}).get("name", "?"))  # fmt: skip
        self.room.set_status("kernel_api", ready)

    async def _read_iopub(self, client: AsyncKernelClient) -> None:
        import zmq

        socket = cast("zmq.asyncio.Socket", client.connect_iopub())
        socket.setsockopt(zmq.RCVHWM, 0)
        try:
            while True:
                frames = [await socket.recv_multipart()]
                # Drain what has already arrived into one transaction (one update to relay).
                while len(frames) < 2000 and await socket.poll(timeout=0):
                    frames.append(await socket.recv_multipart())
                self._apply(client.session, frames)
                # zmq futures that are already done do not yield: let commit and relay run
                # between batches, or a flood of output would starve them.
                await anyio.lowlevel.checkpoint()
        finally:
            socket.close(linger=0)

    def _apply(self, session: Session, batch: list[list[bytes]]) -> None:
        messages = self._decode(session, batch)
        while messages:
            finished, messages = self._route_until_a_turn(messages)
            for run in finished:
                self.finish(run, status=str((run.reply or {}).get("status", "ok")))
        self._send_widget_updates()

    def _decode(self, session: Session, batch: list[list[bytes]]) -> list[dict[str, Any]]:
        messages = []
        for frames in batch:
            try:
                _idents, parts = session.feed_identities(frames, copy=True)
                msg = session.deserialize(parts, content=True, copy=True)
            except (ValueError, KeyError, TypeError) as exc:
                self.log.warning("kernel %s: undecodable iopub message: %s", self.kernel_id, exc)
                continue
            if not isinstance(msg.get("content"), dict):
                self.log.warning("kernel %s: ignored an iopub %s whose content is not an "
                                 "object", self.kernel_id, msg.get("msg_type"))  # fmt: skip
                continue
            messages.append(msg)
        return messages

    def _route_until_a_turn(
        self, messages: list[dict[str, Any]]
    ) -> tuple[list[Run], list[dict[str, Any]]]:
        """Route messages in one transaction; return the runs they ended and the messages
        left. It stops at a message of a run sent ahead once a run has ended: ending that
        run begins the next (iopub is ordered: the kernel's ``idle`` for one cell comes
        before anything of the next)."""
        finished: list[Run] = []
        rest: list[dict[str, Any]] = []
        with self.room.acting(KERNEL_AUTHOR), self.room.doc.transaction():
            for i, msg in enumerate(messages):
                if finished and self._sent_ahead(msg):
                    rest = messages[i:]
                    break
                run = self._route(msg)
                if run is not None:
                    finished.append(run)
            if self.writer.touched:
                self.room.trust.kernel_wrote(self.writer.touched)
                self.writer.touched.clear()
        return finished, rest

    def _sent_ahead(self, msg: dict[str, Any]) -> bool:
        run = self.runs.get((msg.get("parent_header") or {}).get("msg_id", ""))
        return run is not None and run.ahead

    def _send_widget_updates(self) -> None:
        client = self.client
        updates = self.widgets.take_updates()
        if client is None or not updates:
            return
        for comm_id, data in updates:
            msg = client.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
            client.shell_channel.send(msg)

    def _route(self, msg: dict[str, Any]) -> Run | None:
        msg_type = msg.get("msg_type") or msg.get("header", {}).get("msg_type", "")
        parent = msg.get("parent_header") or {}
        content = msg.get("content") or {}
        parent_id = parent.get("msg_id", "")
        run = self.runs.get(parent_id)
        if not self.iopub_ready:
            self.iopub_ready = True
            self._announce_ready()
        if run is not None and run.timing is not None and msg_type in ("status", "execute_input"):
            label = f"status.{content.get('execution_state')}" if msg_type == "status" else msg_type
            run.timing[f"iopub.{label}"] = _iso(msg.get("header", {}).get("date"))
        if msg_type == "status":
            if parent.get("msg_type") == "execute_request" and not parent.get("subshell_id"):
                state = str(content.get("execution_state", "unknown"))
                if state == "idle" and run is not None and not run.external:
                    self._idle_held = True  # see finish()
                else:
                    self._idle_held = False
                    self.set_kernel_status(state)
            if run is not None and content.get("execution_state") == "idle":
                run.idle = True
                if run.external:
                    run.reply = {"status": "error" if run.errored else "ok"}
                if run.reply is not None:
                    return run
            return None
        if self.link is not None and self.link.take(msg_type, msg):
            return None
        if msg_type == "execute_input" and run is None and parent_id:
            self._inputs[parent_id] = content.get("execution_count")
            while len(self._inputs) > 100:
                self._inputs.popitem(last=False)
        if msg_type == CELL_MESSAGE and run is None:
            self._start_external(parent_id, parent, content)
            return None
        if msg_type in COMM_TYPES:
            self.widgets.observe_comm(msg_type, content)
            return None
        if msg_type in HANDLED:  # outputs, routed into cells
            if run is not None and msg_type == "error":
                run.errored = True
            widget = self.widgets.capturing(parent_id)
            if widget is not None and msg_type != "execute_input":
                self.widgets.capture(widget, msg_type, content)  # the widget's, not the cell's
                return None
            cell_id = run.cell_id if run is not None else self.recent.get(parent_id)
            if cell_id is not None:  # late output (e.g. from a thread) still finds its cell
                self.writer.handle(cell_id, msg_type, content)
            return None
        if msg_type not in KNOWN_IGNORED:
            self.log.debug("kernel %s: ignoring iopub %s", self.kernel_id, msg_type)
        return None


def _iso(date: Any) -> str:
    """A message header's date as JupyterLab records it (ISO 8601, UTC as ``Z``)."""
    if isinstance(date, str) and date:
        return date
    moment = date if isinstance(date, datetime) else datetime.now(UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
