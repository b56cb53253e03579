"""What must not leak: sidecar ports listen on loopback only, tokens stay out of argv, and
the files that hold tokens are readable by their user only."""

from __future__ import annotations

import stat
from pathlib import Path

import anyio
import pytest

from tests.files import write_notebook
from tests.jupyter_server_process import JupyterServer

pytestmark = pytest.mark.anyio


def _listening_addresses(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.append(address)
    return found


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


async def test_sidecars_listen_on_loopback_with_private_tokens(server: JupyterServer) -> None:
    nb = write_notebook(server.root / "nb.ipynb", ["x = 1"])
    session = await server.start_session("nb.ipynb")
    record = server.sidecar(nb)
    port = int(record["url"].rsplit(":", 1)[1].split("/")[0])
    addresses = _listening_addresses(port)
    assert addresses, f"nothing listens on the sidecar's port {port}"
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
    assert set(addresses) <= loopback, addresses
    # Tokens: never in a command line, only in files their user alone can read.
    cmdline = (await anyio.Path(f"/proc/{record['pid']}/cmdline").read_bytes()).decode()
    assert record["token"] not in cmdline and record["admin_token"] not in cmdline
    runtime_files = list((server.runtime / "kernel_collab").glob("*"))
    assert runtime_files and all(_private(p) for p in runtime_files), [
        (p.name, oct(p.stat().st_mode)) for p in runtime_files]  # fmt: skip
    # The kernel gets no record, token or address of its sidecar: it is reached over its own
    # channels (the kernel's comm).
    kernel_id = session["kernel"]["id"]
    assert not any(kernel_id in p.name for p in runtime_files), [p.name for p in runtime_files]
