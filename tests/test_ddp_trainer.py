"""`fedtype central --workers 2` end to end: the trainer under DDP on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import central_argv

from cli.main import main
from models.config import ModelConfig
from models.model import NextWordModel
from models.rundir import RunDir


def test_cli_central_two_workers_saves_metrics_and_counts_bytes(
    tmp_path: Path, corpus_file: str
) -> None:
    # Prepare
    out = tmp_path / "run"
    argv = central_argv(out, corpus_file, workers=2, max_steps=6, eval_every=3)
    # Execute
    status = main(argv)
    # Assert
    assert status == 0
    run = RunDir(out)
    records = run.read_metrics()
    assert [r["step"] for r in records] == [3, 6]
    assert all(r["world_size"] == 2 for r in records)
    # Bytes by hand: DDP's initial broadcast of the weights to the one other
    # worker, then per step a ring all-reduce of every float32 gradient
    # (2 (W-1) = 2 payloads) and of the float64 target count (2 x 8 bytes).
    config = run.read_config()
    model = NextWordModel(ModelConfig(**config["model"]))
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert records[-1]["bytes_total"] == weights + 6 * (2 * weights + 16)
    assert records[-1]["tokens_total"] > records[0]["tokens_total"] > 0
    assert records[-1]["heldout"]["num_messages"] > 0
    assert config["kind"] == "central" and config["workers"] == 2
    assert run.checkpoint_steps()[-1] == 6


def test_torchrun_entry_trains_a_created_run_without_higher_layers(
    tmp_path: Path, corpus_file: str
) -> None:
    # Prepare: the run directory alone, as before a torchrun job.
    out = tmp_path / "run"
    argv = ["central", "--out", str(out), "--create-only", "--corpus", corpus_file]
    argv += ["--max-steps", "2", "--eval-every", "2", "--batch-size", "16"]
    argv += ["--embed-dim", "16", "--hidden-dim", "32"]
    assert main(argv) == 0
    assert RunDir(out).read_metrics() == []
    script = (
        "import runpy, sys\n"
        f"sys.argv = ['central', {str(out)!r}, '--threads', '1']\n"
        "try:\n"
        "    runpy.run_module('central', run_name='__main__')\n"
        "except SystemExit as stop:\n"
        "    higher = {m.split('.')[0] for m in sys.modules} & "
        "{'cli', 'coordinator', 'device_sim', 'tui'}\n"
        "    print(stop.code, sorted(higher))\n"
    )
    # Execute: one worker (world size 1), as torchrun would start it.
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    # Assert
    assert done.stdout.splitlines()[-1] == "0 []", done.stderr
    assert [r["step"] for r in RunDir(out).read_metrics()] == [2]


def test_torchrun_entry_names_a_missing_run_and_exits_2(tmp_path: Path) -> None:
    # Execute
    done = subprocess.run(
        [sys.executable, "-m", "central", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        check=False,
    )
    # Assert
    assert done.returncode == 2
    assert "central worker: error:" in done.stderr and "none" in done.stderr


def test_cli_central_resume_counts_the_startup_broadcast_once(
    tmp_path: Path, corpus_file: str
) -> None:
    # Prepare: a 2-worker job killed (-9, the whole process group) once step 5 is
    # saved, long before its 30 steps are done
    out = tmp_path / "run"
    argv = central_argv(out, corpus_file, workers=2, max_steps=30, eval_every=5)
    job = subprocess.Popen(
        [sys.executable, "-m", "cli.main", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    metrics = out / "metrics.jsonl"
    while job.poll() is None and not (metrics.exists() and metrics.read_text()):
        time.sleep(0.1)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    killed_at = RunDir(out).read_metrics()[-1]["step"]

    # Execute
    status = main(["central", "--resume", str(out), "--workers", "2", "--threads", "1"])

    # Assert: one broadcast (DDP's start-up) and 30 steps' all-reduces, as in
    # the uninterrupted run; the resume's own start-up is not counted again
    run = RunDir(out)
    model = NextWordModel(ModelConfig(**run.read_config()["model"]))
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert killed_at < 30
    assert status == 0
    assert run.read_metrics()[-1]["bytes_total"] == weights + 30 * (2 * weights + 16)
