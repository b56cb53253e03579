"""The kernel-side extension, loaded into ipykernel by the collaborative kernelspec
(docs/architecture.md, "Processes"): it names the cell of each run another client asks for
(``kernel_collab_cell`` on iopub) and prepares the kernel's comm with its sidecar (``comms.py``),
which ``kernel_collab.notebook()`` asks for on first use: until then, no comm traffic at all.
"""

from __future__ import annotations

from typing import Any

from ..protocol import CELL_MESSAGE


def cell_of(parent: dict[str, Any]) -> str | None:
    """The cell id a request names (``metadata.cellId``, as JupyterLab sends), if any."""
    cell_id = (parent.get("metadata") or {}).get("cellId")
    return cell_id if isinstance(cell_id, str) else None


def load_ipython_extension(ipython: Any) -> None:
    """IPython extension hook: announce the cell of each run asked by another client."""
    kernel = getattr(ipython, "kernel", None)
    if kernel is None:
        return  # plain IPython, not a kernel: nothing to announce
    from .api import kernel_comms

    kernel_comms(kernel)  # before the kernel starts, where the extension is loaded at launch

    def announce(_info: Any) -> None:
        parent = kernel.get_parent("shell") or {}
        ours = "kernel_collab" in (parent.get("metadata") or {})
        if ours or parent.get("msg_type") != "execute_request":
            return  # the sidecar's own run, or not a run asked by a client
        # None: a console's or a script's run, which the room notes
        kernel.session.send(kernel.iopub_socket, CELL_MESSAGE, {"cell_id": cell_of(parent)},
                            parent=parent, ident=b"kernel_collab")  # fmt: skip

    ipython.events.register("pre_run_cell", announce)
