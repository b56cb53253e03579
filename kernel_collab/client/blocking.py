"""A blocking wrapper for scripts: the same API, each call run on a private event loop.

pycrdt documents belong to one thread, so every attribute access and call is carried out on
the loop's thread through an anyio blocking portal, and objects that view the document
(cells, metadata, run handles) come back wrapped the same way.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ..shared_notebook import Cell, CellList, MetadataView, Notebook, RunHandle
from .connection import InputCallback, connect

_VIEWS = (Notebook, Cell, CellList, MetadataView, RunHandle)


def _wrap(value: Any, portal: BlockingPortal) -> Any:
    if isinstance(value, _VIEWS):
        return Blocking(value, portal)
    if isinstance(value, list) and value and isinstance(value[0], _VIEWS):
        return [Blocking(v, portal) for v in value]
    return value


class Blocking:
    """A view of a notebook object whose every use runs on the portal's thread."""

    def __init__(self, target: Any, portal: BlockingPortal):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_portal", portal)

    def __getattr__(self, name: str) -> Any:
        portal: BlockingPortal = self._portal
        if name == "transaction" and isinstance(self._target, Notebook):
            return lambda: _held_edits(self._target, portal)
        value = portal.call(_get, self._target, name)
        if inspect.iscoroutinefunction(value):
            return lambda *a, **k: _wrap(
                portal.call(lambda: value(*_unwrap(a), **k)), portal
            )
        if callable(value) and not isinstance(value, _VIEWS):
            return lambda *a, **k: _wrap(
                portal.call(lambda: _sync_call(value, _unwrap(a), k)), portal
            )
        return _wrap(value, portal)

    def __setattr__(self, name: str, value: Any) -> None:
        self._portal.call(setattr, self._target, name, value)

    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._portal.call(lambda: self._target[key]), self._portal)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._portal.call(lambda: self._target.__setitem__(key, value))

    def __len__(self) -> int:
        return int(self._portal.call(len, self._target))

    def __iter__(self) -> Iterator[Any]:
        return iter(_wrap(self._portal.call(list, self._target), self._portal))

    def __repr__(self) -> str:
        return str(self._portal.call(repr, self._target))


@contextlib.contextmanager
def _held_edits(notebook: Notebook, portal: BlockingPortal) -> Iterator[None]:
    """A transaction across several blocking calls: others receive the edits as one update."""
    transport = notebook._transport
    portal.call(_call, transport.hold)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        portal.call(_call, transport.release)  # type: ignore[attr-defined]


async def _call(fn: Any) -> Any:
    return fn()


def _unwrap(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a._target if isinstance(a, Blocking) else a for a in args)


async def _get(target: Any, name: str) -> Any:
    return getattr(target, name)


async def _sync_call(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = fn(*args, **kwargs)
    return result


@contextlib.contextmanager
def connect_blocking(server_url: str, path: str, *, token: str | None = None,
                     name: str = "kernel_collab client",
                     on_input: InputCallback | None = None) -> Iterator[Any]:
    """``with connect_blocking(url, "nb.ipynb", token=...) as nb:`` — the API without async:
    ``nb.run(cell).wait()`` blocks until the cell has run."""
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(
        connect(server_url, path, token=token, name=name, on_input=on_input)
    ) as notebook:
        yield Blocking(notebook, portal)
