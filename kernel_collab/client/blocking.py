"""A blocking wrapper for scripts: the same API, every use carried to a private event loop's
thread (:class:`LoopCaller`: pycrdt documents belong to one thread), views of the document
wrapped the same way."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import threading
import types
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ..shared_notebook import Cell, CellList, MetadataView, Notebook, RunHandle
from .connection import InputCallback, connect

T = TypeVar("T")

_VIEWS = (Notebook, Cell, CellList, MetadataView, RunHandle)


class LoopCaller:
    """Runs calls on a portal's event loop thread and waits for their result. A plain call is
    one ``call_soon_threadsafe`` (half the cost of the portal's task per call, which an edit
    from kernel code pays each time); coroutines go through the portal."""

    def __init__(self, portal: BlockingPortal):
        self.portal = portal
        self._loop, self._thread, self._context = portal.call(_loop_thread_context)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the loop's thread."""
        if threading.get_ident() == self._thread:
            raise RuntimeError("a blocking call from the event loop's own thread would deadlock")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except Exception as exc:  # noqa: BLE001 - the waiting thread raises it
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run, context=self._context)
        return future.result()

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await ``fn()`` on the loop."""
        return self.portal.call(fn)


async def _loop_thread_context() -> tuple[asyncio.AbstractEventLoop, int, contextvars.Context]:
    """The loop, its thread, and a context for plain callbacks in which anyio finds its
    backend (with sniffio installed it looks for a current task, which a callback lacks)."""
    context = contextvars.copy_context()
    try:
        import sniffio  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        context.run(sniffio.current_async_library_cvar.set, "asyncio")
    return asyncio.get_running_loop(), threading.get_ident(), context


def _wrap(value: Any, portal: LoopCaller) -> Any:
    if isinstance(value, _VIEWS):
        return Blocking(value, portal)
    if isinstance(value, list) and value and isinstance(value[0], _VIEWS):
        return [Blocking(v, portal) for v in value]
    return value


class Blocking:
    """A view of a notebook object whose every use runs on the portal's thread."""

    def __init__(self, target: Any, portal: LoopCaller):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_portal", portal)

    def __getattr__(self, name: str) -> Any:
        portal: LoopCaller = self._portal
        if name == "transaction" and isinstance(self._target, Notebook):
            return lambda: _held_edits(self._target, portal)
        method = inspect.getattr_static(type(self._target), name, None)
        if inspect.isfunction(method):  # a plain method: bound here, one hop to call it
            value = types.MethodType(method, self._target)
        else:
            value = portal.call(getattr, self._target, name)
        if inspect.iscoroutinefunction(value):
            return lambda *a, **k: _wrap(portal.run(lambda: value(*_unwrap(a), **k)), portal)
        if callable(value) and not isinstance(value, _VIEWS):
            return lambda *a, **k: _wrap(portal.call(lambda: value(*_unwrap(a), **k)), portal)
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
def _held_edits(notebook: Notebook, portal: LoopCaller) -> Iterator[None]:
    """A transaction across several blocking calls: others receive the edits as one update."""
    transport = notebook._transport
    portal.call(transport.hold)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        portal.call(transport.release)  # type: ignore[attr-defined]


def _unwrap(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a._target if isinstance(a, Blocking) else a for a in args)


@contextlib.contextmanager
def connect_blocking(server_url: str, path: str, *, token: str | None = None,
                     name: str = "kernel_collab client",
                     on_input: InputCallback | None = None) -> Iterator[Any]:
    """``with connect_blocking(url, "nb.ipynb", token=...) as nb:`` — the API without async:
    ``nb.run(cell).wait()`` blocks until the cell has run."""
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(
        connect(server_url, path, token=token, name=name, on_input=on_input)
    ) as notebook:
        yield Blocking(notebook, LoopCaller(portal))
