"""The privacy table of issue 8: utility, leak, memorisation and speed per protection.

    nice -n 10 .venv/bin/python -m benchmarks.privacy_table --out /tmp/privacy \\
        [--rounds 10] [--clients-per-round 10] [--canaries 5] [--threads 1]

Trains, on the default corpus (Chit-Chat) with the same seed and `--canaries K`,
the rows: no protection, SecAgg, DP at z for epsilon about 8 and about 1 (via
`--target-epsilon`, which calibrates z for the run's rounds), SecAgg + DP, and
the central baseline on the pooled data for `--central-steps` steps. Every
federated row runs the same `--rounds`. It prints a Markdown table (held-out
top-3, the attack's precision / recall on what the server holds, canary exposure
of the most repeated canaries and of the controls, seconds per round) read from
each run's metrics.jsonl by `cli.compare_report`, so the figures are those
`fedtype compare` shows.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cli.compare_report import MISSING, load_run, privacy_cells
from cli.main import main

# (row name, extra `fedtype simulate` options); DP rows calibrate z to epsilon.
ROWS: tuple[tuple[str, list[str]], ...] = (
    ("no protection", []),
    ("SecAgg", ["--secure-aggregation"]),
    ("DP, epsilon ~ 8", ["--dp-clip", "0.5", "--target-epsilon", "8"]),
    ("DP, epsilon ~ 1", ["--dp-clip", "0.5", "--target-epsilon", "1"]),
    (
        "SecAgg + DP, epsilon ~ 8",
        ["--secure-aggregation", "--dp-clip", "0.5", "--target-epsilon", "8"],
    ),
)
HEADER = (
    "| run | held-out top-3 | epsilon (delta) | attack P / R (update) | "
    "attack P / R (sum) | attack P / R (noisy) | exposure (most repeats) | "
    "exposure (controls) | seconds per round |"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for the runs")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients-per-round", type=int, default=10)
    parser.add_argument("--canaries", type=int, default=5)
    parser.add_argument(
        "--central-steps",
        type=int,
        default=None,
        help="central steps (default: rounds x clients per round)",
    )
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def run_rows(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Train every row; (row name, run directory) pairs."""
    out = Path(args.out)
    common = ["--rounds", str(args.rounds), "--eval-every", str(args.rounds),
              "--clients-per-round", str(args.clients_per_round)]  # fmt: skip
    common += ["--canaries", str(args.canaries), "--threads", str(args.threads)]
    runs = []
    for index, (name, extra) in enumerate(ROWS):
        path = str(out / f"row{index}")
        if main(["simulate", "--out", path, *common, *extra]) != 0:
            raise SystemExit(f"{name}: fedtype simulate failed")
        runs.append((name, path))
    steps = args.central_steps or args.rounds * args.clients_per_round
    path = str(out / "central")
    central = ["central", "--out", path, "--workers", "1", "--threads",
               str(args.threads), "--max-steps", str(steps), "--eval-every",
               str(steps), "--canaries", str(args.canaries)]  # fmt: skip
    if main(central) != 0:
        raise SystemExit("central: fedtype central failed")
    runs.append((f"central ({steps} steps)", path))
    return runs


def table_line(name: str, path: str) -> str:
    """One Markdown row from a run's last evaluation."""
    summary = load_run(path)
    top3 = summary.final.get("heldout", {}).get("top3")
    cells = [name, MISSING if top3 is None else f"{top3:.2%}", *privacy_cells(summary)]
    return "| " + " | ".join(cells) + " |"


def main_table() -> None:
    args = parse_args()
    started = time.perf_counter()
    runs = run_rows(args)
    minutes = (time.perf_counter() - started) / 60
    print(
        f"\n{args.rounds} rounds of {args.clients_per_round} phones per round "
        f"(the default is 60 x 20), --canaries {args.canaries}; "
        f"{minutes:.1f} min in all\n"
    )
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for name, path in runs:
        print(table_line(name, path))


if __name__ == "__main__":
    main_table()
