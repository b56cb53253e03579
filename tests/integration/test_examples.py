"""The examples in examples/ work as their docstrings say."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.jupyter_server_process import JupyterServer
from tests.peers import NotebookPeer

pytestmark = pytest.mark.anyio
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def test_the_notebook_that_writes_cells_from_code(server: JupyterServer) -> None:
    shutil.copy(EXAMPLES / "cells_from_code.ipynb", server.root / "nb.ipynb")
    async with server.client() as http:
        room = await server.open_room("nb.ipynb")
        url = server.sync_url(room["document_id"])
        async with NotebookPeer.connect(url, server.token) as peer:
            await http.post(f"/api/kernels/{room['kernel_id']}/execute",
                            json={"cell_id": "write-cells", "document_id": room["document_id"]})

            def squares_printed(p: NotebookPeer) -> bool:
                cells: list[dict[str, Any]] = p.notebook.get()["cells"]
                return len(cells) == 4 and any(
                    o.get("text") == "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]\n"
                    for o in cells[2].get("outputs", []))  # fmt: skip

            await peer.wait_until(squares_printed)
            cells = peer.notebook.get()["cells"]
            assert cells[3]["cell_type"] == "markdown"
            assert cells[1]["outputs"][0]["text"] == "4 cells now\n"


async def test_the_script_that_drives_a_notebook(server: JupyterServer) -> None:
    shutil.copy(EXAMPLES / "demo.ipynb", server.root / "demo.ipynb")
    result = await anyio.run_process(
        [sys.executable, str(EXAMPLES / "drive_notebook.py"), server.url, "demo.ipynb",
         "--token", server.token],
        check=False,
    )  # fmt: skip
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert out.startswith("demo.ipynb: 6 cells")
    assert out.strip().splitlines()[-1] == ".".join(map(str, sys.version_info[:3]))
