"""Start a Jupyter server with the collaborative kernel on examples/demo.ipynb, queue every
cell, and watch the shared document fill in — no browser involved.

Run it with ``scripts/run --terminal`` (which sets up the environment first). Press Ctrl-C to
stop; the server stays up until then, and the notebook's sidecar URL is printed for other peers.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio
from jupyter_ydoc import YNotebook
from pycrdt import create_sync_message, handle_sync_message
from websockets.asyncio.client import connect

from kernel_collab import protocol

HERE = Path(__file__).resolve().parent
"""The server's root: what it serves."""
RUNTIME = HERE.parent / ".runtime"
"""Jupyter's runtime dir (the sidecar's tokens): outside what the server serves."""


def free_port() -> int:
    """A free port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST JSON to the Jupyter server."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        result: dict[str, Any] = json.load(response)
        return result


def wait_until_up(url: str, token: str, proc: subprocess.Popen[bytes]) -> None:
    """Wait for the server's API to answer."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("jupyter server exited; see its log above")
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit("jupyter server did not answer within 60 s")


def render(nb: YNotebook) -> str:
    """A terminal view of the notebook."""
    lines = []
    for cell in nb.get()["cells"]:
        if cell["cell_type"] != "code":
            continue
        run = (cell["metadata"].get("kernel_collab") or {}).get("last_run") or {}
        lines.append(f"[{cell.get('execution_count') or ' '}] {cell['source'].splitlines()[0]}"
                     f"   ({run.get('status', 'not run')})")
        for out in cell.get("outputs", []):
            text = out.get("text") or (out.get("data") or {}).get("text/plain") or out.get("ename")
            for line in str(text).splitlines()[-3:]:
                lines.append(f"      {line}")
    return "\n".join(lines)


async def watch(sidecar: dict[str, Any]) -> None:
    """Join the document as a peer, queue every cell, and print it as it changes."""
    nb = YNotebook()
    async with connect(f"{sidecar['url']}?name=demo-watcher",
                       additional_headers={"Authorization": f"token {sidecar['token']}"}) as ws:
        await ws.send(create_sync_message(nb.ydoc))
        queued = False
        shown = ""
        async for data in ws:
            assert isinstance(data, bytes)
            message = protocol.decode(data)
            sync = (protocol.Kind.SYNC_STEP1, protocol.Kind.SYNC_STEP2, protocol.Kind.SYNC_UPDATE)
            if message.kind in sync:
                reply = handle_sync_message(data[1:], nb.ydoc)
                if reply is not None:
                    await ws.send(reply)
            if not queued and nb.cell_number:
                for cell in nb.get()["cells"]:
                    if cell["cell_type"] == "code":
                        request = {"type": "execute", "cell_id": cell["id"]}
                        await ws.send(protocol.encode_request(request))
                queued = True
            view = render(nb)
            if view != shown:
                shown = view
                print("\033[2J\033[H" + view + f"\n\nsidecar: {sidecar['url']} — Ctrl-C to stop")


def main() -> None:
    """Run the demo."""
    token, port = secrets.token_hex(16), free_port()
    runtime = RUNTIME
    runtime.mkdir(mode=0o700, exist_ok=True)
    runtime.chmod(0o700)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={port}",
         f"--ServerApp.root_dir={HERE}", f"--IdentityProvider.token={token}"],
        env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, token, proc)
        post(f"{url}/api/sessions", token, {
            "path": "demo.ipynb", "name": "demo.ipynb", "type": "notebook",
            "kernel": {"name": "python3-collab"},
        })  # fmt: skip
        record = next((runtime / "kernel_collab").glob("sidecar-*.json"))
        anyio.run(watch, json.loads(record.read_text()))
    except KeyboardInterrupt:
        pass
    finally:
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


if __name__ == "__main__":
    main()
