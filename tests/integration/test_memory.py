"""An idle sidecar's memory: what it loads, and that what it skips weakens no check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.files import write_notebook
from tests.peers import NotebookPeer
from tests.sidecar_process import running_sidecar

pytestmark = pytest.mark.anyio

IDLE_USS_MIB = 32
"""Own memory (USS) of an idle sidecar of a 10-cell notebook: 28.6 MiB measured (42.5 before
its kernel client was loaded lazily and freed memory returned)."""


def _uss_mib(pid: int) -> float:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            fields[parts[0][:-1]] = int(parts[1])
    return (fields["Private_Clean"] + fields["Private_Dirty"]) / 1024


async def test_an_idle_sidecar_loads_no_kernel_client_and_returns_what_it_freed(
    tmp_path: Path,
) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", [f"x = {i}" for i in range(10)])
    with running_sidecar(nb, tmp_path) as sidecar:
        async with NotebookPeer.connect(sidecar.url, sidecar.token) as peer:
            assert peer.notebook.cell_number == 10  # synced: start-up is over
        pid = sidecar.proc.pid
        maps = await anyio.Path(f"/proc/{pid}/maps").read_text()
        assert "zmq" not in maps  # loaded at the first attach
        assert _uss_mib(pid) <= IDLE_USS_MIB


# Notebooks nbformat refuses, each for another reason, and some it accepts.
CELL: dict[str, Any] = {"cell_type": "code", "id": "a", "metadata": {}, "outputs": [],
                        "source": "x", "execution_count": None}  # fmt: skip
NOTEBOOKS: dict[str, dict[str, Any]] = {
    "valid": {"cells": [CELL], "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
    "cell type": {"cells": [{**CELL, "cell_type": "bogus"}], "metadata": {},
                  "nbformat": 4, "nbformat_minor": 5},
    "count": {"cells": [{**CELL, "execution_count": "1"}], "metadata": {}, "nbformat": 4,
              "nbformat_minor": 5},
    "output": {"cells": [{**CELL, "outputs": [{"output_type": "stream", "text": "x"}]}],
               "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
    "source": {"cells": [{**CELL, "source": 3}], "metadata": {}, "nbformat": 4,
               "nbformat_minor": 5},
    "metadata": {"cells": [CELL], "metadata": {"kernelspec": {"name": 1}}, "nbformat": 4,
                 "nbformat_minor": 5},
    "id": {"cells": [{**CELL, "id": "not ok!"}], "metadata": {}, "nbformat": 4,
           "nbformat_minor": 5},
    "v4.4": {"cells": [{k: v for k, v in CELL.items() if k != "id"}], "metadata": {},
             "nbformat": 4, "nbformat_minor": 4},
    "v3": {"worksheets": [{"cells": [{"cell_type": "code", "input": "x", "outputs": [],
                                      "language": "python", "metadata": {}}]}],
           "metadata": {}, "nbformat": 3, "nbformat_minor": 0},
}  # fmt: skip

CHECK = """
import json, sys
from pathlib import Path
if sys.argv[1] == "sidecar":  # what `python -m kernel_collab.sidecar` skips
    from kernel_collab.sidecar.__main__ import FORMAT_CHECKER_ONLY
else:
    FORMAT_CHECKER_ONLY = ()
from kernel_collab.notebook_core import files
results = {}
for path in sorted(Path(sys.argv[2]).glob("*.ipynb")):
    try:
        nb, data = files.read(path)
        for i, cell in enumerate(nb["cells"]):  # an upgrade from v3 draws random ids
            cell["id"] = f"cell-{i}"
        results[path.stem] = ["ok", nb, files.serialize(nb).decode()]
    except files.NotebookFileError as exc:
        results[path.stem] = ["refused", str(exc)]
loaded = [name for name in FORMAT_CHECKER_ONLY if sys.modules.get(name) is not None]
print(json.dumps({"results": results, "loaded": loaded}))
"""


def _check(mode: str, folder: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", CHECK, mode, str(folder)], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out)
    return result


def test_what_the_sidecar_skips_importing_changes_no_notebook_check(tmp_path: Path) -> None:
    """jsonschema's format checkers are skipped in the sidecar; nbformat never uses them."""
    for name, nb in NOTEBOOKS.items():
        (tmp_path / f"{name}.ipynb").write_text(json.dumps(nb))
    plain, sidecar = _check("plain", tmp_path), _check("sidecar", tmp_path)
    assert sidecar["loaded"] == []
    assert sidecar["results"] == plain["results"]
    refused = {name for name, result in plain["results"].items() if result[0] == "refused"}
    assert refused == set(NOTEBOOKS) - {"valid", "v4.4", "v3"}
