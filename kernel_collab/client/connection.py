"""A script or agent as a collaborator: the notebook API over the Jupyter server's WebSocket. A
dropped connection makes the API raise :class:`ConnectionError` saying how many edits were not
sent. The same :class:`SyncTransport` carries the kernel's replica over its comm."""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Protocol
from urllib.parse import quote

import anyio
import httpx
from anyio.abc import TaskGroup
from jupyter_ydoc import YNotebook
from pycrdt import (
    Awareness,
    TransactionEvent,
    create_awareness_message,
    create_sync_message,
    create_update_message,
)
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from .. import protocol
from ..notebook_core.cells import shared_notebook
from ..notebook_core.updates import merge
from ..shared_notebook import Notebook

BATCH = 1000
"""Frames the writer sends at most at once (a run of edits, merged, is one frame)."""
PRESENCE_RENEWAL = 15.0
"""Seconds between two renewals of a client's awareness state (see :meth:`_renew_presence`)."""

InputCallback = Callable[[str, bool], "str | Awaitable[str]"]
"""``on_input(prompt, password)`` answers ``input()``/``getpass()`` in runs this client asked."""


class NotebookError(RuntimeError):
    """The sidecar refused a request; the message is its reason."""


class Channel(Protocol):
    """What carries the wire's messages: a WebSocket, or the kernel's comm. Both raise
    ``ConnectionError`` (or websockets' ``ConnectionClosed``) once closed."""

    ordered: bool
    """Whether every message sent arrives, in order, so a request finds the edits sent
    before it applied (the kernel's comm can lose a batch: its edits come back later)."""

    async def pace(self) -> None:
        """Wait until the next batch may go (a channel that batches under load waits)."""

    async def send_batch(self, messages: list[bytes]) -> None:
        """Send messages, in order."""

    def receive(self) -> AsyncIterator[bytes]:
        """The messages received, in order, until the channel closes."""


class WebSocketChannel:
    """One WebSocket: a message a frame, sent as soon as it is queued."""

    ordered = True

    def __init__(self, websocket: ClientConnection):
        self.ws = websocket

    async def pace(self) -> None:
        """Never waits."""

    async def send_batch(self, messages: list[bytes]) -> None:
        """Send each message as a frame."""
        for message in messages:
            await self.ws.send(message)

    async def receive(self) -> AsyncIterator[bytes]:
        """Binary frames (text frames are not part of the protocol)."""
        async for data in self.ws:
            if isinstance(data, bytes):
                yield data
        raise ConnectionError("closed by the server")


class SyncTransport:
    """Carries a :class:`Notebook`'s edits and requests over a :class:`Channel`."""

    def __init__(
        self,
        channel: Channel,
        notebook: YNotebook,
        name: str,
        on_input: InputCallback | None = None,
        *,
        renew_presence: bool = True,
    ):
        self.channel = channel
        self.renew_presence = renew_presence
        self.on_input = on_input
        self._tg: TaskGroup | None = None
        self.ynb = notebook
        self.awareness = Awareness(notebook.ydoc)
        self.name = name
        self._ids = itertools.count(1)
        self._replies: dict[int, dict[str, Any]] = {}
        self._changed = anyio.Event()
        self._synced = anyio.Event()
        self._closed: BaseException | None = None
        self._remote = False
        self._outbox: list[bytes | list[bytes]] = []
        """Frames to send, in order; a list is a run of local edits, sent merged as one."""
        self._presence: bytes | None = None
        """This client's latest awareness update, not sent yet (it supersedes older ones)."""
        self._outbox_ready = anyio.Event()
        self.unsent = 0
        """Local edits not sent yet."""
        self.local_changes = 0
        """Local edits made so far (sent or not): :meth:`ClientNotebook.leave` compares it."""
        self._held: list[bytes] | None = None
        self._touches = 0
        notebook.ydoc.observe(self._on_local_change)

    # -- Transport ---------------------------------------------------------------------------

    @property
    def ordered(self) -> bool:
        """Whether a request reaches the sidecar after the edits sent before it."""
        return self.channel.ordered

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._closed is not None

    async def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send a request and wait for its reply."""
        request_id = next(self._ids)
        self._send({**request, "id": request_id})
        await self.wait_for(lambda: request_id in self._replies)
        reply = self._replies.pop(request_id)
        if not reply.get("ok"):
            raise NotebookError(str(reply.get("error")))
        return reply

    def touched(self, cell_id: str) -> None:
        """Show others which cell this client touched last (the fields: docs/architecture.md,
        "In JupyterLab", **Presence**; ``user`` is replaced by the sidecar)."""
        self._touches += 1
        self._present({"cell_id": cell_id, "client_name": self.name, "seq": self._touches})

    def _present(self, ours: dict[str, Any]) -> None:
        """Share this client's awareness state: who it is (``user``) and ``kernel_collab``."""
        self.awareness.set_local_state({"user": {"name": self.name}, "kernel_collab": ours})
        self._send_presence()

    def _send_presence(self) -> None:
        self._check_open()
        update = self.awareness.encode_awareness_update([self.awareness.client_id])
        self._presence = create_awareness_message(update)
        self._outbox_ready.set()

    async def _renew_presence(self) -> None:
        """Re-send this client's awareness state, as y-protocols' clients do: a browser drops a
        peer it has not heard of for 30 s."""
        while True:
            await anyio.sleep(PRESENCE_RENEWAL)
            if self._closed is not None:
                return
            self.awareness.set_local_state(self.awareness.get_local_state())  # a newer clock
            self._send_presence()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds; raise ConnectionError if the connection ends."""
        while not condition():
            if self._closed is not None:
                raise ConnectionError(self._lost_message()) from self._closed
            await self._changed.wait()

    # -- plumbing ----------------------------------------------------------------------------

    def _lost_message(self) -> str:
        detail = f"; {self.unsent} local edits were not sent" if self.unsent else ""
        reason = f" ({self._closed})" if str(self._closed or "") else ""
        return f"the connection to the notebook's sidecar ended{reason}{detail}"

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _send(self, request: dict[str, Any]) -> None:
        self._queue(protocol.encode_request(request))

    def _check_open(self) -> None:
        if self._closed is not None:
            raise ConnectionError(self._lost_message()) from self._closed

    def _queue(self, message: bytes) -> None:
        """Queue a frame, sent after everything queued before it."""
        self._check_open()
        self._outbox.append(message)
        self._outbox_ready.set()

    def _queue_update(self, update: bytes) -> None:
        """Queue a local edit: the edits queued in a row are sent as one update (a script
        editing faster than the connection carries its edits sends fewer, larger ones)."""
        self._check_open()
        self.unsent += 1
        if self._outbox and isinstance(self._outbox[-1], list):
            self._outbox[-1].append(update)
        else:
            self._outbox.append([update])
        self._outbox_ready.set()

    def _on_local_change(self, event: TransactionEvent) -> None:
        if self._remote or event.update == b"\x00\x00":
            return
        self.local_changes += 1
        if self._closed is not None:
            self.unsent += 1  # reported by the next sync() or request, never dropped silently
            return
        if self._held is not None:
            self._held.append(event.update)
            return
        self._queue_update(event.update)

    def hold(self) -> None:
        """Collect local edits instead of sending them (a transaction spanning several calls,
        as the blocking API makes)."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        """Send the edits collected since :meth:`hold` as one update."""
        held, self._held = self._held, None
        if held:
            self._queue_update(merge(held))

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Sync, then pump messages both ways until cancelled or disconnected."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._write)
            tg.start_soon(self._read)
            self._queue(create_sync_message(self.ynb.ydoc))
            await self.wait_for(self._synced.is_set)
            # Present from the start (people see a script or the kernel join), renewed.
            self._present({"client_name": self.name})
            if self.renew_presence:
                tg.start_soon(self._renew_presence)
            task_status.started()

    async def _write(self) -> None:
        while True:
            while not self._outbox and self._presence is None:
                await self._outbox_ready.wait()
                self._outbox_ready = anyio.Event()
            await self.channel.pace()  # what is queued meanwhile goes in the same batch
            entries, self._outbox = self._outbox[:BATCH], self._outbox[BATCH:]
            presence, self._presence = self._presence, None
            edits = sum(len(entry) for entry in entries if isinstance(entry, list))
            batch = [create_update_message(merge(e)) if isinstance(e, list) else e for e in entries]
            if presence is not None:
                batch.append(presence)
            try:
                await self.channel.send_batch(batch)
            except (ConnectionClosed, ConnectionError) as exc:
                self._closed = exc
                self._notify()
                return
            self.unsent -= edits

    async def _read(self) -> None:
        try:
            async for data in self.channel.receive():
                try:
                    self._handle(data)
                except (ValueError, KeyError, TypeError) as exc:  # ProtocolError included
                    raise ConnectionError(f"the sidecar sent a malformed message: {exc}") from exc
                self._notify()
        except (ConnectionClosed, ConnectionError) as exc:
            self._closed = exc
        self._notify()

    def _handle(self, data: bytes) -> None:
        message = protocol.decode(data)
        if message.kind is protocol.Kind.SYNC_STEP1:
            self._queue(protocol.encode_sync_step2(self.ynb.ydoc.get_update(message.payload)))
        elif message.kind in (protocol.Kind.SYNC_STEP2, protocol.Kind.SYNC_UPDATE):
            self._remote = True
            try:
                self.ynb.ydoc.apply_update(message.payload)
            finally:
                self._remote = False
            if message.kind is protocol.Kind.SYNC_STEP2:
                self._synced.set()
        elif message.kind is protocol.Kind.AWARENESS:
            self.awareness.apply_awareness_update(message.payload, "remote")
        elif message.request is not None and isinstance(message.request.get("reply_to"), int):
            self._replies[message.request["reply_to"]] = message.request
        elif message.request is not None and message.request.get("type") == "input_request":
            if type(message.request.get("request_id")) not in (int, str):
                raise ValueError("an input_request without a request_id")
            assert self._tg is not None
            self._tg.start_soon(self._answer, message.request)

    async def _answer(self, prompt: dict[str, Any]) -> None:
        """Answer a kernel prompt for a run this client asked for, with ``on_input``."""
        reply: dict[str, Any] = {"type": "input_reply", "request_id": prompt["request_id"]}
        if self.on_input is None:
            reply["error"] = "this client was connected without on_input: it takes no input"
        else:
            value = self.on_input(str(prompt.get("prompt", "")), bool(prompt.get("password")))
            if inspect.isawaitable(value):
                value = await value
            reply["value"] = str(value)
        self._send(reply)


@contextlib.asynccontextmanager
async def connect(
    server_url: str,
    path: str,
    *,
    token: str | None = None,
    name: str = "kernel_collab client",
    on_input: InputCallback | None = None,
) -> AsyncIterator[ClientNotebook]:
    """Join the notebook at ``path`` on a Jupyter server as a named collaborator."""
    headers = {"Authorization": f"token {token}"} if token else {}
    async with httpx.AsyncClient(base_url=server_url.rstrip("/"), headers=headers,
                                 timeout=120) as http:  # fmt: skip
        response = await http.put(f"/api/kernel-collab/rooms/{quote(path)}")
        if response.status_code != 200:
            raise NotebookError(f"cannot open {path}: {_reason(response)}")
        room = response.json()
    ws_url = server_url.rstrip("/").replace("http", "ws", 1)
    url = f"{ws_url}/api/kernel-collab/sync/{room['document_id']}?name={quote(name)}"
    async with join(url, headers, name, on_input) as notebook:
        yield notebook


@contextlib.asynccontextmanager
async def join(
    url: str, headers: dict[str, str], name: str, on_input: InputCallback | None = None
) -> AsyncIterator[ClientNotebook]:
    """Join a document's WebSocket (through the server, or a sidecar directly)."""
    async with (
        ws_connect(url, additional_headers=headers, max_size=None) as websocket,
        synced(WebSocketChannel(websocket), shared_notebook(), name, on_input) as notebook,
    ):
        yield notebook
        await notebook.leave()  # not after an error in the block: that propagates at once


@contextlib.asynccontextmanager
async def synced(channel: Channel, ynb: YNotebook, name: str, on_input: InputCallback | None = None,
                 *, renew_presence: bool = True,
                 also: Callable[[], Coroutine[Any, Any, None]] | None = None,
                 ) -> AsyncIterator[ClientNotebook]:  # fmt: skip
    """A notebook kept in sync over ``channel`` (and ``also`` run) until the context ends. An
    error in the block leaves it as it was raised, not wrapped in the task group's group."""
    raised: BaseException | None = None
    async with anyio.create_task_group() as tg:
        transport = SyncTransport(channel, ynb, name, on_input, renew_presence=renew_presence)
        if also is not None:
            tg.start_soon(also)
        await tg.start(transport.run)
        try:
            yield ClientNotebook(ynb, transport)
        except BaseException as exc:  # noqa: BLE001 - raised below, once the transport ended
            raised = exc
        finally:
            tg.cancel_scope.cancel()
    if raised is not None:
        raise raised


LEAVE_TIMEOUT = 60.0
"""Seconds :meth:`ClientNotebook.leave` waits for the sidecar to store the last edits."""


class ClientNotebook(Notebook):
    """A :class:`Notebook` joined from outside the kernel."""

    def __init__(self, ynotebook: YNotebook, transport: SyncTransport):
        super().__init__(ynotebook, transport)
        self.transport = transport
        self._settled_changes = 0
        """Local edits stored by the sidecar, or reported lost (a sync that raised)."""

    async def sync(self) -> None:
        """Wait until the sidecar has stored every edit made here so far."""
        made = self.transport.local_changes
        try:
            await super().sync()
        finally:  # stored, or the caller was told they were not
            self._settled_changes = max(self._settled_changes, made)

    async def leave(self, timeout: float = LEAVE_TIMEOUT) -> None:
        """Leaving the notebook: wait until the sidecar has stored the edits made since the
        last :meth:`sync` (an edit made just before leaving was still queued when the
        connection closed). Raises ``ConnectionError`` if some could not be sent (unless a
        sync already said so), and ``TimeoutError`` if the sidecar did not answer in
        ``timeout`` s."""
        if self.transport.local_changes == self._settled_changes:
            return
        try:
            with anyio.fail_after(timeout):
                await self.sync()
        except TimeoutError:
            raise TimeoutError(f"the sidecar did not confirm storing this client's last edits "
                               f"within {timeout:g} s; they may be lost") from None

    async def run(self, cell: Any) -> Any:
        """Queue a cell; ``await (await nb.run(c)).wait()`` returns its outputs."""
        return await self.run_async(cell)


def _reason(response: httpx.Response) -> str:
    try:
        return str(json.loads(response.text).get("message") or response.text)
    except (ValueError, AttributeError):
        return f"HTTP {response.status_code}"
