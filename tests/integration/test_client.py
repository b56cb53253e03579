"""Scripts and agents as collaborators: ``kernel_collab.client`` through a real server."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from kernel_collab.client import NotebookError, connect, connect_blocking
from tests.files import wait_for_file, write_notebook
from tests.jupyter_server_process import JupyterServer
from tests.peers import NotebookPeer

pytestmark = pytest.mark.anyio


async def test_a_script_writes_and_runs_cells_while_a_person_watches(
    server: JupyterServer,
) -> None:
    nb_path = write_notebook(server.root / "nb.ipynb", ["x = 41"])
    async with connect(server.url, "nb.ipynb", token=server.token, name="my-agent") as nb:
        document_id = nb._ynb.ystate.get("document_id")
        async with NotebookPeer.connect(server.sync_url(str(document_id)),
                                        server.token) as person:  # fmt: skip
            first = nb.cells[0]
            assert first.source == "x = 41"
            first.source = "x = 42"
            c = nb.insert_cell(1, "print(x)")
            md = nb.append_cell("# Results", cell_type="markdown")
            c.metadata["tags"] = ["from-agent"]
            await person.wait_until(lambda p: p.notebook.cell_number == 3
                                    and str(p.notebook.ycells[0]["source"]) == "x = 42")
            assert [cell.cell_type for cell in nb.cells] == ["code", "code", "markdown"]
            await (await nb.run(first)).wait()
            outputs = await (await nb.run(c)).wait()
            assert outputs == [{"output_type": "stream", "name": "stdout", "text": "42\n"}]
            assert c.execution_count == 2
            assert c.last_run is not None and c.last_run["status"] == "ok"
            # The person sees the agent as a collaborator, on the cell it touched last.
            await person.wait_until(lambda p: any(
                s.get("kernel_collab", {}).get("client_name") == "my-agent"
                for s in p.peers.values()))  # fmt: skip
            nb.move_cell(md, 0)
            nb.delete_cell(c)
            await nb.sync()
            assert [cell.cell_type for cell in nb.cells] == ["markdown", "code"]
    await wait_for_file(nb_path, lambda: "# Results" in nb_path.read_text()
                        and "print(x)" not in nb_path.read_text())


async def test_leaving_the_block_stores_the_edits_made_in_it(server: JupyterServer) -> None:
    write_notebook(server.root / "nb.ipynb", ["x = 1", "y = 2"])
    async with connect(server.url, "nb.ipynb", token=server.token, name="agent") as nb:
        nb.cells[0].source = "x = 'the last edit'"  # no sync(): leaving stores it
    with connect_blocking(server.url, "nb.ipynb", token=server.token) as blocking:
        blocking.cells[1].source = "y = 'blocking'"
    room = await server.open_room("nb.ipynb")
    async with NotebookPeer.connect(server.sync_url(room["document_id"]), server.token) as peer:
        assert [str(c["source"]) for c in peer.notebook.ycells] == [
            "x = 'the last edit'", "y = 'blocking'"]


async def test_a_script_editing_in_a_tight_loop_loses_nothing(server: JupyterServer) -> None:
    # 60,000 edits without an await in between: each edit and its presence used to be queued
    # as a message of its own, and past 100,000 queued messages the edit raised
    # anyio.WouldBlock (that edit never sent). The edits queued in a row now go as one.
    write_notebook(server.root / "loop.ipynb", ["# step 0"])
    edits = 60_000
    async with connect(server.url, "loop.ipynb", token=server.token, name="agent") as nb:
        room = await server.open_room("loop.ipynb")
        async with NotebookPeer.connect(server.sync_url(room["document_id"]),
                                        server.token) as person:  # fmt: skip
            cell = nb.cells[0]
            for step in range(1, edits + 1):
                cell.source = f"# step {step}"
            assert nb.transport.local_changes >= edits
            await nb.sync()
            await person.wait_until(
                lambda p: str(p.notebook.ycells[0]["source"]) == f"# step {edits}")
            last = nb.append_cell("print('after the loop')")  # the connection still carries
            await nb.sync()
            await person.wait_until(lambda p: p.notebook.cell_number == 2)
            assert last.source == "print('after the loop')"


async def test_each_run_waits_for_its_own_outputs(server: JupyterServer) -> None:
    """An agent runs a cell, edits it and runs it again at once: each ``wait()`` returns the
    outputs of its own run, never the run before (the same cell, a moment earlier)."""
    write_notebook(server.root / "nb.ipynb", ["print(0)"])
    async with connect(server.url, "nb.ipynb", token=server.token, name="agent") as nb:
        cell = nb.cells[0]
        for i in range(1, 6):
            cell.source = f"print({i})"
            outputs = await (await nb.run(cell)).wait()
            assert outputs == [{"output_type": "stream", "name": "stdout", "text": f"{i}\n"}]
        # Asked twice while it waits in the queue behind a running cell: one run, both see it.
        blocker = nb.append_cell("import time; time.sleep(0.3)")
        first = await nb.run(blocker)
        cell.source = "print('once')"
        a, b = await nb.run(cell), await nb.run(cell)
        assert await a.wait() == await b.wait() == [
            {"output_type": "stream", "name": "stdout", "text": "once\n"}]
        assert a.status == b.status == "ok"
        await first.wait()
        # A run that an error before it cancels is done, and says so (queued behind a cell
        # that holds the kernel long enough for all three requests to be in).
        holder = nb.append_cell("import time; time.sleep(1.5)")
        failing = nb.append_cell("raise ValueError('stop')")
        held, bad, after = (await nb.run(holder), await nb.run(failing),
                            await nb.run(cell))
        assert await after.wait() == [
            {"output_type": "stream", "name": "stdout", "text": "once\n"}]  # the last run's
        assert (held.status, after.status) == ("ok", "cancelled") and after.done
        await bad.wait()
        assert bad.status == "error"


async def test_bad_requests_raise_python_errors_naming_the_cell(server: JupyterServer) -> None:
    write_notebook(server.root / "nb.ipynb", ["x = 1"])
    async with connect(server.url, "nb.ipynb", token=server.token) as nb:
        with pytest.raises(IndexError, match="out of range: the notebook has 1 cells"):
            nb.cells[5]
        cell = nb.cells[0]
        with pytest.raises(TypeError, match=f"cell {cell.id}: source must be a str"):
            cell.source = 42  # type: ignore[assignment]
        md = nb.append_cell("text", cell_type="markdown")
        with pytest.raises(ValueError, match="only code runs"):
            await nb.run(md)
        nb.delete_cell(md)
        with pytest.raises(KeyError, match="not in the notebook"):
            md.source  # noqa: B018
        with pytest.raises(KeyError, match="not in the notebook"):
            nb.delete_cell("no-such-id")
    with pytest.raises(NotebookError, match="not a notebook"):
        async with connect(server.url, "notes.txt", token=server.token):
            pass


def test_the_blocking_wrapper_for_scripts(server: JupyterServer) -> None:
    write_notebook(server.root / "nb.ipynb", ["import math\nmath.sqrt(16)"])
    with connect_blocking(server.url, "nb.ipynb", token=server.token, name="script") as nb:
        cell = nb.cells[0]
        outputs = nb.run(cell).wait()
        assert outputs[0]["data"]["text/plain"] == "4.0"
        added = nb.append_cell("1 + 1")
        assert added.source == "1 + 1"
        assert len(nb.cells) == 2
        nb.sync()


async def test_the_server_going_away_is_a_clear_connection_error(
    tmp_path: Path,
) -> None:
    from tests.jupyter_server_process import running_server

    root, runtime = tmp_path / "root", tmp_path / "runtime"
    root.mkdir()
    runtime.mkdir()
    write_notebook(root / "nb.ipynb", ["x = 1"])
    with running_server(root, runtime) as srv:
        async with connect(srv.url, "nb.ipynb", token=srv.token) as nb:
            nb.cells[0].source = "x = 'stored'"
            await nb.sync()  # acknowledged: in the store from here on
            srv.kill()
            nb.cells[0].source = "x = 'typed after the server died'"
            with anyio.fail_after(30), pytest.raises(ConnectionError, match="ended"):
                await nb.sync()


async def test_leaving_with_edits_the_sidecar_never_got_says_so(tmp_path: Path) -> None:
    from tests.jupyter_server_process import running_server

    root, runtime = tmp_path / "root", tmp_path / "runtime"
    root.mkdir()
    runtime.mkdir()
    write_notebook(root / "nb.ipynb", ["x = 1"])
    with (
        running_server(root, runtime) as srv,
        pytest.raises(ConnectionError, match="1 local edits were not sent"),
    ):
        async with connect(srv.url, "nb.ipynb", token=srv.token) as nb:
            srv.kill()
            with anyio.fail_after(30), pytest.raises(ConnectionError):
                await nb.transport.wait_for(lambda: False)  # until it sees the end
            nb.cells[0].source = "x = 'never sent'"  # leaving must not be silent


async def test_input_in_a_clients_run_goes_to_its_on_input(server: JupyterServer) -> None:
    write_notebook(server.root / "nb.ipynb", ["print('hi', input('who? '))", "input('again? ')"])
    asked: list[tuple[str, bool]] = []

    def answer(prompt: str, password: bool) -> str:
        asked.append((prompt, password))
        return "agent"

    async with connect(server.url, "nb.ipynb", token=server.token, on_input=answer) as nb:
        outputs = await (await nb.run(nb.cells[0])).wait()
        assert outputs == [{"output_type": "stream", "name": "stdout", "text": "hi agent\n"}]
        assert asked == [("who? ", False)]
    async with connect(server.url, "nb.ipynb", token=server.token) as nb:  # no on_input
        handle = await nb.run(nb.cells[1])
        await handle.wait()
        assert handle.status == "error"
        assert "could not answer" in str(nb.status.get("input_interrupted"))
