"""The kernel-side extension, loaded into ipykernel by the collaborative kernelspec.

It does two things. When code runs at the request of a client other than the sidecar (stock
JupyterLab, a console, nbclient), it tells the sidecar on iopub with a ``kernel_collab_cell``
message naming the cell (``metadata.cellId``, as JupyterLab sends; null if none), so the
sidecar writes that run's outputs and count into the cell, or notes a run of no cell in the
room's state (clients that do not know the type ignore it). And it prepares the kernel's
comm with its sidecar (``comms.py``), which ``kernel_collab.notebook()`` asks for on first
use: until then, no comm traffic at all.
"""

from __future__ import annotations

from typing import Any

from ..protocol import CELL_MESSAGE


def load_ipython_extension(ipython: Any) -> None:
    """IPython extension hook: announce the cell of each run asked by another client."""
    kernel = getattr(ipython, "kernel", None)
    if kernel is None:
        return  # plain IPython, not a kernel: nothing to announce
    from .api import kernel_comms

    kernel_comms(kernel)  # before the kernel starts, where the extension is loaded at launch

    def announce(_info: Any) -> None:
        parent = kernel.get_parent("shell") or {}
        metadata = parent.get("metadata") or {}
        cell_id = metadata.get("cellId")
        if "kernel_collab" in metadata or parent.get("msg_type") != "execute_request":
            return  # the sidecar's own run, or not a run asked by a client
        if not isinstance(cell_id, str):
            cell_id = None  # a console's or a script's run: the room notes it
        kernel.session.send(
            kernel.iopub_socket,
            CELL_MESSAGE,
            {"cell_id": cell_id},
            parent=parent,
            ident=b"kernel_collab",
        )

    ipython.events.register("pre_run_cell", announce)
