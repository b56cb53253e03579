"""Integration fixtures: the Node peer, with the packages it needs installed."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jupyter_server_process import JupyterServer, running_server

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[JupyterServer]:
    """A real Jupyter server (with kernel_collab's extension) rooted in ``tmp_path/root``."""
    root, runtime = tmp_path / "root", tmp_path / "runtime"
    root.mkdir()
    runtime.mkdir()
    with running_server(root, runtime) as srv:
        yield srv


@pytest.fixture
def roles_server(tmp_path: Path) -> Iterator[JupyterServer]:
    """A server with the users of ``tests.auth_roles`` and a 1 s ``input()`` hand-over."""
    root, runtime = tmp_path / "root", tmp_path / "runtime"
    root.mkdir()
    runtime.mkdir()
    with running_server(
        root, runtime,
        "--ServerApp.identity_provider_class=tests.auth_roles.RoleIdentityProvider",
        "--ServerApp.authorizer_class=tests.auth_roles.RoleAuthorizer",
        "--CollabProvisioner.sidecar_args=--StdinRelay.handover_timeout=1",
    ) as srv:  # fmt: skip
        yield srv


@pytest.fixture(scope="session")
def node_peer_script() -> Path:
    """``tests/node/peer.mjs``, after ``npm ci`` if its node_modules is missing or stale."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.fail("the Node peer tests need Node.js 20+ and npm on PATH")
    lock = NODE_DIR / "package-lock.json"
    installed = NODE_DIR / "node_modules" / ".package-lock.json"  # written by each npm install
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci in {NODE_DIR} failed:\n{result.stdout}\n{result.stderr}")
    return NODE_DIR / "peer.mjs"
