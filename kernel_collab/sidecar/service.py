"""Putting a sidecar together: load the document, then run room, disk sync and server."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus
from jupyter_ydoc import YNotebook

from ..notebook_core import files as nbfile
from ..protocol import CLOSE_GOING_AWAY, ready_line
from ..store import StoredDocument
from . import trust
from .awareness import AwarenessRelay
from .bridge import KernelBridge
from .control import KernelControl, watch_stdin
from .disk import DiskSync
from .docstore import DocumentStore
from .execution_queue import ExecutionQueue
from .handoff import take_handoffs
from .history import HistoryService
from .inbound import Inbound
from .kernel_link import KernelLink
from .memory import keep_releasing_freed_memory
from .ownership import FieldGuard, run_records
from .requests import Requests
from .room import UNVERSIONED, Room
from .server import SyncServer
from .stdin_relay import StdinRelay
from .trust import outputs_digest


class StartError(Exception):
    """The sidecar cannot start; the message is the one line shown to the user."""


@dataclass
class SidecarParts:
    """The pieces of one sidecar."""

    room: Room
    disk: DiskSync
    store: DocumentStore
    bridge: KernelBridge
    queue: ExecutionQueue
    run_records: dict[str, str] | None = None
    """The loaded file's run records (``None``: restored from the store, read from it)."""


@dataclass
class Filled:
    """Where a new sidecar's document came from: the store, or the notebook file."""

    stored: StoredDocument | None
    nb: dict[str, Any] | None = None
    """The file, parsed (``None``: restored from the store)."""
    data: bytes = b""
    """The file's bytes."""


async def fill(
    notebook: YNotebook, store: DocumentStore, path: Path, relpath: str, max_file_bytes: int
) -> Filled:
    """Fill the document from the store, or else from the file, before anything observes it:
    the load is no change (each observer made building 1,000 cells ~1.5 ms longer)."""
    stored = await store.load(relpath)
    if stored is not None:
        notebook.ydoc.apply_update(stored.update)
        return Filled(stored)
    try:
        nb, data = await anyio.to_thread.run_sync(nbfile.read, path, max_file_bytes)
    except nbfile.NotebookFileError as exc:
        raise StartError(str(exc)) from None
    notebook.set(nb)
    return Filled(None, nb, data)


async def load(
    filled: Filled, store: DocumentStore, disk: DiskSync, path: Path, relpath: str
) -> dict[str, str] | None:
    """Finish loading a filled document: its trust record, its store and file state, and a
    file changed meanwhile merged (what loading changes is part of the version it starts
    from, not a version of its own). Return the run records of a notebook loaded from its
    file (``None`` from the store)."""
    with disk.room.acting(UNVERSIONED):
        return await _load(filled, store, disk, path, relpath)


async def _load(
    filled: Filled, store: DocumentStore, disk: DiskSync, path: Path, relpath: str
) -> dict[str, str] | None:
    log = disk.log
    stored, nb = filled.stored, filled.nb
    if stored is None:
        assert nb is not None
        disk.room.trust.reset()
        if await anyio.to_thread.run_sync(trust.is_signed, nb):
            disk.room.trust.vouch_all()  # the file this room first loads, signed: trusted
        # Served before it is stored (the room stores it first thing): the file holds it.
        data_hash = nbfile.content_hash(filled.data)
        store.create_later(relpath, filled.data, data_hash)
        disk.synced_with(data_hash)
        log.info("%s: loaded %d cells from the file", relpath, len(nb["cells"]))
        return run_records(nb["cells"])
    log.info(
        "%s: restored document %s from %s (%d cells, %d updates since its snapshot)",
        relpath,
        stored.document_id,
        store.db_path,
        disk.room.notebook.cell_number,
        stored.update_count,
    )
    if stored.base is not None and stored.base_hash is not None:
        disk.disk_hash = stored.base_hash  # the merge base, read back from the store for a merge
    try:
        data = await anyio.to_thread.run_sync(nbfile.read_bytes, path, disk.max_file_bytes)
    except nbfile.NotebookFileError as exc:
        raise StartError(str(exc)) from None
    if disk.room.trust.is_current():
        disk.room.trust.seal_interrupted()
    else:
        await _trust_from_old_store(disk, path, data)
    if nbfile.content_hash(data) != disk.disk_hash:
        log.info("%s changed on disk while the sidecar was down; merging", relpath)
    await disk.check_disk()
    disk.request_save()  # writes only if the stored document differs from the file
    return None


async def _trust_from_old_store(disk: DiskSync, path: Path, data: bytes) -> None:
    """A store from before trust records: vouch only for outputs equal to a signed file's."""
    ledger = disk.room.trust
    ledger.reset()
    try:
        file_nb = await anyio.to_thread.run_sync(nbfile.parse, path, data)
    except nbfile.NotebookFileError:
        return
    if not await anyio.to_thread.run_sync(trust.is_signed, file_nb):
        return
    signed = trust.outputs_by_id(file_nb)
    count = ledger.vouch_all(lambda cid, outputs: signed.get(cid) == outputs_digest(outputs))
    disk.log.info("%s: store from before trust records: %d cells' outputs match the signed file "
                  "and stay trusted, the others are untrusted until they run", path, count)


async def serve(
    parts: SidecarParts,
    *,
    relpath: str,
    token: str,
    admin_token: str,
    port: int,
    handoff: str,
    max_message_size: int,
    watch_stdin_eof: bool,
    log: logging.Logger,
    task_status: TaskStatus[tuple[str, dict[str, Any]]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run a loaded sidecar until cancelled or signalled, then store, save and close (started:
    its URL and the room as it is then)."""
    room, disk, store = parts.room, parts.disk, parts.store
    requests = Requests()
    awareness = AwarenessRelay(room, parent=room.parent)
    room.updates = FieldGuard(room.notebook, room.trust, room.log, parts.run_records,
                              room.cell_changes)  # fmt: skip
    inbound = Inbound(room, awareness, requests)
    parts.bridge.link = KernelLink(inbound, awareness, parent=room.parent)
    server = SyncServer(room, inbound, token=token, admin_token=admin_token,
                        max_message_size=max_message_size, log=log)  # fmt: skip
    try:
        async with anyio.create_task_group() as tg:
            control = KernelControl(room, parts.bridge, parts.queue, disk,
                                    stop=tg.cancel_scope.cancel)  # fmt: skip
            stdin = StdinRelay(room, parts.bridge, parent=room.parent)
            wire(requests, parts, control, stdin)
            await tg.start(room.run)
            await tg.start(disk.run)
            await tg.start(parts.bridge.run)
            await tg.start(parts.queue.run)
            await tg.start(stdin.run)
            ws_server = await server.start(port)
            if handoff:
                await tg.start(take_handoffs, handoff, server, ws_server, log)
            tg.start_soon(_stop_on_signal, tg.cancel_scope, log)
            tg.start_soon(keep_releasing_freed_memory, _activity(room))
            tg.start_soon(room.loop_lag.run, lambda: bool(room.peers) and room.busy())
            if watch_stdin_eof:
                tg.start_soon(watch_stdin, tg.cancel_scope.cancel, log)
            url = f"ws://127.0.0.1:{server.port}/"
            log.info("serving %s (document %s) at %s", relpath, store.document_id, url)
            task_status.started((url, control.describe()))
            try:
                await ws_server.serve_forever()
            finally:
                ws_server.close(close_connections=False)
    finally:
        with anyio.CancelScope(shield=True):
            await shutdown(room, disk, store, log)


def wire(requests: Requests, parts: SidecarParts, control: KernelControl,
         stdin: StdinRelay) -> None:
    """Every request a sidecar serves, and every event its services follow, in one place."""
    room, bridge, queue, disk = parts.room, parts.bridge, parts.queue, parts.disk
    history = HistoryService(room, parts.store, parent=room.parent)
    requests.register("history", history.versions)
    requests.register("history_get", history.get)
    requests.register("restore", history.restore)
    requests.register("purge", history.purge)
    requests.register("sync", room.handle_sync)
    requests.register("stats", room.handle_stats)
    requests.register("save", disk.handle_save)
    requests.register("execute", queue.handle_execute)
    requests.register("input_reply", stdin.handle_reply)
    requests.register("kernel_action", control.kernel_action)
    requests.register("trust", control.trust)
    requests.register("attach_kernel", control.attach, admin=True)
    requests.register("detach_kernel", control.detach, admin=True)
    requests.register("room_info", control.room_info, admin=True)
    requests.register("rename", control.rename, admin=True)
    requests.register("deleted", control.deleted, admin=True)
    room.joined.subscribe(stdin.on_join)
    room.left.subscribe(stdin.wake)
    room.left.subscribe(control.maybe_stop)
    bridge.ready.subscribe(lambda _: queue.wake())


def _activity(room: Room) -> Callable[[], int]:
    """A count of what leaves memory to return: committed updates, peers coming and going
    (a peer's sync copies the whole document)."""
    comings = [0]

    def count(_peer: object) -> None:
        comings[0] += 1

    room.joined.subscribe(count)
    room.left.subscribe(count)
    return lambda: room.committed_updates + comings[0]


async def shutdown(room: Room, disk: DiskSync, store: DocumentStore, log: logging.Logger) -> None:
    """Commit what is pending, save the file, tell peers to reconnect, commit (and save) what
    they sent meanwhile, close the store."""
    await _commit_and_save(room, disk, log)
    for peer in list(room.peers):
        peer.close(CLOSE_GOING_AWAY, "sidecar stopping")  # nothing more is read from them
    if room.pending:  # applied during the save: stored (and saved) too, not dropped
        await _commit_and_save(room, disk, log)
    await store.close()
    log.info("sidecar for %s stopped", disk.path)


async def _commit_and_save(room: Room, disk: DiskSync, log: logging.Logger) -> None:
    try:
        await room.flush()
        await disk.save(final=True)
    except Exception:
        log.exception("final save of %s failed; the store keeps the document", disk.path)


async def _stop_on_signal(scope: anyio.CancelScope, log: logging.Logger) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s, saving and stopping", signal.Signals(signum).name)
            scope.cancel()
            return


def announce(url: str, document_id: str, room: dict[str, Any]) -> None:
    """Print the ready line tests and the provisioner wait for."""
    sys.stdout.write(ready_line(url, document_id, room))
    sys.stdout.flush()
