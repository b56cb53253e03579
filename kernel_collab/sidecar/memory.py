"""Giving memory the sidecar freed back to the system.

glibc keeps freed memory in its heaps (one per thread that allocates) for reuse. Loading a
notebook parses, validates and compiles much it then frees (about 7 MiB); a peer's sync, a
save, a compaction and a history request each build temporary copies of the whole document:
without a trim, RSS climbs in steps that no live data is behind. ``malloc_trim`` returns those
pages (about a millisecond); elsewhere than glibc this does nothing. A trim follows, within
``TRIM_INTERVAL``, changes to the document, peers coming and going, and any growth of the
resident set by ``TRIM_SLACK``. Giving large blocks mappings of their own instead
(``mallopt(M_MMAP_THRESHOLD)``) returned them at once, but every whole-document copy then
faulted in fresh pages: ``get_update`` of a 10 MB notebook took 13 ms instead of 1.5.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

import anyio

TRIM_INTERVAL: Final = 1.0
"""Seconds between two looks at whether to trim (each reads ``/proc/self/statm``)."""
TRIM_SLACK: Final = 4 * 2**20
"""Growth of the resident set, in bytes, since the last trim that calls for another."""
M_ARENA_MAX: Final = -8
"""glibc's ``mallopt`` parameter: how many heaps threads may allocate from."""


def _glibc() -> tuple[Callable[[int], int], Callable[[int, int], int]] | None:
    try:
        libc = ctypes.CDLL(None)
        return libc.malloc_trim, libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return None


_GLIBC: Final = _glibc()
_STATM: Final = Path("/proc/self/statm")
_PAGE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def one_heap() -> None:
    """Have every thread allocate from the main heap (call before starting threads).

    A thread's own heap gives back only the free pages below its top: what the store's and the
    file's worker threads freed last (a save's copy of the notebook) stayed resident, about
    1.5x a 10 MB notebook's file. The main heap is trimmed down to its live top."""
    if _GLIBC is not None:
        _GLIBC[1](M_ARENA_MAX, 1)


def release_freed_memory() -> None:
    """Return the C heaps' free pages to the system now."""
    if _GLIBC is not None:
        _GLIBC[0](0)


def resident_bytes() -> int | None:
    """The process's resident set, in bytes (``None`` where ``/proc`` does not say)."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


async def keep_releasing_freed_memory(
    changes: Callable[[], int], interval: float = TRIM_INTERVAL
) -> None:
    """Release freed memory now, then every ``interval`` seconds in which ``changes()`` (a
    count of events: committed updates, peers joining and leaving) moved or the resident set
    grew by ``TRIM_SLACK`` over its low since the last release; runs until cancelled."""
    seen = None
    floor: int | None = None
    while True:
        count, rss = changes(), resident_bytes()
        if rss is not None and floor is not None:
            floor = min(floor, rss)
        if count != seen or (rss is not None and floor is not None and rss > floor + TRIM_SLACK):
            seen = count
            release_freed_memory()
            floor = resident_bytes()
        await anyio.sleep(interval)
