"""What users see in cells, end to end: a real Jupyter server, ipykernel and ZMQ.

One server and one collaborative session (one notebook holding every test's cells, each test
using its own) are shared by the module; a second session, with a kernelspec that raises the
sidecar's output cap, is started only for the uncapped-output test. Cells that must be seen
running wait for a gate file that the test creates, so nothing here sleeps on a guess.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from pycrdt import MapEvent

from tests.files import wait_for_file
from tests.jupyter_server_process import JupyterServer, running_server
from tests.kernel_helpers import (
    ask,
    cell,
    collab_state,
    iopub_until_idle,
    kernel_status,
    last_run,
    plain_client,
    reply_to,
    run_cell,
    saved_cell,
    state_map,
    stream_text,
    wait_ended,
    write_cells,
)
from tests.peers import NotebookPeer

pytestmark = pytest.mark.anyio

BIGCAP_KERNEL = "python3-collab-bigcap"
BIG_DISPLAY = (
    "from IPython.display import display\n"
    "display({'text/plain': 'x' * 6_000_000}, raw=True)\n"
)
DEFAULT_CAP = 5 * 1024 * 1024
ANSI = re.compile(r"\x1b\[[0-9;]*m")
DRAIN = 20
"""Cells of the queue-draining test."""
AHEAD = 30
"""Cells of the sent-ahead test."""


def gate(name: str) -> str:
    """Kernel code that waits until the test opens gate ``name`` (see :meth:`Session.open`).

    The gates folder comes from the kernel's environment (set on the server).
    """
    return (
        "import os as _os, time as _time\n"
        f"_gate = _os.path.join(_os.environ['KERNEL_OUTPUTS_GATES'], {name!r})\n"
        "while not _os.path.exists(_gate):\n"
        "    _time.sleep(0.01)\n"
    )


CELLS: dict[str, str] = {
    "print-100k": "for i in range(100000):\n    print(i)\n",
    "progress": (
        "import sys\n"
        "for i in range(1, 201):\n"
        "    sys.stdout.write(f'\\r{i}%')\n"
        "    sys.stdout.flush()\n"
        "print()\n"
    ),
    "animation": (
        "from IPython.display import clear_output\n"
        "for i in range(50):\n"
        "    print(f'frame {i}', flush=True)\n"
        "    clear_output(wait=True)\n"
    ),
    "error": "x = 1\n1 / 0\n",
    "soe-first": gate("soe") + "print('first')\n",
    "soe-raise": "raise ValueError('stop here')\n",
    "soe-third": "print('third ran')\n",
    "rx-first": gate("rx") + "print('first')\n",
    "rx-raise": "raise ValueError('expected')\n",
    "rx-third": "print('third ran')\n",
    "count-a": "21 * 2\n",
    "count-b": gate("count") + "print('b done')\n",
    "status-gate": gate("status") + "print('released')\n",
    "status-fence": "print('fence')\n",
    "drain-0": gate("drain"),
    **{f"drain-{i}": "x = 1\n" for i in range(1, DRAIN)},
    "ahead-0": (gate("ahead") + "_os.remove(_gate)\n"
                "_ahead_pass = globals().get('_ahead_pass', 0) + 1\n"),
    **{f"ahead-{i}": f"print('ahead-{i} pass', _ahead_pass)\n" for i in range(1, AHEAD)},
    "console-gate": gate("console") + "print('cell output')\n",
    "console-fence": "print('after console')\n",
    "big-display": BIG_DISPLAY,
    "malformed": (
        "from IPython.display import publish_display_data\n"
        "publish_display_data({'text/plain': 5})\n"
        "publish_display_data({'image/png': {'not': 'base64'}})\n"
        "print('after malformed')\n"
    ),
}
TAGS = {"rx-raise": ["raises-exception"]}


@dataclass
class Session:
    """A collaborative notebook session: its file, sidecar and kernel."""

    server: JupyterServer
    notebook: Path
    url: str
    token: str
    kernel_id: str
    gates: Path

    @contextlib.asynccontextmanager
    async def peer(
        self, *, releasing: str | None = None, wait_timeout: float = 60
    ) -> AsyncIterator[NotebookPeer]:
        """A synced peer of the sidecar; gate ``releasing`` is opened on the way out, so a
        failing test never leaves the kernel blocked for the next ones."""
        try:
            async with NotebookPeer.connect(self.url, self.token) as peer:
                peer.wait_timeout = wait_timeout
                yield peer
        finally:
            if releasing is not None:
                self.open(releasing)

    async def run(self, peer: NotebookPeer, cell_id: str) -> dict[str, Any]:
        """Queue a cell, wait until its run ends; the cell as ``peer`` sees it (a connection
        that ends meanwhile raises with the end of the server's log: the sidecar's is in it)."""
        try:
            return await run_cell(peer, self.url, self.token, cell_id)
        except ConnectionError as exc:
            raise ConnectionError(f"{exc} (close code {peer.close_code}); the server's log "
                                  f"ends with:\n{self.server.log[-6000:]}") from exc

    async def queue(self, cell_id: str) -> None:
        """Ask the sidecar to run a cell (returns once it is queued)."""
        reply = await ask(self.url, self.token, {"type": "execute", "cell_id": cell_id})
        assert reply.get("ok") is True, reply

    def open(self, name: str) -> None:
        """Let a cell waiting on gate ``name`` go on."""
        (self.gates / name).touch()

    @property
    def connection_file(self) -> Path:
        """The kernel's connection file (in the server's runtime directory)."""
        return self.server.runtime / f"kernel-{self.kernel_id}.json"


def _bigcap_kernelspec(folder: Path) -> None:
    """``python3-collab`` with the sidecar's rich-output cap raised to 20 MB."""
    spec = KernelSpecManager().get_kernel_spec("python3-collab")
    with open(Path(spec.resource_dir) / "kernel.json") as f:
        kernel_json: dict[str, Any] = json.load(f)
    kernel_json["display_name"] = "Python 3 (collaborative, 20 MB outputs)"
    kernel_json["metadata"]["kernel_provisioner"] = {
        "provisioner_name": "kernel-collab",
        "config": {"sidecar_args": ["--max-output-bytes", "20000000"]},
    }
    target = folder / "kernels" / BIGCAP_KERNEL
    target.mkdir(parents=True)
    (target / "kernel.json").write_text(json.dumps(kernel_json, indent=1))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """One server for the module, with the big-cap kernelspec on its JUPYTER_PATH."""
    base = tmp_path_factory.mktemp("kernel_outputs")
    root, runtime, jupyter_path, gates = (base / n for n in ("root", "runtime", "jp", "gates"))
    for folder in (root, runtime, jupyter_path, gates):
        folder.mkdir()
    _bigcap_kernelspec(jupyter_path)
    extra = [str(jupyter_path), *filter(None, os.environ.get("JUPYTER_PATH", "").split(os.pathsep))]
    env = {"JUPYTER_PATH": os.pathsep.join(extra), "KERNEL_OUTPUTS_GATES": str(gates)}
    with running_server(root, runtime, env=env) as srv:
        yield srv


def _start(server: JupyterServer, name: str, kernel: str) -> Session:
    """Start a session on ``root/name`` (already written) and describe it."""
    session = anyio.run(lambda: server.start_session(name, kernel=kernel))
    assert session["kernel"]["name"] == kernel
    notebook = server.root / name
    record = server.sidecar(notebook)
    gates = server.root.parent / "gates"
    return Session(server, notebook, record["url"], record["token"], session["kernel"]["id"],
                   gates)  # fmt: skip


@pytest.fixture(scope="module")
def main(server: JupyterServer) -> Session:
    """The shared session: every cell of :data:`CELLS`, default sidecar settings."""
    write_cells(server.root / "outputs.ipynb", CELLS, tags=TAGS)
    return _start(server, "outputs.ipynb", "python3-collab")


@pytest.fixture(scope="module")
def bigcap(server: JupyterServer) -> Session:
    """A session whose sidecar keeps rich outputs up to 20 MB."""
    write_cells(server.root / "bigcap.ipynb", {"big-display": BIG_DISPLAY})
    return _start(server, "bigcap.ipynb", BIGCAP_KERNEL)


def outputs_of(peer: NotebookPeer, cell_id: str) -> list[dict[str, Any]]:
    """A cell's outputs as the peer sees them."""
    outputs: list[dict[str, Any]] = cell(peer, cell_id)["outputs"]
    return outputs


# --- streams ------------------------------------------------------------------------------


async def test_100k_printed_lines_are_one_stream_output_in_order(main: Session) -> None:
    expected = "".join(f"{i}\n" for i in range(100000))
    async with main.peer() as peer:
        result = await main.run(peer, "print-100k")
    assert [o["output_type"] for o in result["outputs"]] == ["stream"]
    assert result["outputs"][0]["name"] == "stdout"
    text = result["outputs"][0]["text"]
    assert text.count("\n") == 100000
    assert text == expected
    await wait_for_file(
        main.notebook,
        lambda: stream_text(saved_cell(main.notebook, "print-100k")["outputs"]) == expected,
    )
    assert len(saved_cell(main.notebook, "print-100k")["outputs"]) == 1


async def test_carriage_return_progress_bar_stays_one_line(main: Session) -> None:
    async with main.peer() as peer:
        result = await main.run(peer, "progress")
    assert result["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "200%\n"}]
    await wait_for_file(
        main.notebook,
        lambda: stream_text(saved_cell(main.notebook, "progress")["outputs"]) == "200%\n",
    )


async def test_clear_output_wait_animation_leaves_only_the_last_frame(main: Session) -> None:
    async with main.peer() as peer:
        result = await main.run(peer, "animation")
        assert (last_run(peer, "animation") or {}).get("status") == "ok"
    assert result["outputs"] == [
        {"output_type": "stream", "name": "stdout", "text": "frame 49\n"}
    ]


# --- errors and the queue -----------------------------------------------------------------


async def test_exception_gives_an_error_output_and_an_error_run(main: Session) -> None:
    async with main.peer() as peer:
        result = await main.run(peer, "error")
        run = last_run(peer, "error")
    errors = [o for o in result["outputs"] if o["output_type"] == "error"]
    assert len(errors) == 1, result["outputs"]
    assert errors[0]["ename"] == "ZeroDivisionError"
    assert errors[0]["evalue"] == "division by zero"
    assert isinstance(errors[0]["traceback"], list) and errors[0]["traceback"]
    plain = ANSI.sub("", "\n".join(errors[0]["traceback"]))
    assert "1 / 0" in plain and "ZeroDivisionError" in plain
    assert run is not None and run["status"] == "error"
    assert run["source"] == CELLS["error"]
    assert result["execution_state"] == "idle"

    def saved_error() -> bool:
        saved = saved_cell(main.notebook, "error")
        return [o.get("ename") for o in saved["outputs"]] == ["ZeroDivisionError"] and (
            saved["metadata"]["kernel_collab"]["last_run"]["status"] == "error"
        )

    await wait_for_file(main.notebook, saved_error)


async def _queue_three(main: Session, peer: NotebookPeer, prefix: str) -> None:
    """Queue ``{prefix}-first`` (held at its gate), ``-raise`` and ``-third``; release."""
    await main.queue(f"{prefix}-first")
    await peer.wait_until(lambda p: cell(p, f"{prefix}-first").get("execution_state") == "running")
    await main.queue(f"{prefix}-raise")
    await main.queue(f"{prefix}-third")
    expected = [f"{prefix}-raise", f"{prefix}-third"]
    await peer.wait_until(
        lambda p: [e["cell_id"] for e in collab_state(p).get("queue") or []] == expected
    )
    main.open(prefix)
    await wait_ended(peer, f"{prefix}-raise")


async def test_an_error_stops_the_rest_of_the_queue(main: Session) -> None:
    async with main.peer(releasing="soe") as peer:
        await _queue_three(main, peer, "soe")

        def cancelled(p: NotebookPeer) -> list[dict[str, Any]]:
            entries = collab_state(p).get("cancelled") or []
            return [e for e in entries if e.get("cell_id") == "soe-third"]

        await peer.wait_until(lambda p: bool(cancelled(p)))
        (entry,) = cancelled(peer)
        assert isinstance(entry.get("reason"), str) and "soe-raise" in entry["reason"]
        # The queue is empty and stays so: nothing is left to run the third cell later.
        assert collab_state(peer).get("queue") == []
        first, third = cell(peer, "soe-first"), cell(peer, "soe-third")
        assert stream_text(first["outputs"]) == "first\n"
        assert (last_run(peer, "soe-first") or {}).get("status") == "ok"
        assert (last_run(peer, "soe-raise") or {}).get("status") == "error"
        assert last_run(peer, "soe-third") is None
        assert third["outputs"] == []
        assert third.get("execution_count") is None


async def test_a_raises_exception_cell_does_not_stop_the_queue(main: Session) -> None:
    async with main.peer(releasing="rx") as peer:
        await _queue_three(main, peer, "rx")
        await wait_ended(peer, "rx-third")
        assert (last_run(peer, "rx-raise") or {}).get("status") == "error"
        assert (last_run(peer, "rx-third") or {}).get("status") == "ok"
        assert stream_text(outputs_of(peer, "rx-third")) == "third ran\n"
        cancelled = collab_state(peer).get("cancelled") or []
        assert "rx-third" not in [e.get("cell_id") for e in cancelled]


# --- execution state, counts and kernel status --------------------------------------------


async def test_execution_counts_increase_and_execution_state_follows_the_run(
    main: Session,
) -> None:
    async with main.peer(releasing="count") as peer:
        a = await main.run(peer, "count-a")
        assert isinstance(a["execution_count"], int) and a["execution_count"] > 0
        assert a["outputs"] == [{
            "output_type": "execute_result", "data": {"text/plain": "42"}, "metadata": {},
            "execution_count": a["execution_count"],
        }]  # fmt: skip
        assert a["execution_state"] == "idle"

        before = last_run(peer, "count-b")
        await main.queue("count-b")
        await peer.wait_until(lambda p: cell(p, "count-b").get("execution_state") == "running")
        running = last_run(peer, "count-b")
        assert running is not None and running["status"] == "running" and running["end"] is None
        main.open("count")
        await wait_ended(peer, "count-b", before)
        b = cell(peer, "count-b")
        assert b["execution_state"] == "idle"
        assert b["execution_count"] > a["execution_count"]
        assert stream_text(b["outputs"]) == "b done\n"
    counts = {"count-a": a["execution_count"], "count-b": b["execution_count"]}
    await wait_for_file(
        main.notebook,
        lambda: all(saved_cell(main.notebook, c)["execution_count"] == n
                    for c, n in counts.items()),
    )  # fmt: skip


@contextlib.contextmanager
def recording_status(peer: NotebookPeer) -> Iterator[list[str]]:
    """Every value of ``kernel_status`` the peer receives while the block runs."""
    seen: list[str] = []

    def record(event: MapEvent) -> None:
        change = event.keys.get("kernel_status")  # type: ignore[attr-defined]
        if change is not None:
            seen.append(str(change.get("newValue")))

    status = state_map(peer)
    subscription = status.observe(record)
    try:
        yield seen
    finally:
        status.unobserve(subscription)


async def _burst_on_shell(client: AsyncKernelClient, n: int) -> None:
    """``n`` each of kernel_info, comm_info and comm_msg requests; wait until all are done."""
    ids = []
    for i in range(n):
        ids.append(client.kernel_info())
        ids.append(client.comm_info())
        msg = client.session.msg("comm_msg", {"comm_id": f"no-such-comm-{i}", "data": {}})
        client.shell_channel.send(msg)
        ids.append(msg["header"]["msg_id"])
    await iopub_until_idle(client, ids)


async def test_kernel_status_follows_cells_not_other_clients(main: Session) -> None:
    async with main.peer(releasing="status") as peer, plain_client(main.connection_file) as client:
        await peer.wait_until(lambda p: kernel_status(p) == "idle")

        # A burst of shell traffic while the kernel is idle: the document says idle.
        with recording_status(peer) as during_burst:
            await _burst_on_shell(client, 60)
            # The fence: a cell whose output comes after everything the burst caused.
            with recording_status(peer) as during_fence:
                await main.run(peer, "status-fence")
        burst_only = during_burst[: len(during_burst) - len(during_fence)]
        assert burst_only == [], f"kernel_status changed during the burst: {burst_only}"
        assert during_fence in ([], ["idle"], ["busy", "idle"]), during_fence
        assert kernel_status(peer) == "idle"

        # A cell runs: busy until it ends, whatever other clients ask on the control channel.
        before = last_run(peer, "status-gate")
        await main.queue("status-gate")
        await peer.wait_until(lambda p: cell(p, "status-gate").get("execution_state") == "running")
        await peer.wait_until(lambda p: kernel_status(p) == "busy")
        with recording_status(peer) as while_busy:
            ids = []
            for _ in range(60):
                msg = client.session.msg("kernel_info_request")
                client.control_channel.send(msg)
                ids.append(msg["header"]["msg_id"])
            await reply_to(client, ids[-1], "control")
            await iopub_until_idle(client, ids)
            main.open("status")
            # The cell's output comes after all the burst's status messages on iopub.
            await peer.wait_until(
                lambda p: stream_text(outputs_of(p, "status-gate")) == "released\n"
            )
        assert kernel_status(peer) in ("busy", "idle")
        cell_end = while_busy[-1:] if while_busy[-1:] == ["idle"] else []
        changes = while_busy[: len(while_busy) - len(cell_end)]
        assert changes == [], f"kernel_status changed while the cell ran: {while_busy}"
        await wait_ended(peer, "status-gate", before)
        await peer.wait_until(lambda p: kernel_status(p) == "idle")


async def _queue_behind_gate(main: Session, peer: NotebookPeer,
                             cells: list[str]) -> dict[str, dict[str, Any] | None]:
    """Queue ``cells``, the first holding the rest behind its gate; their runs before."""
    before = {c: last_run(peer, c) for c in cells}
    await main.queue(cells[0])
    await peer.wait_until(lambda p: cell(p, cells[0]).get("execution_state") == "running")
    for c in cells[1:]:
        await main.queue(c)
    await peer.wait_until(lambda p: len(collab_state(p).get("queue") or []) == len(cells) - 1)
    return before


async def test_a_queue_drains_busy_throughout_with_about_one_update_per_cell(
    main: Session,
) -> None:
    """Each queued cell ends and the next starts in one update; the kernel stays busy in the
    document from the first cell to the last (no idle between queued cells)."""
    cells = [f"drain-{i}" for i in range(DRAIN)]
    async with main.peer(releasing="drain") as peer:
        await peer.wait_until(lambda p: kernel_status(p) == "idle")
        before = await _queue_behind_gate(main, peer, cells)
        await peer.wait_until(lambda p: kernel_status(p) == "busy")
        updates = 0

        def count(_event: Any) -> None:
            nonlocal updates
            updates += 1

        subscription = peer.doc.observe(count)
        with recording_status(peer) as seen:
            main.open("drain")
            for c in cells:
                await wait_ended(peer, c, before[c])
            await peer.wait_until(lambda p: kernel_status(p) == "idle")
        peer.doc.unobserve(subscription)
        assert seen == ["idle"], seen
        runs = [last_run(peer, c) or {} for c in cells]
        assert [r.get("status") for r in runs] == ["ok"] * DRAIN
        starts = [r["start"] for r in runs]
        assert starts == sorted(starts) and all(  # one at a time, in queue order
            runs[i]["end"] <= runs[i + 1]["start"] for i in range(DRAIN - 1))
        counts = [cell(peer, c)["execution_count"] for c in cells]
        assert counts == list(range(counts[0], counts[0] + DRAIN)), counts
        assert all(cell(peer, c)["execution_state"] == "idle" for c in cells)
        assert collab_state(peer).get("running") is None
        # About one per cell (its end and the next start), plus the queue's own updates
        # (at most every 50 ms); it was four or five per cell.
        assert updates <= 2 * DRAIN, updates


async def test_cells_sent_ahead_show_only_their_own_new_output(main: Session) -> None:
    """The queue sends the next cell when the running one replies, before its end is in:
    a cell's output can come in the same batch as the end of the cell before it. Each cell
    still ends with exactly its output of this pass (cleared once, before it), in order."""
    cells = [f"ahead-{i}" for i in range(AHEAD)]
    async with main.peer(releasing="ahead") as peer:
        for n in (1, 2):  # the second pass replaces the first's outputs
            before = await _queue_behind_gate(main, peer, cells)
            main.open("ahead")
            for c in cells:
                await wait_ended(peer, c, before[c])
            for i, c in enumerate(cells[1:], start=1):
                assert stream_text(outputs_of(peer, c)) == f"ahead-{i} pass {n}\n", (c, n)
                assert [o["output_type"] for o in outputs_of(peer, c)] == ["stream"]
            runs = [last_run(peer, c) or {} for c in cells]
            assert all(runs[i]["end"] <= runs[i + 1]["start"] for i in range(AHEAD - 1))
            counts = [cell(peer, c)["execution_count"] for c in cells]
            assert counts == list(range(counts[0], counts[0] + AHEAD)), counts


async def test_console_executions_never_write_into_cells(main: Session) -> None:
    markers = ("console-print-marker", "console-display-marker", "ConsoleOnlyError")
    code = [
        f"print({markers[0]!r})",
        f"display({markers[1]!r})",
        f"class {markers[2]}(Exception): pass\nraise {markers[2]}('x')",
    ]
    async with main.peer(releasing="console") as peer, plain_client(main.connection_file) as client:
        # One console run right after a cell (queued in the kernel behind it), then more.
        before = last_run(peer, "console-gate")
        await main.queue("console-gate")
        await peer.wait_until(
            lambda p: cell(p, "console-gate").get("execution_state") == "running"
        )
        ids = [client.execute(code[0], stop_on_error=False)]
        main.open("console")
        await wait_ended(peer, "console-gate", before)
        ids += [client.execute(c, stop_on_error=False) for c in code[1:]]
        console = await iopub_until_idle(client, ids)
        # The console did get its outputs...
        types = [m["msg_type"] for m in console]
        assert "stream" in types and "display_data" in types and "error" in types
        # ...and, once a later cell's output is in (iopub is ordered), no cell has them.
        fence = await main.run(peer, "console-fence")
        assert stream_text(fence["outputs"]) == "after console\n"
        assert stream_text(outputs_of(peer, "console-gate")) == "cell output\n"
        assert len(outputs_of(peer, "console-gate")) == 1
        everything = json.dumps(peer.notebook.get())
    for marker in markers:
        assert marker not in everything
    await wait_for_file(
        main.notebook,
        lambda: stream_text(saved_cell(main.notebook, "console-fence")["outputs"])
        == "after console\n",
    )
    saved = main.notebook.read_text()
    for marker in markers:
        assert marker not in saved


# --- rich outputs -------------------------------------------------------------------------


async def test_an_output_over_the_cap_is_replaced_by_a_visible_note(main: Session) -> None:
    async with main.peer() as peer:
        result = await main.run(peer, "big-display")
    (output,) = result["outputs"]
    assert output["output_type"] == "display_data"
    note = output["data"]["text/plain"]
    assert list(output["data"]) == ["text/plain"]
    assert note.startswith("[output too large:"), note[:200]
    assert f"limit {DEFAULT_CAP} bytes" in note
    assert "text/plain" in note
    assert len(note) < 1000
    await wait_for_file(
        main.notebook,
        lambda: saved_cell(main.notebook, "big-display")["outputs"][0]["data"]["text/plain"]
        == note,
    )


async def test_a_larger_configured_cap_stores_the_output_whole(bigcap: Session) -> None:
    expected = "x" * 6_000_000
    async with bigcap.peer() as peer:
        result = await bigcap.run(peer, "big-display")
    (output,) = result["outputs"]
    assert output["output_type"] == "display_data"
    assert len(output["data"]["text/plain"]) == len(expected)
    assert output["data"]["text/plain"] == expected
    await wait_for_file(
        bigcap.notebook,
        lambda: saved_cell(bigcap.notebook, "big-display")["outputs"][0]["data"]["text/plain"]
        == expected,
        timeout=30,
    )


async def test_a_malformed_output_shows_an_error_and_the_run_goes_on(main: Session) -> None:
    async with main.peer() as peer:
        result = await main.run(peer, "malformed")
        run = last_run(peer, "malformed")
    outputs = result["outputs"]
    assert [o["output_type"] for o in outputs] == ["error", "error", "stream"], outputs
    for error, mime in zip(outputs[:2], ("text/plain", "image/png"), strict=True):
        assert error["ename"] == "kernel_collab"
        assert "malformed" in error["evalue"] and mime in error["evalue"]
        assert error["traceback"] and all(isinstance(t, str) for t in error["traceback"])
    assert outputs[2]["text"] == "after malformed\n"
    assert run is not None and run["status"] == "ok"
