"""The notebook's history, served to peers: list and read versions, restore one, purge (the
rules: docs/architecture.md, "History"). Reading needs what reading the notebook needs;
restoring and purging need the right to edit (checked here and by the server).
"""

from __future__ import annotations

from typing import Any

from traitlets.config import LoggingConfigurable

from ..notebook_core.apply import apply_notebook
from ..store import HistoryError
from .docstore import DocumentStore
from .peer import Peer
from .requests import RequestError, require
from .room import Room


class HistoryService(LoggingConfigurable):
    """Serves ``history``, ``history_get``, ``restore`` and ``purge``."""

    def __init__(self, room: Room, store: DocumentStore, **kwargs: Any):
        super().__init__(**kwargs)
        self.room = room
        self.store = store

    async def versions(self, _peer: Peer, _request: dict[str, Any]) -> dict[str, Any]:
        """Every version kept, oldest first (what is committed so far included)."""
        await self.room.wait_all_committed()
        return {"ok": True, "versions": [v.as_dict() for v in await self.store.versions()]}

    async def get(self, _peer: Peer, request: dict[str, Any]) -> dict[str, Any]:
        """One version: the notebook, and the cells whose outputs were trusted then."""
        snapshot = await self._snapshot(request)
        return {"ok": True, "version": snapshot.version, "notebook": snapshot.notebook,
                "trusted": sorted(snapshot.trusted), "outputs_dropped": snapshot.outputs_dropped}

    async def restore(self, peer: Peer, request: dict[str, Any]) -> dict[str, Any]:
        """Make the cells what they were in a version, as a new edit everyone converges on."""
        require(peer, "write", "restore a version: it needs the right to edit the notebook")
        snapshot = await self._snapshot(request)
        live = self.room.notebook.get()
        cells = list(snapshot.notebook.get("cells") or [])
        running = [c for c in live["cells"] if self.room.trust.is_running(str(c.get("id")))]
        for cell in running:  # a running cell stays as it is, where it is
            at = next((i for i, c in enumerate(cells) if c.get("id") == cell["id"]), None)
            if at is None:
                cells.insert(min(live["cells"].index(cell), len(cells)), cell)
            else:
                cells[at] = cell
        target = {**live, "cells": cells}  # the notebook's metadata and the state stay
        name = peer.author["name"]
        with self.room.acting(peer.author), self.room.doc.transaction():
            apply_notebook(self.room.notebook, target)
            self.room.trust.restored(snapshot.trusted, (str(c.get("id")) for c in cells))
            self.room.mark("restore", f"restored version {snapshot.version} by {name}")
        await self.room.wait_all_committed()
        self.log.info("%s restored version %d of %s", peer.name, snapshot.version,
                      self.room.notebook.ystate.get("path"))  # fmt: skip
        return {"ok": True, "version": self.store.last_version}

    async def purge(self, peer: Peer, request: dict[str, Any]) -> dict[str, Any]:
        """Drop versions before ``before``, or the one ``version``; recorded as a version."""
        require(peer, "write", "purge history: it needs the right to edit the notebook")
        before, version = request.get("before"), request.get("version")
        if not (type(before) is int) ^ (type(version) is int):
            raise RequestError("purge needs an integer 'before' or 'version', not both")
        await self.room.wait_all_committed()
        try:
            removed = await self.store.purge(before=before, version=version)
        except HistoryError as exc:
            raise RequestError(str(exc)) from exc
        what = f"versions before {before}" if before is not None else f"version {version}"
        self.store.compact_soon = True  # the live updates since the snapshot go too
        self.room.mark("purge", f"purged {what} by {peer.author['name']}")
        await self.room.wait_all_committed()
        self.log.warning("%s purged %s of %s (%d versions)", peer.name, what,
                         self.room.notebook.ystate.get("path"), removed)  # fmt: skip
        return {"ok": True, "removed": removed}

    async def _snapshot(self, request: dict[str, Any]) -> Any:
        version = request.get("version")
        if type(version) is not int:
            raise RequestError("'version' must be an integer")
        await self.room.wait_all_committed()
        try:
            return await self.store.snapshot(version)
        except HistoryError as exc:
            raise RequestError(str(exc)) from exc
