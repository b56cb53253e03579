"""kernel_collab: a Jupyter notebook and its kernel as one live, shared document."""

from typing import Any

__version__ = "0.1.0"


def notebook() -> Any:
    """In a collaborative kernel: the shared notebook this code runs in (see the README)."""
    from .kernel.api import notebook as _notebook

    return _notebook()


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "kernel_collab"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from .server.extension import load  # imported here: kernels import this package too

    load(serverapp)
