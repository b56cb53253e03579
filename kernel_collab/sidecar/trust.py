"""Notebook trust, as Jupyter keeps it: saved notebooks are signed when every output is trusted.

An output is trusted when the collaborative kernel produced it, or when it came from a file
whose signature checks out. Outputs that arrive from an unsigned file (an outside edit, a
``git checkout``) are not, until their cell runs again. While any cell is untrusted, saves
are not signed, so such outputs never become trusted by being saved.
Blocking (the notary uses SQLite): call from a worker thread.
"""

from __future__ import annotations

from typing import Any

import nbformat
from nbformat.sign import NotebookNotary


def is_signed(nb: dict[str, Any]) -> bool:
    """Whether Jupyter's notary has this notebook's signature (it was trusted)."""
    notary = NotebookNotary()
    try:
        return bool(notary.check_signature(nbformat.from_dict(nb)))
    finally:
        notary.close()


def sign(nb: dict[str, Any]) -> None:
    """Record the notebook as trusted, so it reopens trusted."""
    notary = NotebookNotary()
    try:
        notary.sign(nbformat.from_dict(nb))
    finally:
        notary.close()


def cells_with_outputs(nb: dict[str, Any]) -> set[str]:
    """Ids of the code cells that have outputs."""
    return {c["id"] for c in nb.get("cells", []) if c.get("outputs") and "id" in c}


def changed_outputs(base: dict[str, Any] | None, new: dict[str, Any]) -> set[str]:
    """Ids of cells whose outputs differ from the base's (all with outputs, without a base)."""
    if base is None:
        return cells_with_outputs(new)
    before = {c.get("id"): c.get("outputs") for c in base.get("cells", [])}
    return {
        c["id"] for c in new.get("cells", [])
        if "id" in c and c.get("outputs") and c.get("outputs") != before.get(c["id"])
    }  # fmt: skip
