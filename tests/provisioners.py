"""Kernel provisioners for tests, loaded by the Jupyter server (put the repository on its
``PYTHONPATH``) as ``CollabProvisioner``'s inner provisioner: ``tests.provisioners:Name``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

RECORD_DIR_ENV = "KERNEL_COLLAB_TEST_RECORD_DIR"
"""Directory (in the server's environment) where :class:`RecordingProvisioner` writes."""


def read_calls(folder: Path) -> list[dict[str, Any]]:
    """The calls a :class:`RecordingProvisioner` recorded in ``folder``, in order."""
    path = folder / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def read_launches(folder: Path) -> list[dict[str, Any]]:
    """The launch markers (``{kernel_id, pid, cmd}``), oldest first."""
    markers = sorted(folder.glob("launch-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    return [json.loads(p.read_text()) for p in markers]


class RecordingProvisioner(LocalProvisioner):
    """The local provisioner, recording each lifecycle call in ``$KERNEL_COLLAB_TEST_RECORD_DIR``:
    one JSON line per call in ``calls.jsonl`` and a marker file ``launch-N.json`` per launch
    holding the kernel's pid (so a test can tell which process this provisioner started)."""

    def _folder(self) -> Path | None:
        folder = os.environ.get(RECORD_DIR_ENV)
        return Path(folder) if folder else None

    def _record(self, call: str, **details: Any) -> None:
        folder = self._folder()
        if folder is None:
            return
        line = json.dumps({"call": call, "kernel_id": str(self.kernel_id), **details})
        with (folder / "calls.jsonl").open("a") as f:
            f.write(line + "\n")

    def _mark_launch(self, cmd: list[str]) -> None:
        folder = self._folder()
        if folder is None:
            return
        number = len(list(folder.glob("launch-*.json"))) + 1
        marker = {"kernel_id": str(self.kernel_id), "pid": self.pid, "cmd": cmd}
        (folder / f"launch-{number}.json").write_text(json.dumps(marker))

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Record, then prepare as the local provisioner does."""
        self._record("pre_launch")
        result: dict[str, Any] = await super().pre_launch(**kwargs)
        return result

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Launch as the local provisioner does, then leave a marker with the kernel's pid."""
        info: KernelConnectionInfo = await super().launch_kernel(cmd, **kwargs)
        self._mark_launch(cmd)
        self._record("launch_kernel", pid=self.pid)
        return info

    async def post_launch(self, **kwargs: Any) -> None:
        """Record the call."""
        self._record("post_launch")
        await super().post_launch(**kwargs)

    async def cleanup(self, restart: bool = False) -> None:
        """Record the call (with ``restart``), then clean up."""
        self._record("cleanup", restart=restart)
        await super().cleanup(restart=restart)


HOLD_DIR_ENV = "KERNEL_COLLAB_TEST_HOLD_DIR"
"""Directory (in the server's environment) :class:`HeldProvisioner` waits on."""


class HeldProvisioner(LocalProvisioner):
    """The local provisioner, whose ``launch_kernel`` writes ``held`` in
    ``$KERNEL_COLLAB_TEST_HOLD_DIR`` and waits there for a file: ``release`` launches the
    kernel, ``fail`` raises (a kernel that cannot be launched). A test thereby holds a kernel's
    launch exactly while it looks at what the room serves meanwhile."""

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Wait for the test's word, then launch (or refuse) as told."""
        folder = Path(os.environ[HOLD_DIR_ENV])
        (folder / "held").write_text(str(self.kernel_id))
        if await _word(folder) == "fail":
            raise RuntimeError("launch refused by the test")
        info: KernelConnectionInfo = await super().launch_kernel(cmd, **kwargs)
        return info


async def _word(folder: Path) -> str:
    """``release`` or ``fail``, once either file is in ``folder`` (re-checked at each change,
    and at least every half second)."""
    import watchfiles

    async for _ in watchfiles.awatch(folder, rust_timeout=500, yield_on_timeout=True):
        for word in ("fail", "release"):
            if (folder / word).exists():
                return word
    raise RuntimeError(f"{folder} stopped being watched")
