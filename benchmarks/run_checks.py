"""The kill trials' other checks: two writers at once, a full and a read-only disk.

Called by `benchmarks/kill_trials.py` with its reference run (`args.reference`,
`args.command`); each check is a dict with "check", "ok" and what was seen.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.kill_trials import (
    FEDTYPE,
    differences,
    fingerprint,
    resume,
    state_round,
    wait_for,
)


def _start(args: argparse.Namespace, run: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args.command(run), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip


def _finished(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _one_line(text: str) -> bool:
    return text.count("\n") == 1 and "Traceback" not in text


def concurrency_checks(folder: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """A second writer beside a running one, a reader beside it, two resumes."""
    run = folder / "concurrent"
    # Two rounds more than the reference, so that it still writes while the
    # probes start up; its first rounds must equal the reference's.
    longer = list(args.command(run))
    longer[longer.index("--rounds") + 1] = str(args.rounds + 2)
    writer = subprocess.Popen(longer, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(writer, lambda: (state_round(run) or 0) >= 1)
    # All three at once, while the writer still has a round to go.
    probes = [
        [*FEDTYPE, "simulate", "--resume", str(run), "--threads", "1"],
        args.command(run),
        [*FEDTYPE, "compare", str(run)],
    ]
    started = [
        subprocess.Popen(p, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in probes
    ]
    second, again, reader = (_finished(p) for p in started)
    writer_was_running = writer.poll() is None
    writer.wait()
    holder = f"process {writer.pid}"
    checks = [
        {"check": "second --resume beside a writer", "status": second.returncode,
         "ok": second.returncode == 2 and holder in second.stderr
         and _one_line(second.stderr), "stderr": second.stderr.strip()},
        {"check": "second --out beside a writer", "status": again.returncode,
         "ok": again.returncode == 2 and holder in again.stderr,
         "stderr": again.stderr.strip()[-300:],
         "writer_still_running": writer_was_running},
        {"check": "compare reads beside a writer", "status": reader.returncode,
         "ok": reader.returncode == 0},
        {"check": "the writer's rounds equal the reference's",
         "status": writer.returncode,
         "ok": writer.returncode == 0
         and fingerprint(run)["metrics"][: args.rounds]
         == args.reference["metrics"]},
    ]  # fmt: skip
    checks.append(_two_resumes(folder, args))
    return checks


def _two_resumes(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A run killed after round 1, resumed twice at the same moment."""
    run = folder / "two-resumes"
    writer = _start(args, run)
    wait_for(writer, lambda: (state_round(run) or 0) >= 1)
    writer.kill()
    writer.wait()
    command = [*FEDTYPE, "simulate", "--resume", str(run), "--threads", "1"]
    both = [subprocess.Popen(command, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for _ in range(2)]  # fmt: skip
    statuses = sorted(p.wait() for p in both)
    rounds = [line for line in (run / "metrics.jsonl").read_text().splitlines()]
    same = not differences(fingerprint(run), args.reference)
    return {"check": "two --resume at once", "statuses": statuses,
            "metrics_lines": len(rounds),
            "ok": statuses == [0, 2] and same}  # fmt: skip


def _mount(*options: str) -> bool:
    return subprocess.run(["mount", *options], capture_output=True).returncode == 0


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def disk_checks(folder: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """A disk that fills in mid-run, then the same disk read-only (tmpfs)."""
    disk = folder / "disk"
    disk.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=64m", "fedtype-disk", str(disk)):
        return [{"check": "full and read-only disk", "ok": False,
                 "skipped": "needs root and mount for a tmpfs"}]  # fmt: skip
    try:
        return _disk_checks(disk, args)
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def _disk_checks(disk: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    run = disk / "run"
    writer = _start(args, run)
    wait_for(writer, lambda: (state_round(run) or 0) >= 1)
    filler = _fill(disk)
    writer.wait()
    error = writer.stderr.read().decode() if writer.stderr else ""
    kept = state_round(run)
    still_full = resume(run)
    filler.unlink()
    freed = resume(run)
    stray = [str(p) for p in run.rglob("*.tmp*")]
    checks = [
        {"check": "disk fills mid-run", "status": writer.returncode,
         "last_good_round": kept, "stderr": error.strip()[-200:],
         "ok": writer.returncode == 2 and _one_line(error) and kept is not None},
        {"check": "--resume on the full disk", "status": still_full.returncode,
         "ok": still_full.returncode == 2 and _one_line(still_full.stderr)},
        {"check": "--resume once space is freed", "status": freed.returncode,
         "stray_files": stray,
         "ok": freed.returncode == 0 and not stray
         and not differences(fingerprint(run), args.reference)},
    ]  # fmt: skip
    if not _mount("-o", "remount,ro", str(disk)):
        return checks
    commands = {
        "--resume on a read-only disk": ["simulate", "--resume", str(run)],
        "personalize on a read-only run": ["personalize", "--run", str(run)],
    }
    for name, command in commands.items():
        started = time.perf_counter()
        done = subprocess.run([*FEDTYPE, *command], capture_output=True, text=True)
        checks.append({"check": name, "status": done.returncode,
                       "seconds": round(time.perf_counter() - started, 1),
                       "stderr": done.stderr.strip(),
                       "ok": done.returncode == 2 and _one_line(done.stderr)
                       and "read-only" in done.stderr})  # fmt: skip
    return checks
