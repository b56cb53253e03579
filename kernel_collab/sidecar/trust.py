"""Output trust by origin: the sidecar vouches for outputs, nobody else does (the rules, the
record, and when Jupyter's notary is asked: docs/architecture.md, "Trust record"). The notary
blocks: call :func:`is_signed` and :func:`sign` from a worker thread."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from contextlib import closing
from typing import Any

import nbformat
from pycrdt import Map

from ..notebook_core.cell_ids import read_ids
from ..notebook_core.cells import find_cell
from ..notebook_core.outputs import is_str_list
from ..protocol import TRUST_KEY

VERSION_KEY = "trust_version"
VERSION = 1
"""Stores written before trust records (no version) start with nothing vouched for."""
RUNNING = ""
"""Record value of a cell whose outputs the kernel is writing now."""


def outputs_digest(outputs: Any) -> str:
    """Digest of a list of outputs, the same however a peer re-encoded equal values."""
    outputs = [_joined(o) for o in outputs] if isinstance(outputs, list) else outputs
    text = json.dumps(canonical(outputs), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _joined(output: Any) -> Any:
    """An output with multiline strings (lists of lines, as in files) joined."""
    if not isinstance(output, dict):
        return output
    out = dict(output)
    if is_str_list(out.get("text")):
        out["text"] = "".join(out["text"])
    if isinstance(out.get("data"), dict):
        out["data"] = {k: "".join(v) if is_str_list(v) else v for k, v in out["data"].items()}
    return out


def canonical(value: Any) -> Any:
    """``value`` with integral floats as ints, so equal JSON compares equal however it came."""
    # Y stores numbers as doubles: 1 written by Python may come back from a browser as 1.0.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def _outputs_of(ycell: Map[Any]) -> list[Any]:
    outputs = ycell.get("outputs")
    return list(outputs.to_py() or []) if outputs is not None else []


class TrustLedger:
    """Keeps the trust record of one shared notebook."""

    def __init__(self, notebook: Any, status: Callable[[], Map[Any]]):
        self._notebook = notebook
        self._status = status
        self._stale: set[str] = set()
        """Finished cells the kernel wrote to since their digest was taken."""

    @property
    def record(self) -> Map[Any]:
        """The trust record (created on first use)."""
        status = self._status()
        record = status.get(TRUST_KEY)
        if not isinstance(record, Map):
            record = status[TRUST_KEY] = Map()
            status[VERSION_KEY] = VERSION
        return record

    def is_current(self) -> bool:
        """Whether the record was kept by this version of the rules."""
        return bool(self._status().get(VERSION_KEY) == VERSION)

    def is_running(self, cell_id: str) -> bool:
        """Whether the kernel is writing the cell's outputs now."""
        return bool(self.record.get(cell_id) == RUNNING)

    # -- the kernel -------------------------------------------------------------------------

    def start_run(self, cell_id: str) -> None:
        """A run starts (its outputs were just cleared): what follows is the kernel's."""
        self._stale.discard(cell_id)
        if self.record.get(cell_id) != RUNNING:
            self.record[cell_id] = RUNNING

    def end_run(self, cell_id: str) -> None:
        """The run ended: take the digest of what the kernel wrote."""
        if self.record.get(cell_id) == RUNNING:
            self._seal(cell_id)
        self.prune()

    def kernel_wrote(self, cell_ids: Iterable[str]) -> None:
        """The kernel changed outputs of these cells (late output, display updates)."""
        record = self.record
        for cell_id in cell_ids:
            if record.get(cell_id):  # a digest: the run is over, the digest is now old
                self._stale.add(cell_id)

    def refresh(self) -> None:
        """Re-take stale digests (before a peer's update: it may move those cells)."""
        stale, self._stale = self._stale, set()
        for cell_id in stale:
            if self.record.get(cell_id):
                self._seal(cell_id)

    def _seal(self, cell_id: str) -> None:
        ycell = find_cell(self._notebook, cell_id)
        if ycell is None:
            del self.record[cell_id]
        else:
            self.record[cell_id] = outputs_digest(_outputs_of(ycell))

    # -- peers, files, people ----------------------------------------------------------------

    def judge_inserted(self, ycell: Map[Any]) -> None:
        """A peer inserted this cell: keep its record only for the outputs vouched for."""
        cell_id = ycell.get("id")
        if not isinstance(cell_id, str):
            return
        record = self.record
        vouched = record.get(cell_id)
        if vouched is None:
            return
        outputs = _outputs_of(ycell)
        if not outputs:
            return  # nothing to render; a later run vouches again
        if not vouched or outputs_digest(outputs) != vouched:
            del record[cell_id]  # moved while running, or other outputs under a known id

    def untrust(self, cell_ids: Iterable[str]) -> None:
        """These cells' outputs came from outside (a merged file): not vouched for."""
        record = self.record
        for cell_id in cell_ids:
            if cell_id in record:
                del record[cell_id]
            self._stale.discard(cell_id)

    def restored(self, vouched: Mapping[str, str], cell_ids: Iterable[str]) -> None:
        """Cells restored from an earlier version: their outputs keep the trust they had then
        (``vouched``: that version's record), never more."""
        record = self.record
        for cell_id in cell_ids:
            if self.is_running(cell_id):
                continue
            ycell = find_cell(self._notebook, cell_id)
            outputs = _outputs_of(ycell) if ycell is not None else []
            digest = outputs_digest(outputs) if outputs else None
            if digest is not None and vouched.get(cell_id) == digest:
                if record.get(cell_id) != digest:
                    record[cell_id] = digest
            elif cell_id in record:
                del record[cell_id]
            self._stale.discard(cell_id)

    def vouch_all(self, only: Callable[[str, list[Any]], bool] | None = None) -> int:
        """Vouch for the current outputs of every code cell (``only`` filters); return how many.

        For "Trust Notebook" by a person who may run code, and for a signed file at first load.
        """
        record = self.record
        count = 0
        for ycell in self._notebook.ycells:
            cell_id = ycell.get("id")
            if ycell.get("cell_type") != "code" or not isinstance(cell_id, str):
                continue
            outputs = _outputs_of(ycell)
            if not outputs or (only is not None and not only(cell_id, outputs)):
                continue
            digest = outputs_digest(outputs)
            if record.get(cell_id) != digest:
                record[cell_id] = digest
            count += 1
        return count

    def reset(self) -> None:
        """Vouch for nothing (a store from before trust records, a file that is not signed)."""
        self.record.clear()
        self._stale.clear()
        self._status()[VERSION_KEY] = VERSION

    def seal_interrupted(self) -> None:
        """At start: runs the previous sidecar did not see end were the kernel's: seal them."""
        for cell_id, value in list(self.record.items()):
            if value == RUNNING:
                self._seal(cell_id)

    def fully_trusted(self, nb: dict[str, Any]) -> bool:
        """Whether every code cell with outputs of ``nb`` (the document as a save took it) is
        vouched for: then the file may be signed. Read from the save's copy: reading each
        cell through pycrdt took ~40 µs a cell, 0.2 s of the event loop at every save of a
        5,000-cell notebook."""
        vouched = set(self.record.keys())
        return all(cell.get("id") in vouched for cell in nb.get("cells", ())
                   if cell.get("cell_type") == "code" and cell.get("outputs"))

    def prune(self) -> None:
        """Forget records of cells that no longer exist (kept meanwhile for undo of a delete)."""
        record = self.record
        if len(record) <= 2 * len(self._notebook.ycells) + 100:
            return
        ids = set(read_ids(self._notebook.ycells))
        for cell_id in [k for k in record.keys() if k not in ids]:  # noqa: SIM118
            del record[cell_id]


def is_signed(nb: dict[str, Any]) -> bool:
    """Whether Jupyter's notary has this notebook's signature (it was trusted); False without
    asking for a notebook with no outputs, which has nothing to vouch for."""
    if not any(cell.get("outputs") for cell in nb.get("cells", [])):
        return False
    from nbformat.sign import NotebookNotary  # loaded when first needed (0.5 MiB)

    with closing(NotebookNotary()) as notary:
        # The notary reads ``nb.nbformat`` and hashes the rest as JSON: the top level as a
        # node is enough (converting every cell took as long as the hash).
        return bool(notary.check_signature(nbformat.NotebookNode(nb)))


def sign(nb: dict[str, Any]) -> None:
    """Record the notebook as trusted, so it reopens trusted."""
    from nbformat.sign import NotebookNotary

    with closing(NotebookNotary()) as notary:
        notary.sign(nbformat.from_dict(nb))


def outputs_by_id(nb: dict[str, Any]) -> dict[str, str]:
    """Digest of each code cell's outputs, by cell id (cells without outputs left out)."""
    return {
        c["id"]: outputs_digest(c.get("outputs") or [])
        for c in nb.get("cells", [])
        if c.get("cell_type") == "code" and c.get("outputs") and isinstance(c.get("id"), str)
    }
