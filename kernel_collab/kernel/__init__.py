"""The kernel-side extension, loaded into ipykernel by the collaborative kernelspec.

For now it does one thing: when a cell runs at the request of a client other than the
sidecar (stock JupyterLab, a plain kernel client) and that request names its cell
(``metadata.cellId``, as JupyterLab sends), it tells the sidecar on iopub with a
``kernel_collab_cell`` message, so the sidecar writes that run's outputs into the cell.
Clients that do not know the message type ignore it.
"""

from __future__ import annotations

from typing import Any

from ..protocol import CELL_MESSAGE


def load_ipython_extension(ipython: Any) -> None:
    """IPython extension hook: announce the cell of each run asked by another client."""
    kernel = getattr(ipython, "kernel", None)
    if kernel is None:
        return  # plain IPython, not a kernel: nothing to announce

    def announce(_info: Any) -> None:
        parent = kernel.get_parent("shell") or {}
        metadata = parent.get("metadata") or {}
        cell_id = metadata.get("cellId")
        if not isinstance(cell_id, str) or "kernel_collab" in metadata:
            return  # not a notebook cell, or the sidecar's own run
        kernel.session.send(
            kernel.iopub_socket,
            CELL_MESSAGE,
            {"cell_id": cell_id},
            parent=parent,
            ident=b"kernel_collab",
        )

    ipython.events.register("pre_run_cell", announce)
