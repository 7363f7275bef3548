"""`--canaries K` end to end: planted at load, kept in canaries.json, measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import central_argv

from cli.main import main
from models.rundir import RunDir

COMMON = ["--max-users", "30", "--clients-per-round", "4", "--eval-every", "1",
          "--threads", "1", "--canaries", "1"]  # fmt: skip


def test_simulate_canaries_write_exposure_and_survive_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    out = str(tmp_path / "run")

    # Execute: one round, a resume to two, then a tampered canaries.json.
    first = main(["simulate", "--out", out, "--rounds", "1", *COMMON])
    saved = json.loads((tmp_path / "run" / "canaries.json").read_text())
    second = main(["simulate", "--resume", out, "--rounds", "2"])
    kept = json.loads((tmp_path / "run" / "canaries.json").read_text())
    tampered = dict(saved, seed=saved["seed"] + 1)
    (tmp_path / "run" / "canaries.json").write_text(json.dumps(tampered))
    refused = main(["simulate", "--resume", out, "--rounds", "3"])

    # Assert: default repeats (1, 4, 16) x 1 canary, 5 controls; one line per eval.
    assert (first, second, refused) == (0, 0, 2)
    assert kept == saved
    assert len(saved["canaries"]) == 3 and len(saved["controls"]) == 5
    records = RunDir(out).read_metrics()
    assert [r["server_round"] for r in records if "exposure" in r] == [1, 2]
    assert "records other canaries" in capsys.readouterr().err


def test_simulate_canaries_out_of_range_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    code = main(["simulate", "--out", str(tmp_path / "x"), "--canaries", "5000"])

    # Assert
    assert code == 2 and "--canaries" in capsys.readouterr().err


def test_central_canaries_write_exposure_and_survive_resume(
    tmp_path: Path, corpus_file: str
) -> None:
    # Prepare
    out = tmp_path / "central"
    argv = central_argv(out, corpus_file, workers=1, max_steps=2, eval_every=2)
    argv += ["--canaries", "1"]

    # Execute: a run, then a resume that checks canaries.json (nothing left to do).
    first = main(argv)
    saved = (out / "canaries.json").read_text()
    again = main(["central", "--resume", str(out), "--workers", "1"])

    # Assert
    assert (first, again) == (0, 0)
    assert (out / "canaries.json").read_text() == saved
    records = RunDir(out).read_metrics()
    assert set(records[-1]["exposure"]["by_repeats"]) == {"1", "4", "16"}
