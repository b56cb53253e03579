"""ipywidgets ``Output`` capture, done by the sidecar as a widget frontend would: outputs of the
request an Output widget's ``msg_id`` names go to the widget's state in the kernel (a
``comm_msg`` update), not to the cell, so latecomers see them (docs/architecture.md, "Outputs").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..notebook_core.outputs import MalformedOutput, output_from_message

WIDGET_TARGET = "jupyter.widget"
OUTPUT_MODEL = "OutputModel"


@dataclass
class OutputWidget:
    """What the sidecar knows of one Output widget."""

    comm_id: str
    msg_id: str = ""
    outputs: list[dict[str, Any]] = field(default_factory=list)


class OutputWidgets:
    """Output widgets by comm id, and which request each one is capturing."""

    def __init__(self) -> None:
        self.widgets: dict[str, OutputWidget] = {}
        self.dirty: set[str] = set()

    def observe_comm(self, msg_type: str, content: dict[str, Any]) -> None:
        """Follow ``comm_open``/``comm_msg``/``comm_close`` published by the kernel."""
        comm_id = content.get("comm_id")
        if not isinstance(comm_id, str):
            return
        data = content.get("data") or {}
        state = data.get("state") if isinstance(data, dict) else None
        if msg_type == "comm_open":
            if content.get("target_name") != WIDGET_TARGET or not isinstance(state, dict):
                return
            if state.get("_model_name") == OUTPUT_MODEL:
                widget = self.widgets[comm_id] = OutputWidget(comm_id)
                self._update(widget, state)
        elif msg_type == "comm_close":
            self.widgets.pop(comm_id, None)
            self.dirty.discard(comm_id)
        elif comm_id in self.widgets and isinstance(state, dict):
            self._update(self.widgets[comm_id], state)

    @staticmethod
    def _update(widget: OutputWidget, state: dict[str, Any]) -> None:
        if isinstance(state.get("msg_id"), str):
            widget.msg_id = state["msg_id"]
        if isinstance(state.get("outputs"), list):
            widget.outputs = list(state["outputs"])

    def capturing(self, parent_msg_id: str) -> OutputWidget | None:
        """The Output widget capturing a request's outputs, if any (the innermost: last)."""
        if not parent_msg_id:
            return None
        return next((w for w in reversed(self.widgets.values()) if w.msg_id == parent_msg_id), None)

    def capture(self, widget: OutputWidget, msg_type: str, content: dict[str, Any]) -> None:
        """Add one output message to a widget (as JupyterLab's output model would)."""
        if msg_type == "clear_output":
            widget.outputs = []
        elif msg_type in ("stream", "display_data", "execute_result", "error"):
            try:
                output = output_from_message(msg_type, content)
            except MalformedOutput:
                return  # nothing valid to show; the cell's writer reports such messages
            last = widget.outputs[-1] if widget.outputs else None
            if output["output_type"] == "stream" and last is not None and last.get(
                "output_type") == "stream" and last.get("name") == output["name"]:  # fmt: skip
                last["text"] = str(last.get("text", "")) + output["text"]
            else:
                widget.outputs.append(output)
        else:
            return
        self.dirty.add(widget.comm_id)

    def take_updates(self) -> list[tuple[str, dict[str, Any]]]:
        """``(comm_id, comm_msg data)`` for every widget whose outputs changed."""
        updates = [
            (cid, {"method": "update", "state": {"outputs": self.widgets[cid].outputs},
                   "buffer_paths": []})
            for cid in sorted(self.dirty)
            if cid in self.widgets
        ]  # fmt: skip
        self.dirty.clear()
        return updates
