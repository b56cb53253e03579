"""Giving memory the sidecar freed back to the system.

glibc keeps freed memory in its heaps (one per thread that allocates) for reuse. Loading a
notebook parses, validates and compiles much it then frees (about 7 MiB), and compactions,
saves and the store's worker thread build large temporary buffers: without a trim, RSS climbs
in steps that no live data is behind. ``malloc_trim`` returns those pages (under a millisecond);
elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Final

import anyio

TRIM_INTERVAL: Final = 5.0
"""Seconds between two trims while the document changes (each costs about a millisecond)."""


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_TRIM: Final = _malloc_trim()


def release_freed_memory() -> None:
    """Return the C heaps' free pages to the system now."""
    if _TRIM is not None:
        _TRIM(0)


async def keep_releasing_freed_memory(
    changes: Callable[[], int], interval: float = TRIM_INTERVAL
) -> None:
    """Release freed memory now, then every ``interval`` seconds in which ``changes()`` (a
    count of the document's committed updates) moved; runs until cancelled."""
    seen = None
    while True:
        count = changes()
        if count != seen:
            seen = count
            release_freed_memory()
        await anyio.sleep(interval)
