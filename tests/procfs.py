"""A process's figures from ``/proc`` (Linux), for the tests and the benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class Memory(NamedTuple):
    """A process's memory in MiB: every page it maps (RSS), each shared page divided among the
    processes that map it (PSS), its own pages only (USS)."""

    rss: float
    pss: float
    uss: float


def rollup(pid: int) -> Memory:
    """A process's memory, from ``/proc/PID/smaps_rollup``."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            fields[parts[0][:-1]] = int(parts[1])
    private = fields["Private_Clean"] + fields["Private_Dirty"]
    return Memory(fields["Rss"] / 1024, fields["Pss"] / 1024, private / 1024)


def stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (which may hold spaces): ``[0]``
    the state, ``[1]`` the parent pid, ``[11]`` and ``[12]`` user and system time, ``[19]`` the
    start time (times in clock ticks, the start since boot)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def parent_pid(pid: int) -> int:
    """The pid of a process's parent."""
    return int(stat_fields(pid)[1])
