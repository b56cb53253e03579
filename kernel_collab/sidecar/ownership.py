"""Who writes what: a peer's update is applied, then held to the fields only the sidecar writes,
in the same group commit, before anything is stored or relayed (the rules and what a breach
costs: docs/architecture.md, "Who owns which field of the document")."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from jupyter_ydoc import YNotebook
from pycrdt import Array, ArrayEvent, Map, MapEvent, UndoManager

from ..notebook_core import schema
from ..notebook_core.cell_ids import cell_ids, read_ids
from ..notebook_core.cells import new_cell_id
from ..notebook_core.schema import inserted_indices, touched_cells
from ..protocol import CLOSE_PROTOCOL_ERROR, CLOSE_REFUSED, METADATA_KEY, STATE_KEY
from .events import Listeners
from .peer import Peer
from .trust import TrustLedger, canonical

PEER_ORIGIN: Final = "kernel_collab:peer"
"""Origin of the transactions that apply peers' updates (the ones the guard may undo)."""

OWNED_METADATA: Final = frozenset({METADATA_KEY, "execution"})
OWNED_STATE: Final = frozenset({STATE_KEY, "hash", "path", "document_id"})


@dataclass
class _Seen:
    """What one peer transaction did, as the observers saw it."""

    inserted: set[int] = field(default_factory=set)
    touched: set[int] = field(default_factory=set)
    """Cells whose shape the update may have changed (for the schema check)."""
    undo: UndoManager | None = None
    """Captures the transaction only once something in it is refused (see ``refuse``)."""
    refused: list[str] = field(default_factory=list)
    trusted_meta: set[int] = field(default_factory=set)
    """Existing cells whose ``metadata.trusted`` was written."""
    restore: list[tuple[int, str, Any]] = field(default_factory=list)
    """(cell index, key, old value or _ABSENT) to put back silently."""
    outputs_changed: set[int] = field(default_factory=set)

    def refuse(self, reason: str) -> None:
        """Refuse the update being applied. Its undo manager starts tracking the peer's origin
        now, from inside the transaction's observers (before pycrdt captures and collects):
        an accepted update is never captured, so the text it deletes is garbage collected,
        where a manager that captures every update keeps every deleted item forever."""
        if not self.refused and self.undo is not None:
            self.undo.include_origin(PEER_ORIGIN)
        self.refused.append(reason)


_ABSENT: Final = object()


def _old(change: dict[str, Any]) -> Any:
    return change["oldValue"] if change.get("action") != "add" else _ABSENT


def _new(change: dict[str, Any]) -> Any:
    return change["newValue"] if change.get("action") != "delete" else _ABSENT


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Map | Array) or isinstance(b, Map | Array):
        return False
    return bool(a == b)


def _fingerprint(value: Any) -> str:
    """A run record's identity: the same whether read from a file (ints) or from the document
    (Y keeps numbers as doubles)."""
    plain = value.to_py() if isinstance(value, Map) else value
    return json.dumps(canonical(plain), sort_keys=True, default=str)


def run_records(cells: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The run records of a notebook's cells as plain dicts (a file just loaded), by cell id:
    what :class:`FieldGuard` otherwise reads cell by cell from the document."""
    records = {}
    for cell in cells:
        metadata = cell.get("metadata")
        value = metadata.get(METADATA_KEY) if isinstance(metadata, Mapping) else None
        if value is not None and isinstance(cell.get("id"), str):
            records[cell["id"]] = _fingerprint(value)
    return records


class FieldGuard:
    """Holds peers' updates to the sidecar's fields; keeps the run records it wrote."""

    def __init__(self, notebook: YNotebook, trust: TrustLedger, log: logging.Logger,
                 records: dict[str, str] | None, cell_changes: Listeners[list[Any]]):  # fmt: skip
        """``records``: :func:`run_records` of the notebook just loaded from its file (reading
        them back from the document took ~20 ms per 1,000 cells on the open path); ``None``
        reads them from the document. ``cell_changes``: the cells' deep events, as the room
        observes them once for every service that follows them."""
        self.notebook = notebook
        self.trust = trust
        self.log = log
        self._seen: _Seen | None = None
        self._run_records: dict[str, str] = dict(records or {})
        """Run record (``metadata.kernel_collab``) the sidecar last wrote, by cell id."""
        if records is None:
            for ycell in notebook.ycells:
                self._learn(ycell)
        self._scopes = [notebook.ycells, notebook.ystate, notebook.ydoc.get("meta", type=Map)]
        cell_changes.subscribe(self._on_cells)
        notebook.ystate.observe_deep(self._on_state)

    # -- observing ---------------------------------------------------------------------------

    def _learn(self, ycell: Any) -> None:
        if isinstance(ycell, Map) and isinstance(ycell.get("id"), str):
            metadata = ycell.get("metadata")
            value = metadata.get("kernel_collab") if isinstance(metadata, Map) else None
            if value is not None:
                self._run_records[ycell["id"]] = _fingerprint(value)
                self._prune()

    def _prune(self) -> None:
        """Forget records of cells long gone (as the trust record does: recently deleted ones
        are kept, for an undo of the delete)."""
        cells = self.notebook.ycells
        if len(self._run_records) > 2 * len(cells) + 100:
            ids = set(read_ids(cells))
            self._run_records = {k: v for k, v in self._run_records.items() if k in ids}

    def _on_cells(self, events: list[Any]) -> None:
        seen = self._seen
        if seen is not None:
            seen.touched |= touched_cells(events)
        for event in events:
            path = list(event.path)
            if seen is None:
                self._learn_from(event, path)
            elif not path:
                if isinstance(event, ArrayEvent):
                    seen.inserted |= inserted_indices(event)
            elif isinstance(path[0], int):
                self._check_cell_event(seen, path, event)
        if seen is not None:
            self._check_outputs(seen)

    def _check_outputs(self, seen: _Seen) -> None:
        """Outputs of an existing cell changed, other than cleared: refused."""
        cells = self.notebook.ycells
        for index in seen.outputs_changed - seen.inserted:
            if index < len(cells) and isinstance(cells[index], Map) and len(
                    cells[index].get("outputs") or ()):  # fmt: skip
                seen.refuse("outputs are written by the kernel only (clearing is allowed)")
                break
        seen.outputs_changed.clear()

    def _learn_from(self, event: Any, path: list[Any]) -> None:
        """The sidecar's own change: remember run records it writes (or inserts with a cell)."""
        if not path and isinstance(event, ArrayEvent):
            for index in inserted_indices(event):
                self._learn(self.notebook.ycells[index])
        elif len(path) == 2 and path[1] == "metadata" and "kernel_collab" in _keys(event):
            self._learn(self.notebook.ycells[path[0]])

    def _check_cell_event(self, seen: _Seen, path: list[Any], event: Any) -> None:
        index = path[0]
        if len(path) == 1:
            for key, change in _keys(event).items():
                self._check_cell_key(seen, index, key, change)
        elif path[1] == "outputs":
            seen.outputs_changed.add(index)
        elif path[1] == "metadata" and len(path) == 2:
            for key, change in _keys(event).items():
                if key == "trusted":
                    seen.trusted_meta.add(index)
                elif key in OWNED_METADATA and not _same(_old(change), _new(change)) and not (
                    key == "execution" and change.get("action") == "delete"  # Clear Outputs
                ):
                    seen.refuse(f"metadata.{key} is written by the sidecar only")
        elif path[1] == "metadata" and len(path) > 2 and path[2] in OWNED_METADATA:
            seen.refuse(f"metadata.{path[2]} is written by the sidecar only")

    @staticmethod
    def _check_cell_key(seen: _Seen, index: int, key: str, change: dict[str, Any]) -> None:
        old, new = _old(change), _new(change)
        if key in ("outputs", "metadata"):
            seen.refuse(f"a cell's {key} may not be replaced")
        elif key in ("execution_state", "execution_count") and not _same(old, new) and not (
            key == "execution_count" and new is None  # Clear Outputs nulls the count
        ):
            seen.restore.append((index, key, old))

    def _on_state(self, events: list[Any]) -> None:
        seen = self._seen
        if seen is None:
            return
        for event in events:
            path = list(event.path)
            if not path:
                for key, change in _keys(event).items():
                    if key in OWNED_STATE and not _same(_old(change), _new(change)):
                        seen.refuse(f"state.{key} is written by the sidecar only")
            elif path[0] in OWNED_STATE:
                seen.refuse(f"state.{path[0]} is written by the sidecar only")

    # -- applying a peer's update ------------------------------------------------------------

    def apply(self, peer: Peer, update: bytes) -> None:
        """Apply a peer's update, hold it against field ownership (a refused update is undone
        and the peer closed with 4403), then repair the cells it broke (the peer is closed with
        1002); all before anything is committed, so nobody ever sees or stores what was
        refused. Raises ``ValueError`` for an undecodable update."""
        seen, refused = self._apply(update)
        where = self.notebook.ystate.get("path")
        if refused is not None:
            self.log.warning("%s: refused and undid an update from %s: %s", where, peer.name,
                             refused)  # fmt: skip
            peer.close(CLOSE_REFUSED, f"refused: {refused}; reload")
            return
        self.judge_inserted(seen.inserted)
        problems = self._repair(seen.touched)
        if problems:
            self.log.error(
                "%s: refused an update from %s that broke the notebook (%s); the cells were "
                "repaired, the rest of the update kept, and the peer told to reload",
                where, peer.name, "; ".join(problems),
            )  # fmt: skip
            peer.close(CLOSE_PROTOCOL_ERROR, f"invalid notebook: {problems[0]}")

    def _repair(self, touched: set[int]) -> list[str]:
        """Repair the cells whose shape is broken (Y has no retraction); say what was wrong."""
        problems = []
        cells = self.notebook.ycells
        with self.notebook.ydoc.transaction():
            for index in sorted(touched, reverse=True):
                if index >= len(cells):
                    continue
                problem = schema.cell_problem(cells[index])
                if problem is None:
                    continue
                problems.append(problem)
                fixed = schema.repaired(cells[index])
                del cells[index]
                if fixed is not None:
                    cells.insert(index, self.notebook.create_ycell(fixed))
        return problems

    def _apply(self, update: bytes) -> tuple[_Seen, str | None]:
        """Apply a peer's update and hold it against the rules: what it did, and why it was
        refused and undone, if it was."""
        self.trust.refresh()  # digests of cells this update may move must be current
        # One undo manager per update: a long-lived one (cleared after each update) kept state
        # across the sidecar's own repairs that left the document encoding blocks whose parent
        # is a plain value (pycrdt 0.14.13), so every peer joining afterwards failed to load
        # it, and the sidecar could crash. A new one costs about 4 µs. It tracks nothing until
        # an observer refuses the update (``_Seen.refuse``).
        undo = UndoManager(scopes=self._scopes, capture_timeout_millis=0)
        self._seen = seen = _Seen(undo=undo)
        try:
            with self.notebook.ydoc.transaction(origin=PEER_ORIGIN):
                self.notebook.ydoc.apply_update(update)
        finally:
            self._seen = None
        if seen.refused:
            undo.undo()
            return _Seen(), seen.refused[0]
        if seen.restore or seen.trusted_meta:
            with self.notebook.ydoc.transaction():
                self._put_back(seen)
        return seen, None

    def _put_back(self, seen: _Seen) -> None:
        cells = self.notebook.ycells
        for index, key, old in seen.restore:
            ycell = cells[index] if index < len(cells) else None
            if not isinstance(ycell, Map):
                continue
            if key == "execution_state":
                # The sidecar's truth, never a deletion: a key added and deleted in one relayed
                # update breaks @jupyter/ydoc's cell change events in every other page.
                old = "running" if self.trust.is_running(str(ycell.get("id"))) else "idle"
            if old is _ABSENT:
                if key in ycell:
                    del ycell[key]
            elif ycell.get(key) != old:
                ycell[key] = old
        for index in seen.trusted_meta:
            if index < len(cells):
                _drop_trusted_meta(cells[index])

    def judge_inserted(self, indices: set[int]) -> None:
        """Cells a peer inserted (checked by the schema already): unique ids, no trust claim,
        outputs vouched for only as the sidecar vouched, run records only as it wrote them."""
        if not indices:
            return
        cells = self.notebook.ycells
        ids = cell_ids(self.notebook)  # the room's: read once, then followed from events
        counts = {cell_id: ids.count(cell_id) for index in indices
                  if index < len(ids.ids) and (cell_id := ids.ids[index]) is not None}  # fmt: skip
        with self.notebook.ydoc.transaction():
            for index in sorted(indices):
                ycell = cells[index] if index < len(cells) else None
                if isinstance(ycell, Map):
                    self._judge(ycell, counts)

    def _judge(self, ycell: Map[Any], counts: dict[str, int]) -> None:
        _drop_trusted_meta(ycell)
        cell_id = ycell.get("id")
        if isinstance(cell_id, str) and counts.get(cell_id, 0) > 1:
            counts[cell_id] -= 1
            ycell["id"] = cell_id = new_cell_id()  # a copy under a taken id
        if not isinstance(cell_id, str):
            return
        self.trust.judge_inserted(ycell)
        metadata = ycell.get("metadata")
        if (
            isinstance(metadata, Map) and "kernel_collab" in metadata
            and self._run_records.get(cell_id) != _fingerprint(metadata["kernel_collab"])
        ):
            del metadata["kernel_collab"]  # a copy's record: it did not run here
        if ycell.get("execution_state") == "running" and not self.trust.is_running(cell_id):
            ycell["execution_state"] = "idle"


def _drop_trusted_meta(ycell: Any) -> None:
    metadata = ycell.get("metadata") if isinstance(ycell, Map) else None
    if isinstance(metadata, Map) and "trusted" in metadata:
        del metadata["trusted"]


def _keys(event: Any) -> dict[str, dict[str, Any]]:
    """A map event's changed keys (``{}`` for other events)."""
    keys: dict[str, dict[str, Any]] = getattr(event, "keys", {})  # untyped in pycrdt
    return keys if isinstance(event, MapEvent) else {}
