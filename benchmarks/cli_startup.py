"""Wall and CPU time of `fedtype --help`, a subcommand's help and an argument error.

Each command runs in a fresh interpreter, `--repeats` times; the median is
printed. The goal (issue 28) is under 0.5 s of wall time on an idle machine; on
a machine shared with other jobs the CPU time (user + system of the child) is
the steadier figure, and the load average is printed beside it.

    python -m benchmarks.cli_startup --repeats 5
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("--help",),
    ("--version",),
    ("simulate", "--help"),
    ("demo", "--help"),
    ("simulate", "--out", "x", "--rounds", "two"),
)


def time_command(argv: tuple[str, ...]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `python -m cli.main ARGV`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "cli.main", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for argv in COMMANDS:
        runs = [time_command(argv) for _ in range(args.repeats)]
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"fedtype {' '.join(argv):<40} wall {wall:.2f} s  cpu {cpu:.2f} s")


if __name__ == "__main__":
    main()
