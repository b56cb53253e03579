"""Run the real sidecar as a subprocess, the way the provisioner and external tests do."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

READY = re.compile(
    r"^kernel_collab sidecar ready at (ws://127\.0\.0\.1:\d+/) document=\S+( room=.*)?$"
)
START_TIMEOUT = 30.0


@dataclass
class SidecarProcess:
    """A running sidecar: its process, URL, token, and the log lines it wrote."""

    proc: subprocess.Popen[str]
    url: str
    token: str
    stderr_lines: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.url.rsplit(":", 1)[1].strip("/"))

    def kill(self) -> None:
        """``kill -9``: no chance to save or flush."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM and wait: the sidecar saves and exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    @property
    def log(self) -> str:
        """Everything it logged so far."""
        return "".join(self.stderr_lines)


def sidecar_command(path: Path | str, root: Path, *extra: str) -> list[str]:
    """The command line of a sidecar serving ``path`` under ``root`` on a free port."""
    return [
        sys.executable, "-m", "kernel_collab.sidecar", str(path),
        "--root", str(root), "--port", "0", *extra,
    ]  # fmt: skip


def start_sidecar(
    path: Path | str, root: Path, *extra: str, token: str = "test-token"
) -> SidecarProcess:
    """Start a sidecar and wait for its ready line (raising with its log if it fails)."""
    env = {**os.environ, "KERNEL_COLLAB_TOKEN": token}
    proc = subprocess.Popen(
        sidecar_command(path, root, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    stderr_lines: list[str] = []
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    threading.Thread(target=_collect, args=(proc.stderr, stderr_lines), daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=START_TIMEOUT)
            if line is None:
                proc.wait(10)
                raise RuntimeError(
                    f"sidecar exited with {proc.returncode} before it was ready:\n"
                    + "".join(stderr_lines)
                )
            match = READY.match(line.rstrip("\n"))
            if match:
                return SidecarProcess(proc, match.group(1), token, stderr_lines)
    except queue.Empty:
        proc.kill()
        raise RuntimeError("sidecar did not get ready:\n" + "".join(stderr_lines)) from None


@contextlib.contextmanager
def running_sidecar(
    path: Path | str, root: Path, *extra: str, token: str = "test-token"
) -> Iterator[SidecarProcess]:
    """A sidecar for the duration of a ``with`` block, stopped (saving) at its end."""
    sidecar = start_sidecar(path, root, *extra, token=token)
    try:
        yield sidecar
    finally:
        if sidecar.proc.poll() is None:
            sidecar.stop()


def _pump(stream: object, lines: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line)
    lines.put(None)


def _collect(stream: object, sink: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sink.append(line)
