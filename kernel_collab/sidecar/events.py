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
        """Call every listener with ``value``."""
        for listener in list(self._listeners):
            listener(value)
