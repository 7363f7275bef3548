"""Seeded golden runs: record their metrics, then check a later tree reproduces them.

A refactor keeps the numbers (DEVELOPERS.md). This runs a few small seeded
`fedtype simulate` runs, one per seam of the round (plain FedAvgM, FedAdagrad,
SecAgg, DP with an adaptive clip, SecAgg + DP, 30 % hostile phones, a resumed
run), and keeps each `metrics.jsonl` without its wall-clock fields:

    python -m benchmarks.golden record --out runs/golden-before
    python -m benchmarks.golden check --against runs/golden-before

`check` runs the same commands on the current tree and names the first figure
of each run that differs. DP runs pass `--replayable-noise` where the tree has
it: noise from the operating system never replays, by design.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

_COMMON = [
    "--max-users", "60", "--clients-per-round", "8", "--rounds", "4",
    "--eval-every", "4", "--seed", "3", "--threads", "1",
]  # fmt: skip
_DP = ["--dp-clip", "0.5", "--noise-multiplier", "0.8"]

# name -> the options beside _COMMON
GOLDEN_RUNS: dict[str, list[str]] = {
    "fedavgm": [],
    "fedadagrad": ["--strategy", "fedadagrad", "--client-lr", "2"],
    "secagg": ["--secure-aggregation"],
    "dp-adaptive": [*_DP, "--adaptive-clip", "0.5"],
    "secagg-dp": ["--secure-aggregation", *_DP],
    "hostile": ["--faulty-fraction", "0.3", "--fault-kind", "scale"],
}
# The resumed run: RESUME_AT rounds, then --resume to the full count.
RESUMED = "resumed"
RESUME_AT = 2


def _is_wall_clock(key: str) -> bool:
    timed = key.endswith("seconds") or key.endswith("seconds_total")
    return timed and key != "simulated_seconds"


def strip_wall_clock(value: Any, ignored: frozenset[str] = frozenset()) -> Any:
    """The metrics line without its wall-clock fields (and the `ignored` keys),
    at any depth."""
    if isinstance(value, dict):
        return {
            k: strip_wall_clock(v, ignored)
            for k, v in value.items()
            if not _is_wall_clock(k) and k not in ignored
        }
    if isinstance(value, list):
        return [strip_wall_clock(v, ignored) for v in value]
    return value


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The path of the first figure where `a` and `b` differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{path}.{key} (only in {'after' if key in b else 'before'})"
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path} (length {len(a)} != {len(b)})"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: {a!r} != {b!r}"


def _simulate(args: list[str]) -> None:
    command = [sys.executable, "-m", "cli.main", "simulate", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")


def _replayable(options: list[str]) -> list[str]:
    """`--replayable-noise` for DP runs, where this tree has the option."""
    if "--dp-clip" not in options:
        return []
    help_text = subprocess.run(
        [sys.executable, "-m", "cli.main", "simulate", "--help"],
        capture_output=True,
        text=True,
    ).stdout
    return ["--replayable-noise"] if "--replayable-noise" in help_text else []


def _lines(run_dir: Path) -> list[Any]:
    text = (run_dir / "metrics.jsonl").read_text()
    return [strip_wall_clock(json.loads(line)) for line in text.splitlines() if line]


def run_all(work: Path) -> dict[str, list[Any]]:
    """Every golden run's stripped metrics lines, run in `work`."""
    results = {}
    for name, options in GOLDEN_RUNS.items():
        out = work / name
        _simulate(["--out", str(out), *_COMMON, *options, *_replayable(options)])
        results[name] = _lines(out)
    out = work / RESUMED
    first = [*_COMMON]
    first[first.index("--rounds") + 1] = str(RESUME_AT)
    _simulate(["--out", str(out), *first])
    rounds = _COMMON[_COMMON.index("--rounds") + 1]
    _simulate(["--resume", str(out), "--rounds", rounds])
    results[RESUMED] = _lines(out)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    record = sub.add_parser("record", help="run the golden runs and keep them")
    record.add_argument("--out", type=Path, required=True)
    check = sub.add_parser("check", help="run them again and compare")
    check.add_argument("--against", type=Path, required=True)
    check.add_argument(
        "--ignore",
        action="append",
        default=[],
        help="a key to leave out on both sides, at any depth (a field a change "
        "removed on purpose, e.g. words: the attack's words left the log)",
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="golden-"))
    try:
        results = run_all(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.command == "record":
        args.out.mkdir(parents=True, exist_ok=True)
        for name, lines in results.items():
            path = args.out / f"{name}.jsonl"
            path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        print(f"{len(results)} golden runs recorded in {args.out}")
        return 0
    changed = 0
    for name, lines in results.items():
        path = args.against / f"{name}.jsonl"
        ignored = frozenset(args.ignore)
        before = [
            strip_wall_clock(json.loads(x), ignored)
            for x in path.read_text().splitlines()
            if x
        ]
        found = first_difference(before, strip_wall_clock(lines, ignored))
        print(f"{name}: {'identical' if found is None else 'differs at ' + found}")
        changed += found is not None
    return 1 if changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
