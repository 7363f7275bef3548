"""`kill -9` in every phase of a SecAgg + DP `fedtype simulate`, then `--resume`:
the same run, bit for bit? Plus two writers at once and a full disk.

    .venv/bin/python benchmarks/kill_trials.py [--trials 20] [--rounds 3]
        [--users 40] [--seed 0] [--jobs 1] [--skip-checks]

An uninterrupted run on a JSONL slice of the Chit-Chat corpus (SecAgg + DP,
evaluating every round) gives the reference. Each trial starts the same command
and sends SIGKILL in one targeted phase, in turn: start-up (before the run
directory exists), creation (config written, round 0 not yet saved), local
training, evaluation, and saving (a round's checkpoint written, state.json not
yet). The phase the kill really fell in is read off the run directory at that
moment (`observed`). The run is then resumed (`--resume`, or `--out` again when
it never got a config) and must end with every figure of the reference's metrics
lines equal bit for bit (fields measuring seconds aside), the same final
weights and server state, the same state.json (seconds aside), no temporary
file and nothing new in /dev/shm. Kill moments come from `--seed`.

The checks (all offline): a second `simulate --resume` and `--out` beside a
running writer are refused (exit 2, naming the holder's pid) while `fedtype
compare` reads the run; on a tmpfs filled in the middle of a run the run stops
with one line and exit 2, keeps its last good round, and once space is freed
resumes to the reference; on the same tmpfs remounted read-only `--resume` and
`personalize` are refused at once. The disk checks need root and `mount`.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from corpora.corpus import load_messages

FEDTYPE = [sys.executable, "-m", "cli.main"]
PHASES = ("start-up", "creation", "training", "evaluation", "saving")
POLL_S = 0.005


def write_corpus(path: Path, users: int) -> None:
    """The messages of the first `users` Chit-Chat users as JSONL."""
    messages, _ = load_messages("chitchat")
    chosen = set(sorted({m.user for m in messages})[:users])
    with path.open("w") as handle:
        for m in messages:
            if m.user in chosen:
                row = {"user": m.user, "text": m.text, "timestamp": m.timestamp}
                handle.write(json.dumps(row) + "\n")


def replayable_flag() -> list[str]:
    """`--replayable-noise` where simulate has it: DP noise from the seed, so
    that a resumed run can equal the uninterrupted one (OS noise cannot)."""
    done = subprocess.run([*FEDTYPE, "simulate", "--help"], capture_output=True)
    return ["--replayable-noise"] if b"--replayable-noise" in done.stdout else []


def command(run: Path, corpus: Path, rounds: int, extra: list[str]) -> list[str]:
    return [*FEDTYPE, "simulate", "--out", str(run), "--corpus", str(corpus),
            "--rounds", str(rounds), "--clients-per-round", "5", "--hidden-dim",
            "16", "--embed-dim", "16", "--eval-every", "1", "--threads", "1",
            "--max-users", "20", "--secure-aggregation", "--dp-clip", "0.5",
            "--noise-multiplier", "1.0", *extra]  # fmt: skip


def resume(run: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDTYPE, "simulate", "--resume", str(run), *extra, "--threads", "1"],
        capture_output=True,
        text=True,
    )


def machine_free(value: Any) -> Any:
    """`value` without the fields that measure seconds (wall clock), recursively."""
    if isinstance(value, dict):
        return {k: machine_free(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [machine_free(v) for v in value]
    return value


def fingerprint(run: Path) -> dict[str, Any]:
    """Every figure of a finished run: metrics lines, state.json, last weights."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    state = json.loads((run / "state.json").read_text())
    last = state["server_round"]
    tensors = {}
    for name in (f"step_{last:06d}", f"server_{last:06d}"):
        loaded = load_file(str(run / "checkpoints" / f"{name}.safetensors"))
        tensors.update({f"{name}/{k}": v.numpy().tobytes() for k, v in loaded.items()})
    return {
        "metrics": machine_free([json.loads(line) for line in lines]),
        "state": machine_free(state),
        "tensors": tensors,
    }


def differences(mine: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """Which parts differ from the reference (empty: identical bit for bit)."""
    found = [part for part in ("metrics", "state") if mine[part] != reference[part]]
    found += [
        k
        for k in reference["tensors"]
        if mine["tensors"].get(k) != reference["tensors"][k]
    ]
    return found


def state_round(run: Path) -> int | None:
    try:
        return int(json.loads((run / "state.json").read_text())["server_round"])
    except (OSError, ValueError, KeyError):
        return None


def observe(run: Path, since: float, train_s: float) -> str:
    """The phase a kill at this moment falls in, from the run directory."""
    if not (run / "config.json").exists():
        return "start-up"
    done = state_round(run)
    if done is None:
        return "creation"
    ahead = run / "checkpoints" / f"step_{done + 1:06d}.safetensors"
    writing = any(run.glob(".*.tmp*")) or any(run.glob("checkpoints/.*.tmp*"))
    if ahead.exists() or writing:
        return "saving"
    return "training" if time.perf_counter() - since < train_s else "evaluation"


def wait_for(process: subprocess.Popen[bytes], ready: Any) -> bool:
    """Poll until `ready()` (True) or the process ends (False)."""
    while process.poll() is None:
        if ready():
            return True
        time.sleep(POLL_S)
    return False


def kill_in(
    phase: str,
    process: subprocess.Popen[bytes],
    run: Path,
    rng: random.Random,
    timing: dict[str, Any],
) -> tuple[str, float]:
    """Wait for the targeted phase and kill there; (observed phase, seconds in)."""
    started = time.perf_counter()
    rounds = len(timing["train_s"])
    target = rng.randrange(1, rounds + 1)  # the round the kill aims at
    since, train_s = started, 0.0
    if phase == "start-up":
        time.sleep(rng.uniform(0.0, 0.8 * timing["config_s"]))
    elif phase == "creation":
        wait_for(process, lambda: (run / "config.json").exists())
    elif phase == "saving":
        step = run / "checkpoints" / f"step_{target:06d}.safetensors"
        wait_for(process, step.exists)
    else:
        wait_for(process, lambda: (state_round(run) or -1) >= target - 1)
        since, train_s = time.perf_counter(), timing["train_s"][target - 1]
        eval_s = timing["eval_s"][target - 1]
        pause = rng.uniform(0.0, 0.9 * train_s)
        if phase == "evaluation":
            pause = train_s + rng.uniform(0.1, 0.9) * eval_s
        time.sleep(pause)
    observed = observe(run, since, train_s)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    else:
        observed = "after the end"
    process.wait()
    return observed, time.perf_counter() - started


def shm() -> set[str]:
    folder = Path("/dev/shm")
    return set(os.listdir(folder)) if folder.is_dir() else set()


def trial(index: int, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(f"{args.seed}:{index}")
    phase = PHASES[index % len(PHASES)]
    run = folder / f"trial{index}"
    before = shm()
    process = subprocess.Popen(args.command(run), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    observed, after = kill_in(phase, process, run, rng, args.timing)
    if (run / "config.json").exists():
        done = resume(run)
    else:  # killed before config.json: --out starts the run there again
        done = subprocess.run(args.command(run), capture_output=True, text=True)
    differ = (
        differences(fingerprint(run), args.reference) if done.returncode == 0 else ["?"]
    )
    stray = [str(p) for p in run.rglob("*.tmp*")]
    leaked = sorted(shm() - before)
    return {
        "trial": index, "target": phase, "observed": observed,
        "kill_after_s": round(after, 2), "resume_status": done.returncode,
        "differs": differ, "stray_files": stray, "shm_leaked": leaked,
        "ok": done.returncode == 0 and not differ and not stray and not leaked,
        "output": done.stderr.strip().splitlines()[-2:] if differ else [],
    }  # fmt: skip


def reference_run(folder: Path, args: argparse.Namespace) -> None:
    """The uninterrupted run: its fingerprint and its phases' timing."""
    run = folder / "reference"
    started = time.perf_counter()
    process = subprocess.Popen(args.command(run), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for(process, lambda: (run / "config.json").exists())
    config_s = time.perf_counter() - started
    if process.wait() != 0:
        raise SystemExit("the reference run failed")
    records = [
        json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    args.timing = {
        "config_s": config_s,
        "train_s": [r["wall_seconds"] for r in records],
        "eval_s": [r.get("eval_seconds", 0.0) for r in records],
    }
    args.reference = fingerprint(run)
    print(f"reference: {len(records)} rounds in {time.perf_counter() - started:.1f} s"
          f" (config after {config_s:.1f} s)", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="trials at once")
    parser.add_argument("--skip-checks", action="store_true")
    args = parser.parse_args(argv)
    extra = replayable_flag()
    print(f"DP noise: {'--replayable-noise' if extra else 'the seed (no such flag)'}")
    with tempfile.TemporaryDirectory(prefix="fedtype-kill-") as scratch:
        folder = Path(scratch)
        corpus = folder / "slice.jsonl"
        write_corpus(corpus, args.users)
        args.command = lambda run: command(run, corpus, args.rounds, extra)
        reference_run(folder, args)
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda i: _shown(trial(i, folder, args)),
                                    range(args.trials)))  # fmt: skip
        checks = [] if args.skip_checks else run_checks(folder, args)
    passed = sum(r["ok"] for r in results)
    phases = {
        p: sum(r["observed"] == p for r in results) for p in (*PHASES, "after the end")
    }
    print(
        f"{passed} of {len(results)} kill trials resumed to the reference, every "
        f"figure bit for bit, no stray file; kills by observed phase: {phases}"
    )
    checked = sum(c["ok"] for c in checks)
    print(f"{checked} of {len(checks)} concurrency and disk checks passed")
    return 0 if passed == len(results) and checked == len(checks) else 1


def _shown(result: dict[str, Any]) -> dict[str, Any]:
    print(json.dumps(result), flush=True)
    return result


def run_checks(folder: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    from benchmarks.run_checks import concurrency_checks, disk_checks

    checks = concurrency_checks(folder, args)
    checks += disk_checks(folder, args)
    for check in checks:
        print(json.dumps(check), flush=True)
    return checks


if __name__ == "__main__":
    raise SystemExit(main())
