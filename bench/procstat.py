"""CPU time of processes, from /proc/<pid>/stat (utime + stime, in seconds)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

CLK_TCK = os.sysconf("SC_CLK_TCK")
SYSTEM = "_system"


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included, its children not), in seconds."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """Direct children of a process (e.g. the backends of a postmaster), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def group_seconds(pids: Iterable[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


class CpuMeter:
    """Snapshots of named process groups; `delta` gives the CPU seconds each spent in between."""

    def __init__(self, groups: Mapping[str, Callable[[], Iterable[int]]]) -> None:
        # Each group is a function returning its current pids (so process trees can change).
        self.groups = dict(groups)

    def snapshot(self) -> dict[str, dict[int, float]]:
        snap = {name: {pid: cpu_seconds(pid) for pid in pids()} for name, pids in self.groups.items()}
        snap[SYSTEM] = {0: system_busy_seconds()}
        return snap

    @staticmethod
    def delta(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
        """CPU seconds per group; under `SYSTEM`, what the whole machine spent busy."""
        out = {}
        for name, now in after.items():
            then = before.get(name, {})
            # A process that appeared in between counts from zero.
            out[name] = sum(max(0.0, cpu - then.get(pid, 0.0)) for pid, cpu in now.items())
        return out


def system_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()
    # cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    values = [int(v) for v in fields[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK
