"""The ``.ipynb`` on disk: autosave after changes, and merge of changes made outside.

Autosave writes about ``save_delay`` after the last change to cells or metadata, and at least
every ``save_max_interval`` while changes keep coming, atomically. A watcher (watchfiles) sees
the file change; contents the sidecar wrote itself are recognised by hash. Outside changes are
merged three-way against the base (the content last read or written, stored with the
document, and read back from the store for a merge: a large notebook's base held in memory
weighed as much as its file), cell by cell, as minimal edits. A file that does not parse is
retried briefly, then reported in the document's state, and autosave pauses until the file is
valid again or a peer asks to save.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus
from traitlets import Bool, Float, Int
from traitlets.config import LoggingConfigurable

from ..notebook_core import files as nbfile
from ..notebook_core.apply import apply_notebook
from ..notebook_core.merge import changed_outputs, mark_file_run_records, three_way_merge
from ..store import HistoryError
from ..store.blobs import pack
from . import trust
from .file_watch import watch_file
from .peer import Peer
from .requests import RequestError
from .room import Room
from .save_source import SaveSource

DISK_AUTHOR = {"kind": "disk", "name": "outside edit (file)"}
"""Who made the changes merged from the file on disk, in the notebook's history."""

class DiskSync(LoggingConfigurable):
    """Keeps one notebook file and the shared document in step."""

    save_delay = Float(1.0, help="Seconds after the last change before autosave.").tag(config=True)
    save_max_interval = Float(
        1.5, help="Longest time changes stay unsaved while they keep coming (a cell printing "
        "without pause: the file is then about 2 s behind at most), unless saving is slow (see "
        "save_share)."
    ).tag(config=True)
    save_share = Float(
        0.2, help="Largest share of the time autosave spends saving while changes keep coming: "
        "a notebook whose save takes 0.5 s is saved every 2.5 s at most."
    ).tag(config=True)
    watch = Bool(True, help="Watch the file for outside changes and merge them.").tag(config=True)
    max_file_bytes = Int(
        nbfile.MAX_FILE_BYTES,
        help="A notebook file larger than this is not loaded (at start: a clear error; during "
        "a session: autosave pauses and peers are told, as for a corrupt file).",
    ).tag(config=True)
    parse_retries = Int(
        5, help="Times a file that does not parse is re-read before it is called corrupt."
    ).tag(config=True)
    parse_retry_delay = Float(0.1, help="Seconds between those re-reads.").tag(config=True)

    def __init__(self, room: Room, path: Path, **kwargs: Any):
        super().__init__(**kwargs)
        self.room = room
        self.path = path
        self.disk_hash: str | None = None
        """Hash of the bytes on disk as the sidecar last read or wrote them."""
        self.doc_hash: str | None = None
        """Hash of the document's serialisation when it last equalled the file."""
        self._loaded = False
        """Loaded from the file, and the saved form's hash of what was loaded not known yet: a
        save that needs it renders the store's first version (``_loaded_hash``)."""
        self._unrecorded_base: bytes | None = None
        """The base, compressed, while the store could not record it (else it is read back)."""
        self.paused: str | None = None
        self.file_unread = False
        """Paused on a file that exists but could not be read (a plain save never overwrites it)."""
        self.saves = 0
        self._save_seconds = 0.0
        """How long the last save that wrote the file took (serialising, writing, syncing)."""
        self._changed = anyio.Event()
        self._lock = anyio.Lock()
        self._watch_scope: anyio.CancelScope | None = None
        self._source = SaveSource(room.notebook, on_change=lambda: self._changed.set(),
                                  changes=room.cell_changes)  # fmt: skip
        room.meta_changes.subscribe(self._on_content_change)

    # -- state -------------------------------------------------------------------------------

    def synced_with(self, data_hash: str) -> None:
        """Record that the document equals the file content of hash ``data_hash`` (the store
        holds it as the base)."""
        self.disk_hash = data_hash
        self._unrecorded_base = None
        # Hashing the document as it would be saved takes jupyter_ydoc's get and nbformat's
        # writer (~100 ms for 1,000 cells, holding the GIL): the first save that needs it
        # does (most never do: a file nbformat wrote is its own saved form).
        self.doc_hash = None
        self._loaded = True
        self._changed = anyio.Event()  # loading the file is no change to save
        self.room.notebook.ystate["hash"] = self.disk_hash
        self.room.set_status("last_saved_hash", self.disk_hash)

    def _pause(self, reason: str, *, file_unread: bool = False) -> None:
        self.file_unread = file_unread
        if self.paused != reason:
            self.log.error("%s: autosave paused: %s", self.path, reason)
        self.paused = reason
        self.room.set_status("file_error", reason)
        self.room.set_status("autosave", "paused")

    def _resume(self) -> None:
        if self.paused is not None:
            self.log.info("%s: autosave resumed", self.path)
        self.paused = None
        self.file_unread = False
        self.room.set_status("file_error", None)
        self.room.set_status("autosave", "on")

    def request_save(self) -> None:
        """Have autosave run (it writes only if the document differs from the file)."""
        self._changed.set()

    def _on_content_change(self, _events: object) -> None:
        self._changed.set()  # no writes here: observers run inside the transaction

    # -- loops -------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Autosave and watch until cancelled."""
        async with anyio.create_task_group() as tg:
            if self.watch:
                await tg.start(self._watch)
            tg.start_soon(self._autosave)
            task_status.started()

    async def _autosave(self) -> None:
        while True:
            await self._changed.wait()
            if self.room.notebook.ystate.get("dirty") is not True:
                self.room.notebook.ystate["dirty"] = True
            first = last = time.monotonic()
            while True:
                self._changed = anyio.Event()
                longest = max(self.save_max_interval, self._save_seconds / self.save_share)
                deadline = min(last + self.save_delay, first + longest)
                with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                    await self._changed.wait()
                    last = time.monotonic()
                    continue
                break
            try:
                await self.save()
            except (nbfile.NotebookFileError, ValueError, TypeError, KeyError,
                    AttributeError) as exc:  # fmt: skip
                # The document does not make a valid notebook (a peer broke the schema):
                # keep it in the store, keep the file as it is, say so, keep serving.
                self.log.error("%s: not saved, the document is not a valid notebook: %s",
                               self.path, exc)  # fmt: skip
                self.room.set_status("save_error", f"not saved: {exc}")

    async def _watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        started = False
        while True:  # once per path: a rename restarts the watch on the new directory
            with anyio.CancelScope() as self._watch_scope:
                async with anyio.create_task_group() as tg:
                    await tg.start(watch_file, self.path, self.check_disk)
                    if not started:
                        started = True
                        task_status.started()

    async def move(self, new_path: Path) -> None:
        """Follow the notebook to a new path (renamed through Jupyter)."""
        async with self._lock:
            self.log.info("%s moved to %s", self.path, new_path)
            self.path = new_path
            if self._watch_scope is not None:
                self._watch_scope.cancel()
            await self._merge_from_disk_locked()  # resumes if the file is there and ours

    def pause_deleted(self) -> None:
        """The notebook was deleted through Jupyter: keep the document, stop saving."""
        self._pause(f"{self.path.name} was deleted; the shared document is kept, save to "
                    "recreate it")

    # -- save --------------------------------------------------------------------------------

    async def save(self, *, force: bool = False, final: bool = False) -> str | None:
        """Write the document to disk if it changed; return the file's hash.

        ``force`` (a peer asked to save) also overwrites a file that failed to parse;
        ``final`` (shutdown, Ctrl+S) signs a trusted notebook even with changes pending.
        """
        async with self._lock:
            return await self._save_locked(force, final)

    async def _save_locked(self, force: bool, final: bool = False) -> str | None:
        if self.paused is not None and not force:
            return None
        started = time.monotonic()
        nb, unrendered = await self._source.snapshot_soon()
        data, new_hash = await anyio.to_thread.run_sync(self._rendered, nb, unrendered)
        if self.paused is None and new_hash != self.disk_hash and self._loaded:
            await self._loaded_hash()
        if self.paused is None and new_hash in (self.doc_hash, self.disk_hash):
            self.doc_hash = new_hash
            self._mark_clean()
            return self.disk_hash
        on_disk = await anyio.to_thread.run_sync(_hash_or_none, self.path)
        if on_disk != self.disk_hash and not force:
            # Someone wrote the file since we last read it: merge first, never clobber.
            self.log.info("%s changed on disk before autosave; merging it first", self.path)
            await self._merge_from_disk_locked()
            if self.paused is not None:
                return None
            nb, unrendered = await self._source.snapshot_soon()
            data, new_hash = await anyio.to_thread.run_sync(self._rendered, nb, unrendered)
        try:
            await anyio.to_thread.run_sync(nbfile.write_atomic, self.path, data)
        except OSError as exc:
            self.log.error("%s: save failed, document kept in memory and store: %s", self.path, exc)
            self.room.set_status("save_error", f"{self.path.name}: {exc.strerror or exc}")
            return None
        self.saves += 1
        self._save_seconds = time.monotonic() - started
        # Signed only when every output is vouched for, and when no newer change is on its way
        # (its save signs): the notary walks the whole notebook in Python (~13 ms for 1,000
        # cells, holding the GIL) and adds a row to its database at each signature.
        if self.room.trust.fully_trusted(nb) and (final or not self._changed.is_set()):
            try:
                await anyio.to_thread.run_sync(trust.sign, nb)
            except (OSError, sqlite3.Error) as exc:
                self.log.warning("%s: saved but not signed (notary: %s)", self.path, exc)
        self.disk_hash = self.doc_hash = new_hash
        try:
            await self._record_base(data, new_hash)
        except (sqlite3.Error, OSError) as exc:
            # The file is saved; only the store's record of it is stale (a later start then
            # merges the file against an older base, which finds the same content).
            self.log.error("%s: saved, but its base could not be recorded in the store: %s",
                           self.path, exc)  # fmt: skip
            self.room.set_status("store_error", str(exc))
        self.room.notebook.ystate["hash"] = new_hash
        self.room.set_status("last_saved_hash", new_hash)
        self.room.set_status("save_error", None)
        self._resume()
        self._mark_clean()
        self.log.debug("%s saved (%d bytes)", self.path, len(data))
        return new_hash

    def _rendered(self, nb: dict[str, Any], unrendered: set[str] | None) -> tuple[bytes, str]:
        """The saved bytes of a snapshot and their hash (in a worker thread: hashing a large
        notebook took milliseconds of the event loop)."""
        data = self._source.render(nb, unrendered)
        return data, nbfile.content_hash(data)

    def _mark_clean(self) -> None:
        if self.room.notebook.ystate.get("dirty") is not False:
            self.room.notebook.ystate["dirty"] = False

    async def handle_save(self, peer: Peer, request: dict[str, Any]) -> dict[str, Any]:
        """``save`` (Ctrl+S): write the document, merging an outside change first; never over a
        file that could not be read. ``force: true`` overwrites whatever is there and says what."""
        if not peer.may("write"):
            raise RequestError(f"{peer.identity.get('name', 'you')} may only read this notebook")
        force = request.get("force") is True
        overwrote = None
        if self.file_unread:
            if not force:
                raise RequestError(f"not saved: {self.paused}")
            overwrote = f"a file that could not be read ({self.paused})"
        elif force:
            on_disk = await anyio.to_thread.run_sync(_hash_or_none, self.path)
            if on_disk is not None and on_disk != self.disk_hash:
                overwrote = "an outside change to the file that was not merged"
        deleted = self.paused is not None and not self.file_unread  # recreating loses nothing
        try:
            saved = await self.save(force=force or deleted, final=True)
        except nbfile.NotebookFileError as exc:
            raise RequestError(str(exc)) from exc
        if saved is None:
            raise RequestError(f"could not save {self.path.name}; see the document's state")
        if overwrote:
            self.log.warning("%s: %s overwrote %s", self.path, peer.name, overwrote)
        self.room.mark("save", f"saved by {peer.author['name']}")
        return {"ok": True, "hash": saved, "overwrote": overwrote}

    async def _loaded_hash(self) -> None:
        """``doc_hash`` of the document as loaded from the file (its saved form, which differs
        from the file's bytes when another tool wrote it): the store's first version, rendered
        in a worker thread (none if that version was purged: the save then writes)."""
        self._loaded = False
        try:
            first = await self.room.store.snapshot(0)
        except (HistoryError, sqlite3.Error, OSError) as exc:
            self.log.info("%s: the document as loaded is gone from history (%s): saving it in "
                          "nbformat's layout", self.path, exc)  # fmt: skip
            return
        if not first.outputs_dropped:
            self.doc_hash = await anyio.to_thread.run_sync(_saved_hash_of, first.notebook)

    # -- outside changes ---------------------------------------------------------------------

    async def check_disk(self) -> None:
        """Merge the file into the document if someone else changed it."""
        async with self._lock:
            await self._merge_from_disk_locked()

    async def _merge_from_disk_locked(self) -> None:
        for attempt in range(self.parse_retries + 1):
            try:
                data = await anyio.to_thread.run_sync(
                    nbfile.read_bytes, self.path, self.max_file_bytes)
            except nbfile.NotebookFileError as exc:
                if not self.path.exists():
                    self._pause(f"{self.path.name} was deleted or moved outside the sidecar")
                else:
                    self._pause(str(exc), file_unread=True)
                return
            data_hash = nbfile.content_hash(data)
            if data_hash == self.disk_hash:
                if self.paused is not None and self.path.exists():
                    self._resume()
                return
            try:
                disk_nb = await anyio.to_thread.run_sync(nbfile.parse, self.path, data)
            except nbfile.NotebookFileError as exc:
                if attempt == self.parse_retries:
                    self._pause(f"{exc}; the shared document is kept, 'save and overwrite' "
                                "replaces the file", file_unread=True)
                    return
                await anyio.sleep(self.parse_retry_delay)  # a writer may still be writing
                continue
            self.merge(disk_nb, data_hash, await self._base())
            try:
                await self._record_base(data, data_hash)
            except (sqlite3.Error, OSError) as exc:  # kept in memory: the next save retries
                self.log.error("%s: merged, but its base could not be recorded in the store: %s",
                               self.path, exc)  # fmt: skip
                self.room.set_status("store_error", str(exc))
            return

    async def _record_base(self, data: bytes, data_hash: str) -> None:
        """Record file content ``data`` as the merge base in the store (kept compressed in
        memory while the store cannot)."""
        try:
            await self.room.store.set_base(data, data_hash)
        except (sqlite3.Error, OSError):
            self._unrecorded_base = pack(data)
            raise
        self._unrecorded_base = None

    async def _base(self) -> dict[str, Any] | None:
        """The merge base: the file content last read or written (hash ``disk_hash``), from
        the store, parsed; ``None`` if there is none or it does not parse."""
        if self._unrecorded_base is not None:
            data: bytes | None = zlib.decompress(self._unrecorded_base)
        else:
            data, base_hash = await self.room.store.base()
            if base_hash != self.disk_hash:
                return None
        if data is None:
            return None
        try:
            return await anyio.to_thread.run_sync(nbfile.parse, self.path, data)
        except nbfile.NotebookFileError:
            return None

    def merge(self, disk_nb: dict[str, Any], data_hash: str,
              base: dict[str, Any] | None) -> None:  # fmt: skip
        """Three-way merge file content (``disk_nb``, its bytes' hash ``data_hash``) into the
        document against ``base`` (the live document if ``None``); the file content becomes
        the new base."""
        live = self.room.notebook.get()
        result = three_way_merge(base if base is not None else live, disk_nb, live)
        merged = mark_file_run_records(live, result.notebook)
        with self.room.acting(DISK_AUTHOR), self.room.doc.transaction():
            apply_notebook(self.room.notebook, merged)
            # Outputs that came from outside are nobody's the sidecar can vouch for.
            self.room.trust.untrust(changed_outputs(live, merged))
        conflicts = [c.cell_id for c in result.conflicts]
        self.room.set_status("merge_conflicts", conflicts or None)
        if conflicts:
            self.log.warning(
                "%s: outside change conflicted with live edits in cells %s; disk text taken, "
                "live text kept in cell metadata kernel_collab.merge_conflict",
                self.path,
                ", ".join(conflicts),
            )
        self.disk_hash = data_hash
        self.doc_hash = _saved_hash_of(self.room.notebook.get()) if merged == disk_nb else None
        self._loaded = False
        self._resume()
        self.room.notebook.ystate["hash"] = self.disk_hash
        self.log.info("%s: merged outside change", self.path)
        if self.doc_hash is None:
            self._changed.set()


def _saved_hash_of(nb: dict[str, Any]) -> str:
    """The hash of a notebook's serialisation (``nb`` as jupyter_ydoc's ``get`` returns it)."""
    return nbfile.content_hash(nbfile.serialize(nb))


def _hash_or_none(path: Path) -> str | None:
    try:
        return nbfile.content_hash(path.read_bytes())
    except FileNotFoundError:
        return None
