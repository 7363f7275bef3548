"""Resume after a crash or damage: no dead end, no leftover, nothing saved lost.

Each test copies one finished 4-round run, breaks it as a kill or a bad disk
would, and resumes it with `fedtype simulate --resume`; the resumed run must end
with the uninterrupted run's weights and metrics.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import run_cli, tiny_run_options
from safetensors.torch import load_file, save_file

from cli.main import main
from coordinator.round.robust import ScreenHistory
from coordinator.run import repair, store
from corpora.messages import Message
from models.checkpoint import CheckpointError, load_checkpoint
from models.rundir import RunDir, RunDirError

# Fields that measure the machine, not the run.
WALL_FIELDS = ("wall_seconds", "wall_seconds_total", "eval_seconds")
TINY = tiny_run_options(eval_every=0, max_users=None)


def machine_free(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in WALL_FIELDS} for r in records]


@pytest.fixture(scope="module")
def finished(
    tmp_path_factory: pytest.TempPathFactory, small_messages: list[Message]
) -> tuple[Path, Path]:
    """(corpus, run): a JSONL of the small slice, and a 4-round run on 20 users."""
    folder = tmp_path_factory.mktemp("finished")
    corpus = folder / "slice.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"user": m.user, "text": m.text, "timestamp": m.timestamp})
            + "\n"
            for m in small_messages
        )
    )
    run = folder / "run"
    argv = ["simulate", "--out", str(run), "--corpus", str(corpus), "--rounds", "4"]
    assert main([*argv, "--max-users", "20", *TINY]) == 0
    return corpus, run


@pytest.fixture
def copy(finished: tuple[Path, Path], tmp_path: Path) -> RunDir:
    """A copy of the finished run to break."""
    return RunDir(shutil.copytree(finished[1], tmp_path / "run"))


def same_as_uninterrupted(run: RunDir, finished: tuple[Path, Path]) -> None:
    """The run ended with the uninterrupted run's round-4 weights and metrics."""
    original = RunDir(finished[1])
    assert machine_free(run.read_metrics()) == machine_free(original.read_metrics())
    mine = load_file(str(run.checkpoint_path(4)))
    theirs = load_file(str(original.checkpoint_path(4)))
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert json.loads(run.state_path.read_text())["server_round"] == 4


@pytest.mark.parametrize("damage", ["truncated", "zero-filled", "nan"])
def test_resume_falls_back_from_a_damaged_latest_checkpoint(
    copy: RunDir,
    finished: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    damage: str,
) -> None:
    # Prepare
    latest = copy.checkpoint_path(4)
    if damage == "truncated":
        latest.write_bytes(latest.read_bytes()[:1000])
    elif damage == "zero-filled":
        latest.write_bytes(bytes(latest.stat().st_size))
    else:
        tensors = load_file(str(latest))
        first = next(iter(tensors))
        tensors[first] = torch.full_like(tensors[first], float("nan"))
        save_file(tensors, str(latest), metadata=json.loads("{}") or None)

    # Execute
    status, out = run_cli(["simulate", "--resume", str(copy.path)], capsys, stdout=True)

    # Assert: round 4 ran again from round 3; the damaged file is kept aside
    assert status == 0, out
    assert "resuming from round 3, the last intact one" in " ".join(out.split())
    assert (copy.checkpoint_dir / "step_000004.safetensors.damaged").exists()
    same_as_uninterrupted(copy, finished)


def test_nan_weights_are_refused_by_suggest_and_evaluate(
    copy: RunDir, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    latest = copy.checkpoint_path(4)
    _, _, metadata = load_checkpoint(latest)
    tensors = load_file(str(latest))
    tensors = {k: torch.full_like(v, float("nan")) for k, v in tensors.items()}
    save_file(tensors, str(latest), metadata=metadata)

    # Execute
    with pytest.raises(CheckpointError, match="non-finite value"):
        load_checkpoint(latest)
    suggest = run_cli(
        ["suggest", "--run", str(copy.path), "how are "], capsys, stdout=True
    )
    evaluate = run_cli(
        ["evaluate", "--run", str(copy.path), "--limit", "3"], capsys, stdout=True
    )

    # Assert
    for status, out in (suggest, evaluate):
        assert status == 2 and "non-finite value(s)" in out and "Traceback" not in out


def test_resume_removes_temporary_files_of_killed_writes(
    copy: RunDir, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: what a kill during a checkpoint or state write leaves (no such pid)
    stray = [
        copy.checkpoint_dir / ".step_000005.safetensors.tmp999999999",
        copy.path / ".state.json.tmp999999999",
    ]
    for path in stray:
        path.write_bytes(b"half a file")

    # Execute
    status, out = run_cli(["simulate", "--resume", str(copy.path), "--rounds", "5"],
                          capsys, stdout=True)  # fmt: skip

    # Assert
    assert status == 0 and "removed 2 temporary file(s)" in out
    assert not any(path.exists() for path in stray)
    assert not list(copy.path.rglob("*.tmp*"))


def test_resume_rebuilds_a_deleted_state_json(
    copy: RunDir, finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    copy.state_path.unlink()

    # Execute: a library resume says what is wrong; the CLI repairs it
    with pytest.raises(RunDirError, match="missing, though rounds up to 4"):
        store.read_progress(copy)
    status, out = run_cli(["simulate", "--resume", str(copy.path)], capsys, stdout=True)

    # Assert: rebuilt for round 3 (round 4's clock needs round 5's line), round 4
    # replayed
    assert status == 0
    assert "rebuilt it for round 3" in " ".join(out.split())
    same_as_uninterrupted(copy, finished)


def test_resume_moves_damaged_metrics_aside_and_keeps_them(
    copy: RunDir, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: a garbage middle line
    lines = copy.metrics_path.read_text().splitlines(keepends=True)
    damaged = "".join([lines[0], "{garbage\n", *lines[1:]])
    copy.metrics_path.write_text(damaged)

    # Execute
    status, out = run_cli(["simulate", "--resume", str(copy.path)], capsys, stdout=True)

    # Assert: the damaged file is kept byte for byte; the readable lines stay
    aside = copy.path / "metrics.jsonl.damaged"
    assert status == 0 and "1 unreadable line(s) (2)" in " ".join(out.split())
    assert aside.read_text() == damaged
    assert [r["server_round"] for r in copy.read_metrics()] == [1, 2, 3, 4]


def test_resume_of_an_emptied_metrics_file_says_what_is_missing(
    copy: RunDir, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    copy.metrics_path.write_text("")

    # Execute
    status, out = run_cli(["simulate", "--resume", str(copy.path), "--rounds", "5"],
                          capsys, stdout=True)  # fmt: skip

    # Assert
    assert status == 0
    assert "holds no line for 4 of the 4 saved rounds" in " ".join(out.split())
    assert [r["server_round"] for r in copy.read_metrics()] == [5]


@pytest.mark.parametrize("how", ["--resume", "--out"])
def test_a_run_killed_before_round_0_starts_again(
    finished: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    how: str,
) -> None:
    # Prepare: config.json and the tokenizer written, round 0 not yet saved
    run = RunDir(tmp_path / "run")
    run.checkpoint_dir.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(finished[1] / name, run.path / name)
    (run.checkpoint_dir / ".step_000000.safetensors.tmp999999999").write_bytes(b"x")
    config = json.loads(run.config_path.read_text())

    # Execute
    if how == "--resume":
        argv = ["simulate", "--resume", str(run.path), "--rounds", "1"]
    else:
        argv = ["simulate", "--out", str(run.path), "--rounds", "1", "--corpus",
                config["corpus"]["source"], "--max-users", "20", *TINY]  # fmt: skip
    status, out = run_cli(argv, capsys, stdout=True)

    # Assert
    assert status == 0, out
    assert [r["server_round"] for r in run.read_metrics()] == [1]
    assert not list(run.path.rglob("*.tmp*"))


def test_resume_refuses_new_run_flags_and_fewer_rounds(
    copy: RunDir, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    before = copy.config_path.read_text()

    # Execute
    flags = run_cli(["simulate", "--resume", str(copy.path), "--strategy", "fedadam",
                     "--clients-per-round", "9"], capsys, stdout=True)  # fmt: skip
    fewer = run_cli(
        ["simulate", "--resume", str(copy.path), "--rounds", "3"], capsys, stdout=True
    )
    same = run_cli(
        ["simulate", "--resume", str(copy.path), "--rounds", "4"], capsys, stdout=True
    )

    # Assert: nothing changed; --rounds 4 is nothing to do
    assert (
        flags[0] == 2
        and "--clients-per-round, --strategy: settings of a new run" in flags[1]
    )
    assert fewer[0] == 2 and "has already completed 4 rounds" in fewer[1]
    assert same[0] == 0 and "4 rounds saved" in " ".join(same[1].split())
    assert copy.config_path.read_text() == before


def test_resume_refuses_a_changed_corpus_and_works_from_anywhere(
    finished: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: a run on its own copy of the corpus, given by a relative path
    monkeypatch.chdir(tmp_path)
    shutil.copy(finished[0], "mine.jsonl")
    argv = ["simulate", "--out", "run", "--corpus", "mine.jsonl", "--rounds", "1"]
    assert run_cli([*argv, "--max-users", "20", *TINY], capsys, stdout=True)[0] == 0
    monkeypatch.chdir("/")

    # Execute
    elsewhere = run_cli(["simulate", "--resume", str(tmp_path / "run"), "--rounds",
                         "2"], capsys, stdout=True)  # fmt: skip
    with (tmp_path / "mine.jsonl").open("a") as handle:
        handle.write('{"user": "eve", "text": "a new message", "timestamp": 1}\n')
    changed = run_cli(["simulate", "--resume", str(tmp_path / "run"), "--rounds",
                       "3"], capsys, stdout=True)  # fmt: skip

    # Assert
    assert elsewhere[0] == 0, elsewhere[1]
    assert changed[0] == 2 and "the corpus changed since the run" in changed[1]


def test_resume_repair_leaves_other_kinds_of_run_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: a central run's directory, with a checkpoint but no state.json
    run = RunDir(tmp_path / "central")
    run.checkpoint_dir.mkdir(parents=True)
    run.config_path.write_text('{"kind": "central"}')
    (run.checkpoint_dir / "step_000010.safetensors").write_bytes(b"weights")

    # Execute
    status, out = run_cli(["simulate", "--resume", str(run.path)], capsys, stdout=True)

    # Assert
    assert status == 2 and "a 'central' run, not a federated one" in out
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == [
        "step_000010.safetensors"
    ]


def test_state_json_keeps_the_screen_history(tmp_path: Path) -> None:
    # Prepare
    run = RunDir(tmp_path)
    history = ScreenHistory(norms=(1.0, 2.5))

    # Execute
    store.write_progress(run, server_round=3, clock=60.0, totals=store.Totals(),
                         screen=history)  # fmt: skip
    found = store.read_screen_history(run)
    store.write_progress(run, server_round=3, clock=60.0, totals=store.Totals())

    # Assert
    assert found == history
    assert store.read_screen_history(run) == ScreenHistory()
    assert store.read_progress(run)[:2] == (3, 60.0)


def test_progress_at_reads_a_protected_lines_totals_from_its_truth() -> None:
    # Prepare: a protected run files tokens_total as the simulation's truth.
    line = {
        "bytes_total": 300,
        "wall_seconds_total": 2.5,
        "simulation_truth": {"tokens_total": 1234},
    }
    records = {1: line, 2: {"started_at": 3600.0}}

    # Execute
    progress = repair._progress_at(1, records, 0.0)

    # Assert
    assert progress == (3600.0, store.Totals(1234, 300, 2.5))
