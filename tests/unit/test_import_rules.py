"""The package's boundaries hold: each side talks to the others only through
``kernel_collab.protocol`` (and the pure ``kernel_collab.notebook_core``), never through another
side's internals. Checked on the source, statically, so that an import added anywhere fails
here with the line that broke the rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kernel_collab"

#: side → the packages of kernel_collab it must never import
FORBIDDEN = {
    "client": ("sidecar", "server", "provisioner"),
    "kernel": ("sidecar", "server", "provisioner"),
    "server": ("sidecar",),
    "store": ("sidecar", "server", "client", "kernel"),
    "sidecar": ("server", "client", "kernel", "provisioner"),
    "provisioner": ("sidecar", "server"),
    "notebook_core": ("sidecar", "server", "client", "kernel", "provisioner", "store"),
    "protocol": ("sidecar", "server", "client", "kernel", "provisioner", "store",
                 "notebook_core"),
}  # fmt: skip


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every kernel_collab import in a module."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("kernel_collab")]


def _side(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


@pytest.mark.parametrize("side", sorted(FORBIDDEN))
def test_a_side_imports_no_other_side_s_internals(side: str) -> None:
    files = [p for p in PACKAGE.rglob("*.py") if _side(p) == side]
    assert files, f"no module for {side}"
    broken = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for path in files
        for line, name in _imports(path)
        for other in FORBIDDEN[side]
        if name == f"kernel_collab.{other}" or name.startswith(f"kernel_collab.{other}.")
    ]
    assert broken == []


def test_the_rules_see_relative_imports() -> None:
    """The checker itself: a relative import two levels up is resolved to its package."""
    path = PACKAGE / "sidecar" / "room.py"
    names = {name for _line, name in _imports(path)}
    assert "kernel_collab.protocol.CLOSE_REFUSED" in names
