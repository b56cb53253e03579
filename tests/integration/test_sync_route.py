"""How a browser's document connection reaches the sidecar: handed over by the Jupyter server
(the default on Linux, the server then out of the path), or relayed by it (``proxy``)."""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from kernel_collab.protocol import IDENTITY_HEADER, encode_handoff, handoff_address
from tests.jupyter_server_process import JupyterServer, running_server
from tests.kernel_helpers import write_cells
from tests.peers import NotebookPeer, url_with_token, vanish
from tests.sidecar_process import running_sidecar

pytestmark = pytest.mark.anyio


def _source(peer: NotebookPeer) -> str:
    return str(peer.notebook.get()["cells"][0]["source"])


@contextmanager
def _stopped(server: JupyterServer) -> Iterator[None]:
    """The Jupyter server process frozen (SIGSTOP) for the block: it handles nothing."""
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


async def test_people_keep_editing_while_the_server_is_busy(server: JupyterServer) -> None:
    """Their connections were handed to the sidecar: the server relays nothing, so a server
    stuck in other work (here: stopped outright) does not hold a keystroke back."""
    write_cells(server.root / "nb.ipynb", {"a": "x = 1"})
    room = await server.open_room("nb.ipynb")
    url = server.sync_url(room["document_id"])
    async with (
        NotebookPeer.connect(url, server.token) as alice,
        NotebookPeer.connect(url, server.token) as bob,
    ):
        with _stopped(server):
            alice.notebook.set_cell(0, source="x = 2  # typed while the server was stopped")
            await bob.wait_until(lambda p: _source(p).startswith("x = 2"))
            bob.notebook.set_cell(0, source="x = 3")
            await alice.wait_until(lambda p: _source(p) == "x = 3")
    assert "proxying" not in server.log


async def _cut_upgrade(server: JupyterServer, path: str, rng: random.Random) -> None:
    """A browser gone partway through sending its upgrade request to the server."""
    address = urlsplit(server.url)
    host, port = address.hostname, address.port
    assert host is not None and port is not None
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode()  # fmt: skip
    async with await anyio.connect_tcp(host, port) as stream:
        await stream.send(request[: rng.randint(1, len(request))])
        await anyio.sleep(rng.random() * 0.01)  # a random moment of the server's handling
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST


async def test_browsers_vanishing_mid_upgrade_handover_or_sync_leave_the_room_serving(
    server: JupyterServer,
) -> None:
    """Browsers gone during their upgrade request, the server's handover or their sync (no
    closing handshake) while two people edit: the people keep editing, and neither the server
    nor the sidecar logs an error."""
    write_cells(server.root / "nb.ipynb", {"a": "x = 1"})
    room = await server.open_room("nb.ipynb")
    url = server.sync_url(room["document_id"])
    path = f"/api/kernel-collab/sync/{room['document_id']}?token={server.token}"
    rng = random.Random(3)
    sidecar = server.sidecar(server.root / "nb.ipynb")["pid"]
    async with (
        NotebookPeer.connect(url, server.token) as alice,
        NotebookPeer.connect(url, server.token) as bob,
    ):
        for round_ in range(20):
            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    tg.start_soon(vanish, url, server.token, rng)
                for _ in range(2):
                    tg.start_soon(_cut_upgrade, server, path, rng)
            typed = f"x = {round_}"
            alice.notebook.set_cell(0, source=typed)
            await bob.wait_until(lambda p: _source(p) == typed)  # noqa: B023 - awaited here
    assert server.sidecar(server.root / "nb.ipynb")["pid"] == sidecar  # never restarted
    for line in server.log_lines:
        assert "Traceback" not in line and "[E " not in line and "ERROR" not in line, line


async def test_the_server_still_checks_a_handed_over_connection(server: JupyterServer) -> None:
    """Before it hands a connection over, the server checks it as Jupyter checks its own: a
    page of another site using the person's login cookie is refused (403), so is a request
    with a wrong token; the sidecar never sees either, nor any Origin."""
    write_cells(server.root / "nb.ipynb", {"a": "x = 1"})
    room = await server.open_room("nb.ipynb")
    url = server.sync_url(room["document_id"])
    async with httpx.AsyncClient(base_url=server.url) as browser:  # logs in: a cookie
        assert (await browser.get(f"/api/status?token={server.token}")).status_code == 200
        cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
    with pytest.raises(InvalidStatus) as cross_site:
        async with ws_connect(url, origin=Origin("http://evil.example"),
                              additional_headers={"Cookie": cookie}):  # fmt: skip
            pass
    assert cross_site.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as wrong_token:
        async with ws_connect(url_with_token(url, "wrong")):
            pass
    assert wrong_token.value.response.status_code == 403
    # The page's own origin, with the same cookie, is what Jupyter accepts.
    async with ws_connect(url, origin=Origin(server.url),
                          additional_headers={"Cookie": cookie}) as page:  # fmt: skip
        first = await page.recv()
        assert isinstance(first, bytes) and first[:1] == bytes([0])  # sync step 1
    assert "it carries an Origin header" not in server.log


async def test_the_proxy_route_relays_through_the_server(tmp_path: Path) -> None:
    """``--KernelCollabServer.sync_route=proxy`` (and any server terminating TLS) relays each
    message; people still edit together, and a reader stays read-only."""
    root, runtime = tmp_path / "root", tmp_path / "runtime"
    root.mkdir()
    runtime.mkdir()
    write_cells(root / "nb.ipynb", {"a": "x = 1"})
    with running_server(root, runtime, "--KernelCollabServer.sync_route=proxy") as srv:
        room = await srv.open_room("nb.ipynb")
        url = srv.sync_url(room["document_id"])
        async with (
            NotebookPeer.connect(url, srv.token) as alice,
            NotebookPeer.connect(url, srv.token) as bob,
        ):
            alice.notebook.set_cell(0, source="x = 2")
            await bob.wait_until(lambda p: _source(p) == "x = 2")
            # Frozen, the server relays nothing: the edit waits for it.
            with _stopped(srv):
                bob.notebook.set_cell(0, source="x = 3")
                await bob.flush()
            await alice.wait_until(lambda p: _source(p) == "x = 3")


def _handshake(*headers: str) -> bytes:
    lines = ["GET / HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
             *headers]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _hand(name: str, message: bytes, fds: list[int]) -> None:
    async with await anyio.connect_unix(handoff_address(name)) as link:
        if fds:
            await link.send_fds(message, fds)
        else:
            await link.send(message)


def _answer(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer


async def test_the_sidecar_survives_bad_handovers_and_checks_every_handshake(
    tmp_path: Path,
) -> None:
    """Anyone on the machine can reach the sidecar's handover socket: what they send is
    refused with a log line, the handshake that comes with a socket is checked like any other
    (no admin token: 401, an identity without it too), and the sidecar keeps serving."""
    nb = write_cells(tmp_path / "nb.ipynb", {"a": "x = 1"})
    name = f"kernel_collab-test-{secrets.token_hex(8)}"
    with running_sidecar(nb, tmp_path, "--handoff-socket", name) as sidecar:
        await _hand(name, b"\x00\x00\x00\x05hello", [])  # no socket
        await _hand(name, b"", [])  # nothing at all: the server's end closed at once
        read_end, write_end = os.pipe()
        try:
            await _hand(name, encode_handoff(_handshake()), [read_end])  # not a socket
        finally:
            os.close(read_end)
            os.close(write_end)
        ours, theirs = socket.socketpair()
        with ours, theirs:
            await _hand(name, (1 << 30).to_bytes(4, "big"), [theirs.fileno()])  # too long
        for headers in ((), (f'{IDENTITY_HEADER}: {{"username": "admin"}}',),
                        ("Authorization: token wrong",)):  # fmt: skip
            ours, theirs = socket.socketpair()
            with ours, theirs:
                await _hand(name, encode_handoff(_handshake(*headers)), [theirs.fileno()])
                theirs.close()
                assert _answer(ours).startswith(b"HTTP/1.1 401"), headers
        # With the token, a handed-over socket is a peer like any other.
        ours, theirs = socket.socketpair()
        with ours, theirs:
            token = f"Authorization: token {sidecar.token}"
            await _hand(name, encode_handoff(_handshake(token)), [theirs.fileno()])
            theirs.close()
            assert _answer(ours).startswith(b"HTTP/1.1 101")
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            assert peer.notebook.cell_number == 1
        log = sidecar.log
        assert "no socket came with the handshake" in log
        assert "it closed before its handshake came" in log
        assert "not a socket" in log
        assert f"a handshake of {1 << 30} bytes" in log
