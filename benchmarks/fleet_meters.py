"""Meters for `benchmarks/fleet.py`: time, CPU and memory of a run and its workers.

Linux only (/proc). CPU seconds add this process's and its workers' user and system
time, so that an executor's work counts wherever it ran.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds used so far by this process and the processes `pids`."""
    total = time.process_time()
    for pid in pids:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def measured(run: Callable[[], Any], pids: Sequence[int]) -> tuple[Any, float, float]:
    """`run()`'s result, wall seconds and CPU seconds (with those of `pids`)."""
    cpu, wall = cpu_seconds(pids), time.perf_counter()
    result = run()
    return result, time.perf_counter() - wall, cpu_seconds(pids) - cpu


def pss_bytes(pid: int | str = "self") -> int:
    """Proportional set size: shared pages (torch's libraries) split between users."""
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes(pid: int | str = "self") -> int:
    """Peak resident set size of a process: getrusage for this one, else VmHWM."""
    if pid == "self":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0
