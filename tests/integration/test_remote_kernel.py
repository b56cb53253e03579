"""A collaborative kernel on another host, through gateway-provisioners' DistributedProvisioner.

The other host is a network namespace with its own address and sshd (``tests/remote_host.py``);
the kernelspec wraps ``distributed-provisioner`` in ``kernel-collab``. The kernel runs there
and cannot reach this machine's loopback; the sidecar, on this machine, is its ZMQ client over
the link. Nobody here is a browser: peers are Python connections to the room.
"""

from __future__ import annotations

import itertools
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import connect as ws_connect

from tests.files import wait_for_file, write_notebook
from tests.integration.test_kernel_lifecycle import process, wait_exited
from tests.integration.test_stdin import Person
from tests.kernel_helpers import (
    ask,
    cell,
    cell_outputs,
    collab_state,
    kernel_status,
    last_run,
    run_cell,
    stream_text,
    wait_ended,
)
from tests.peers import NotebookPeer
from tests.remote_host import KERNEL_NAME, RemoteSetup, remote_setup_fixture  # noqa: F401

pytestmark = pytest.mark.anyio

REMOTE_KERNELSPEC = {"name": KERNEL_NAME, "display_name": "Python 3 (collaborative, over SSH)"}
WAIT = 30.0
"""Seconds a peer waits for the remote kernel (a launch over SSH takes a few seconds)."""


# --- helpers ----------------------------------------------------------------------------------


def notebook(setup: RemoteSetup, name: str, sources: list[str]) -> Path:
    """A notebook (cells ``cell-0``...) on the remote kernelspec, in the server's root."""
    return write_notebook(setup.server.root / name, sources, kernelspec=REMOTE_KERNELSPEC)


async def open_remote(setup: RemoteSetup, nb: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Open the notebook's room (which starts its kernel on the remote host, and its sidecar);
    return the room and the sidecar's runtime record."""
    room = await setup.server.open_room(nb.name)
    return room, setup.server.sidecar(nb)


def attached(kernel_id: str) -> Callable[[NotebookPeer], bool]:
    """The document shows kernel ``kernel_id`` attached and idle."""
    return lambda p: kernel_status(p) == "idle" and collab_state(p).get("kernel_id") == kernel_id


async def settle(setup: RemoteSetup, peer: NotebookPeer, kernel_id: str,
                 predicate: Callable[[NotebookPeer], bool], what: str) -> None:
    """Wait for ``predicate``; fail saying ``what`` did not happen, with the document's state
    and the remote kernel's log."""
    try:
        await peer.wait_until(predicate)
    except TimeoutError:
        raise AssertionError(
            f"{what}: not within {peer.wait_timeout:g} s; kernel_collab state: "
            f"{collab_state(peer)}\n--- the remote kernel's log:\n"
            f"{setup.kernel_log(kernel_id)}\n--- the server's log (end):\n"
            f"{setup.server.log[-6000:]}"
        ) from None


def remote_pid(setup: RemoteSetup, peer: NotebookPeer, cell_id: str) -> int:
    """The pid a cell printed as ``pid N`` (the kernel's), checked to be on the remote host."""
    pid = int(stream_text(cell(peer, cell_id)["outputs"]).split("pid ")[1].split()[0])
    assert pid in setup.host.pids(), f"kernel pid {pid} is not on the remote host"
    return pid


def gate(setup: RemoteSetup, name: str) -> Path:
    """A FIFO on the disk both hosts share: a cell's ``open(gate).read()`` blocks until the
    test calls :func:`release` (an event, where a flag file would need polling)."""
    path = setup.folder / name
    os.mkfifo(path)
    return path


async def release(gate: Path) -> None:
    """Let the cell blocked on ``gate`` go on."""

    def write() -> None:
        with gate.open("w") as f:
            f.write("go")

    with anyio.fail_after(10):
        await anyio.to_thread.run_sync(write, abandon_on_cancel=True)


def stdout(peer: NotebookPeer, cell_id: str) -> str:
    return stream_text(cell(peer, cell_id)["outputs"])


def error_names(peer: NotebookPeer, cell_id: str) -> list[str]:
    return [o.get("ename", "") for o in cell(peer, cell_id)["outputs"]
            if o.get("output_type") == "error"]  # fmt: skip


# --- 0. the host is another host --------------------------------------------------------------


def test_the_remote_host_is_another_host_whose_loopback_is_its_own(
    remote_setup: RemoteSetup,
) -> None:
    host, server = remote_setup.host, remote_setup.server
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # the server listens on this machine's loopback...
    probe = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), 5)\n"
             "except OSError as e:\n    print(type(e).__name__)\nelse:\n    print('reached')")
    inside = host.run(sys.executable, "-c", probe)
    assert inside.stdout.strip() == "ConnectionRefusedError", inside  # ...not on the host's
    with socket.create_connection((host.address, 22), timeout=5) as ssh:
        assert ssh.recv(64).startswith(b"SSH-2.0-OpenSSH")  # its sshd, on its own address
    ours = os.readlink("/proc/self/ns/net")
    theirs = host.run("readlink", "/proc/self/ns/net").stdout.strip()
    assert theirs and theirs != ours


# --- 1. outputs and execution state, with no browser --------------------------------------------


async def test_outputs_and_execution_state_stream_into_the_document_with_no_browser(
    remote_setup: RemoteSetup,
) -> None:
    port = int(remote_setup.server.url.rsplit(":", 1)[1])
    flag = gate(remote_setup, "go-on")
    nb = notebook(remote_setup, "outputs.ipynb", [
        "import os, socket\n"
        "print('pid', os.getpid(), os.readlink('/proc/self/ns/net'))\n"
        "print('extension', 'kernel_collab.kernel' in get_ipython().extension_manager.loaded)\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {port}), 5)\n"
        "except OSError as e:\n    print('server loopback:', type(e).__name__)\n"
        "else:\n    print('server loopback: reached')\n",
        # Streams: prints, then waits for the test, then prints.
        f"print('started', flush=True)\nopen({str(flag)!r}).read()\nprint('finished')\n"
        "'the result'",
        "print('while nobody is connected')",
    ])  # fmt: skip
    room, record = await open_remote(remote_setup, nb)
    kernel_id, url, token = room["kernel_id"], record["url"], record["token"]
    async with NotebookPeer.connect(url, token) as peer:
        peer.wait_timeout = WAIT
        await settle(remote_setup, peer, kernel_id, attached(kernel_id), "the kernel shows idle")

        first = await run_cell(peer, url, token, "cell-0")
        pid_line, extension, loopback = stream_text(first["outputs"]).splitlines()
        assert pid_line.split()[2] != os.readlink("/proc/self/ns/net"), "not another host"
        remote_pid(remote_setup, peer, "cell-0")
        assert extension == "extension True", "kernel_collab.kernel not loaded by IPython config"
        assert loopback == "server loopback: ConnectionRefusedError"
        assert first["execution_count"] == 1

        assert (await ask(url, token, {"type": "execute", "cell_id": "cell-1"}))["ok"] is True
        await settle(remote_setup, peer, kernel_id, lambda p: stdout(p, "cell-1") == "started\n"
                     and cell(p, "cell-1")["execution_state"] == "running"
                     and kernel_status(p) == "busy"
                     and (collab_state(p).get("running") or {}).get("cell_id") == "cell-1",
                     "the first output of a running cell shows while it runs")  # fmt: skip
        assert (last_run(peer, "cell-1") or {}).get("status") == "running"
        await release(flag)
        run = await wait_ended(peer, "cell-1")
        done = cell(peer, "cell-1")
        assert run["status"] == "ok" and done["execution_state"] == "idle"
        assert stream_text(done["outputs"]) == "started\nfinished\n"
        assert done["outputs"][-1]["data"]["text/plain"] == "'the result'"
        assert done["execution_count"] == 2
        await settle(remote_setup, peer, kernel_id, attached(kernel_id), "idle after the run")
    # Nobody is connected now: a queued cell's output still goes into the file.
    assert (await ask(url, token, {"type": "execute", "cell_id": "cell-2"}))["ok"] is True
    await wait_for_file(nb, lambda: stream_text(cell_outputs(nb, 2))
                        == "while nobody is connected\n", timeout=WAIT)  # fmt: skip
    assert stream_text(cell_outputs(nb, 1)) == "started\nfinished\n"


# --- 2. one queue for everyone ------------------------------------------------------------------


async def test_two_peers_queue_cells_that_run_one_at_a_time_in_order(
    remote_setup: RemoteSetup,
) -> None:
    flag = gate(remote_setup, "queue-go-on")
    nb = notebook(remote_setup, "queue.ipynb", [
        f"ran = []\nprint('holding', flush=True)\nopen({str(flag)!r}).read()",
        "ran.append('a1'); print(ran)",
        "ran.append('b1'); print(ran)",
        "ran.append('a2'); print(ran)",
        "ran.append('b2'); print(ran)",
    ])  # fmt: skip
    room, _ = await open_remote(remote_setup, nb)
    kernel_id, url = room["kernel_id"], remote_setup.server.sync_url(room["document_id"])
    token = remote_setup.server.token
    async with (
        ws_connect(f"{url}?token={token}") as ws_alice,
        ws_connect(f"{url}?token={token}") as ws_bob,
        NotebookPeer.connect(url, token) as watcher,
        anyio.create_task_group() as tg,
    ):
        watcher.wait_timeout = WAIT
        alice, bob = Person(ws_alice), Person(ws_bob)
        for person in (alice, bob):
            tg.start_soon(person.collect)

        async def run(person: Person, cell_id: str) -> int:
            """Queue a cell as that person; return its place in the queue."""
            request_id = await person.send({"type": "execute", "cell_id": cell_id})
            await person.wait(lambda: person.reply(request_id) is not None, timeout=WAIT)
            reply = person.reply(request_id) or {}
            assert reply.get("ok") is True, reply
            return int(reply["position"])

        await settle(remote_setup, watcher, kernel_id, attached(kernel_id), "the kernel is idle")
        await run(alice, "cell-0")
        await settle(remote_setup, watcher, kernel_id,
                     lambda p: stdout(p, "cell-0") == "holding\n", "the first cell runs")
        positions = [await run(alice, "cell-1"), await run(bob, "cell-2"),
                     await run(alice, "cell-3"), await run(bob, "cell-4")]  # fmt: skip
        assert positions == [0, 1, 2, 3]
        await settle(remote_setup, watcher, kernel_id, lambda p: [
            q.get("cell_id") for q in collab_state(p).get("queue") or []
        ] == ["cell-1", "cell-2", "cell-3", "cell-4"], "the queue shows in the document")
        await release(flag)
        await settle(remote_setup, watcher, kernel_id, lambda p: all(
            (last_run(p, f"cell-{i}") or {}).get("status") == "ok" for i in range(5)
        ), "every queued cell ran")  # fmt: skip
        assert stdout(watcher, "cell-4") == "['a1', 'b1', 'a2', 'b2']\n"
        assert [cell(watcher, f"cell-{i}")["execution_count"] for i in range(5)] == [1, 2, 3, 4, 5]
        runs = [last_run(watcher, f"cell-{i}") or {} for i in range(5)]
        assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(runs))  # one at a time
        await settle(remote_setup, watcher, kernel_id, lambda p: not collab_state(p).get("queue"),
                     "the queue shows empty")  # published at most every publish_interval
        tg.cancel_scope.cancel()


# --- 3. interrupt -------------------------------------------------------------------------------


async def test_interrupt_reaches_the_remote_kernel_and_cancels_the_queue(
    remote_setup: RemoteSetup,
) -> None:
    server = remote_setup.server
    nb = notebook(remote_setup, "interrupt.ipynb", [
        "kept = 'still here'\nimport time\nprint('sleeping', flush=True)\ntime.sleep(120)",
        "print('never')",
        "print(kept)",
    ])  # fmt: skip
    room, record = await open_remote(remote_setup, nb)
    kernel_id, url, token = room["kernel_id"], record["url"], record["token"]
    async with NotebookPeer.connect(url, token) as peer, server.client() as http:
        peer.wait_timeout = WAIT
        await settle(remote_setup, peer, kernel_id, attached(kernel_id), "the kernel shows idle")
        for cell_id in ("cell-0", "cell-1"):
            assert (await ask(url, token, {"type": "execute", "cell_id": cell_id}))["ok"] is True
        await settle(remote_setup, peer, kernel_id, lambda p: stdout(p, "cell-0") == "sleeping\n",
                     "the long cell runs")  # fmt: skip
        response = await http.post(f"/api/kernel-collab/rooms/{nb.name}/interrupt")
        assert response.status_code == 200, response.text
        await settle(remote_setup, peer, kernel_id,
                     lambda p: (last_run(p, "cell-0") or {}).get("status") == "error",
                     "the interrupted cell ends in error")  # fmt: skip
        assert error_names(peer, "cell-0") == ["KeyboardInterrupt"]
        state = collab_state(peer)
        assert state["last_kernel_event"]["event"] == "interrupt"
        assert [c["cell_id"] for c in state.get("cancelled") or []] == ["cell-1"]
        assert not cell(peer, "cell-1")["outputs"]
        # The same kernel goes on: its variables are there.
        ran = await run_cell(peer, url, token, "cell-2")
        assert stream_text(ran["outputs"]) == "still here\n"


# --- 4. restart ---------------------------------------------------------------------------------


async def test_restart_launches_a_new_kernel_on_the_host_and_keeps_the_document(
    remote_setup: RemoteSetup,
) -> None:
    server = remote_setup.server
    nb = notebook(remote_setup, "restart.ipynb", [
        "import os\nprint('pid', os.getpid())",
        "import time\nprint('sleeping', flush=True)\ntime.sleep(120)",
    ])  # fmt: skip
    room, record = await open_remote(remote_setup, nb)
    kernel_id, url, token = room["kernel_id"], record["url"], record["token"]
    async with NotebookPeer.connect(url, token) as peer, server.client() as http:
        peer.wait_timeout = WAIT
        document_id = peer.notebook.ystate["document_id"]
        await settle(remote_setup, peer, kernel_id, attached(kernel_id), "the kernel shows idle")
        await run_cell(peer, url, token, "cell-0")
        old_pid = remote_pid(remote_setup, peer, "cell-0")
        old = process(old_pid)
        assert (await ask(url, token, {"type": "execute", "cell_id": "cell-1"}))["ok"] is True
        await settle(remote_setup, peer, kernel_id, lambda p: stdout(p, "cell-1") == "sleeping\n",
                     "the long cell runs")  # fmt: skip

        response = await http.post(f"/api/kernels/{kernel_id}/restart")
        assert response.status_code == 200, response.text
        await settle(remote_setup, peer, kernel_id, lambda p: attached(kernel_id)(p) and (
            collab_state(p).get("last_kernel_event") or {}).get("event") == "restart",
            "the restarted kernel shows idle")  # fmt: skip
        long = cell(peer, "cell-1")
        assert long["execution_state"] == "idle"
        assert long["metadata"]["kernel_collab"]["last_run"]["status"] != "running"
        assert peer.notebook.ystate["document_id"] == document_id
        await peer.flush()  # still connected: the same sidecar and room

        ran = await run_cell(peer, url, token, "cell-0")
        assert ran["execution_count"] == 1  # a new kernel
        new_pid = remote_pid(remote_setup, peer, "cell-0")
        assert new_pid != old_pid
        assert not await wait_exited([old], 10), "the old kernel outlived its restart"
    assert server.sidecar(nb)["pid"] == record["pid"]


# --- 5. input() ---------------------------------------------------------------------------------


async def test_input_in_the_remote_kernel_prompts_whoever_ran_the_cell(
    remote_setup: RemoteSetup,
) -> None:
    server = remote_setup.server
    nb = notebook(remote_setup, "input.ipynb", ["name = input('name? ')\nprint('hello', name)"])
    room, _ = await open_remote(remote_setup, nb)
    kernel_id, url = room["kernel_id"], server.sync_url(room["document_id"])
    async with (
        ws_connect(f"{url}?token={server.token}") as ws,
        NotebookPeer.connect(url, server.token) as watcher,
        anyio.create_task_group() as tg,
    ):
        watcher.wait_timeout = WAIT
        runner = Person(ws)
        tg.start_soon(runner.collect)
        await settle(remote_setup, watcher, kernel_id, attached(kernel_id), "the kernel is idle")
        await runner.send({"type": "execute", "cell_id": "cell-0"})
        await runner.wait(lambda: runner.prompts(), timeout=WAIT)
        prompt = runner.prompts()[0]
        assert prompt["prompt"] == "name? " and prompt["password"] is False
        await settle(remote_setup, watcher, kernel_id,
                     lambda p: bool(collab_state(p).get("waiting_for_input")),
                     "the document says whom the kernel waits for")  # fmt: skip
        answered = await runner.send({"type": "input_reply", "request_id": prompt["request_id"],
                                      "value": "Ada"})  # fmt: skip
        await runner.wait(lambda: (runner.reply(answered) or {}).get("ok") is True)
        await settle(remote_setup, watcher, kernel_id,
                     lambda p: stdout(p, "cell-0") == "hello Ada\n"
                     and (last_run(p, "cell-0") or {}).get("status") == "ok",
                     "the answer reached the remote kernel")  # fmt: skip
        assert not collab_state(watcher).get("waiting_for_input")
        tg.cancel_scope.cancel()


# --- 6. kernel_collab.notebook() inside the remote kernel --------------------------------------


async def test_code_in_the_remote_kernel_reads_and_edits_its_notebook(
    remote_setup: RemoteSetup,
) -> None:
    """As ``test_kernel_api``'s first test, for a kernel on another host."""
    server = remote_setup.server
    nb = notebook(remote_setup, "api.ipynb", [
        "import kernel_collab\n"
        "nb = kernel_collab.notebook()\n"
        "print(nb.current_cell.id)\n"
        "print(len(nb.cells), nb.cells[1].source)\n"
        "nb.cells[1].source = 'x = 42'\n"
        "c = nb.insert_cell(2, 'print(x)')\n"
        "with nb.transaction():\n"
        "    nb.cells[1].metadata['tags'] = ['written-by-the-kernel']\n"
        "h = nb.run(nb.cells[1]); h2 = nb.run(c)\n",
        "x = 0",
    ])  # fmt: skip
    room = await server.open_room(nb.name)
    kernel_id = room["kernel_id"]
    url = server.sync_url(room["document_id"])
    async with NotebookPeer.connect(url, server.token) as peer, server.client() as http:
        peer.wait_timeout = WAIT
        await settle(remote_setup, peer, kernel_id, attached(kernel_id), "the kernel is idle")
        response = await http.post(f"/api/kernels/{kernel_id}/execute",
                                   json={"cell_id": "cell-0", "document_id": room["document_id"]})
        assert response.status_code == 202

        def all_ran_or_failed(p: NotebookPeer) -> bool:
            cells = p.notebook.get()["cells"]
            failed = (last_run(p, "cell-0") or {}).get("status") == "error"
            return failed or (len(cells) == 3 and stream_text(cells[2]["outputs"]) == "42\n")

        await settle(remote_setup, peer, kernel_id, all_ran_or_failed,
                     "the kernel's edits and runs show")  # fmt: skip
        first = cell(peer, "cell-0")
        errors = [o for o in first["outputs"] if o.get("output_type") == "error"]
        assert not errors, "kernel_collab.notebook() failed in the remote kernel: " + "".join(
            f"{e['ename']}: {e['evalue']}" for e in errors)
        cells = peer.notebook.get()["cells"]
        assert stream_text(first["outputs"]) == "cell-0\n2 x = 0\n"
        assert cells[1]["source"] == "x = 42"
        assert cells[1]["metadata"]["tags"] == ["written-by-the-kernel"]
        runner = first["metadata"]["kernel_collab"]["last_run"]["by"]
        assert cells[2]["metadata"]["kernel_collab"]["last_run"]["by"] == runner
