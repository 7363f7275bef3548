"""`kill -9` at random moments of `fedtype simulate`, then `--resume`: same run?

    .venv/bin/python benchmarks/kill_trials.py [--trials 20] [--rounds 4]
        [--users 40] [--seed 0]

An uninterrupted run on a small JSONL slice of the Chit-Chat corpus (evaluating
every round, so that kills land in every phase: corpus load, the round-0 save,
local training, checkpoint writes, evaluation) gives the reference metrics. Each
trial starts the same command, sends SIGKILL after a random share of the
reference's wall time, resumes the run (`--resume`, repeated until it reports
done) and checks that it ends with the reference's metrics lines (wall-clock
fields aside), that no temporary file is left in the run directory and that no
new file is left in /dev/shm. Kill times come from `--seed`, so a trial can be
rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from corpora.corpus import load_messages

WALL_FIELDS = ("wall_seconds", "wall_seconds_total", "eval_seconds")
FEDTYPE = [sys.executable, "-m", "cli.main"]


def write_corpus(path: Path, users: int) -> None:
    """The messages of the first `users` Chit-Chat users as JSONL."""
    messages, _ = load_messages("chitchat")
    chosen = set(sorted({m.user for m in messages})[:users])
    with path.open("w") as handle:
        for m in messages:
            if m.user in chosen:
                row = {"user": m.user, "text": m.text, "timestamp": m.timestamp}
                handle.write(json.dumps(row) + "\n")


def command(run: Path, corpus: Path, rounds: int) -> list[str]:
    return [*FEDTYPE, "simulate", "--out", str(run), "--corpus", str(corpus),
            "--rounds", str(rounds), "--clients-per-round", "4", "--hidden-dim",
            "16", "--embed-dim", "16", "--eval-every", "1", "--threads", "1",
            "--max-users", "20"]  # fmt: skip


def machine_free(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [
        {k: v for k, v in json.loads(line).items() if k not in WALL_FIELDS}
        for line in lines
    ]


def shm() -> set[str]:
    folder = Path("/dev/shm")
    return set(os.listdir(folder)) if folder.is_dir() else set()


def resume(run: Path, rounds: int) -> tuple[int, str]:
    """`--resume` until the run is complete (a resume may itself be refused)."""
    done = subprocess.run(
        [*FEDTYPE, "simulate", "--resume", str(run), "--rounds", str(rounds),
         "--threads", "1"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def trial(
    index: int, folder: Path, corpus: Path, args: argparse.Namespace, wall: float
) -> dict[str, Any]:
    rng = random.Random(f"{args.seed}:{index}")
    run = folder / f"trial{index}"
    before = shm()
    # The reference ran on a machine shared with other jobs; later runs may be
    # faster, so kills are drawn over the first 70 % of its wall time.
    delay = rng.uniform(0.0, 0.7 * wall)
    process = subprocess.Popen(
        command(run, corpus, args.rounds),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    killed = process.poll() is None
    if killed:
        process.send_signal(signal.SIGKILL)
    process.wait()
    status, output = resume(run, args.rounds) if run.exists() else (None, "")
    unborn = ("no such run directory", "is this a run directory")
    if not run.exists() or any(text in output for text in unborn):
        # Killed before config.json was written: --out starts the run there.
        status = subprocess.run(
            command(run, corpus, args.rounds), capture_output=True
        ).returncode
    stray = [str(p) for p in run.rglob("*.tmp*")]
    leaked = sorted(shm() - before)
    same = machine_free(run / "metrics.jsonl") == args.reference
    return {
        "trial": index,
        "kill_after_s": round(delay, 2),
        "killed": killed,
        "resume_status": status,
        "same_metrics": same,
        "stray_files": stray,
        "shm_leaked": leaked,
        "ok": status == 0 and same and not stray and not leaked,
        "output": output.strip().splitlines()[-3:] if not same else [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fedtype-kill-") as scratch:
        folder = Path(scratch)
        corpus = folder / "slice.jsonl"
        write_corpus(corpus, args.users)
        started = time.perf_counter()
        subprocess.run(command(folder / "reference", corpus, args.rounds), check=True,
                       capture_output=True)  # fmt: skip
        wall = time.perf_counter() - started
        args.reference = machine_free(folder / "reference" / "metrics.jsonl")
        print(f"reference: {len(args.reference)} rounds in {wall:.1f} s")
        results = []
        for index in range(args.trials):
            result = trial(index, folder, corpus, args, wall)
            results.append(result)
            print(json.dumps(result))
    passed = sum(r["ok"] for r in results)
    killed = sum(r["killed"] for r in results)
    print(f"{passed} of {len(results)} trials resumed to the reference metrics with "
          f"no stray file ({killed} killed mid-run)")  # fmt: skip
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
