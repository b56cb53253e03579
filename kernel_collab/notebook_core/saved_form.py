"""A notebook's saved form (the bytes :func:`files.serialize` writes), re-rendered only where it
changed: each cell's JSON is kept, and a save renders and validates only the cells that
changed since the last one. nbformat's writer renders with ``indent``, which Python's json
module does in Python, not C: for a notebook of megabytes that held the GIL for tens of
milliseconds each save, and with it the sidecar's event loop (a worker thread does not
escape the GIL)."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import nbformat
from nbformat.v4.nbjson import BytesEncoder
from nbformat.v4.rwbase import split_lines, strip_transient

from . import files

CELL_INDENT = "  "
"""A cell's depth in the file: an item of the top-level ``cells`` list."""
_DUMPS: dict[str, Any] = {"cls": BytesEncoder, "indent": 1, "sort_keys": True,
                          "separators": (",", ": "), "ensure_ascii": False}  # fmt: skip
"""nbformat v4's writer settings (``nbformat.v4.nbjson.JSONWriter.writes``)."""


class SavedForm:
    """Renders a notebook's saved bytes, keeping each cell's rendering by cell id."""

    def __init__(self) -> None:
        self._cells: dict[str, str] = {}

    def forget(self) -> None:
        """Render every cell at the next :meth:`render`."""
        self._cells.clear()

    def render(self, nb: dict[str, Any], changed: Collection[str] | None = None) -> bytes:
        """The bytes of ``nb`` as :func:`files.serialize` writes them, validated
        (:class:`files.NotebookFileError` if invalid); ``changed``: the ids of the cells that
        changed since the last render (``None``: any may have)."""
        cells = nb.get("cells")
        ids = _ids(cells)
        if ids is None:
            self.forget()  # no ids to key by: nbformat's own writer, whole (and its errors)
            files.validate(nb)
            return files.serialize(nb)
        assert isinstance(cells, list)
        header = {key: value for key, value in nb.items() if key != "cells"}
        fresh = [cell for cell, cid in zip(cells, ids, strict=True)
                 if changed is None or cid in changed or cid not in self._cells]  # fmt: skip
        files.validate({**header, "cells": fresh})
        for cell in fresh:
            self._cells[cell["id"]] = _render_cell(cell)
        self._cells = {cid: self._cells[cid] for cid in ids}
        top = nbformat.from_dict({**header, "cells": []})
        text = json.dumps(strip_transient(top), **_DUMPS)
        if cells:
            head = '{\n "cells": [],'
            assert text.startswith(head), text[:40]
            body = ",\n".join(self._cells[cid] for cid in ids)
            text = '{\n "cells": [\n' + body + "\n ]," + text[len(head):]
        return (text if text.endswith("\n") else text + "\n").encode("utf-8")


def _ids(cells: object) -> list[str] | None:
    """The cells' ids, if every cell has one and no two share it."""
    if not isinstance(cells, list):
        return None
    ids = [cell.get("id") if isinstance(cell, dict) else None for cell in cells]
    strings = [cid for cid in ids if isinstance(cid, str)]
    return strings if len(strings) == len(ids) == len(set(strings)) else None


def _render_cell(cell: dict[str, Any]) -> str:
    """One cell as nbformat's writer lays it out inside the ``cells`` list."""
    node = split_lines(nbformat.from_dict({"metadata": {}, "cells": [cell]}))
    text = json.dumps(strip_transient(node).cells[0], **_DUMPS)
    return CELL_INDENT + text.replace("\n", "\n" + CELL_INDENT)
