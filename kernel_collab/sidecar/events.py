"""A typed list of listeners: what the room and the bridge tell the services that subscribe."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Listeners(Generic[T]):
    """Callables called in the order they subscribed, synchronously (often inside a document
    transaction: they must not block)."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[T], None]] = []

    def subscribe(self, listener: Callable[[T], None]) -> None:
        """Call ``listener`` from now on."""
        self._listeners.append(listener)

    def emit(self, value: T) -> None:
        """Call every listener with ``value``; a listener that raises does not keep the others
        from being called (the first error is raised once all were)."""
        error: Exception | None = None
        for listener in list(self._listeners):
            try:
                listener(value)
            except Exception as exc:  # noqa: BLE001 - raised below, after the others ran
                error = error or exc
        if error is not None:
            raise error
