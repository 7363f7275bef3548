"""Results printed where a user looks: epsilon on DP round lines, the default
noise said aloud, and the commands that resume or evaluate an interrupted run."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

import cli.train_cmd
from cli.main import build_parser, main, resume_hint
from cli.privacy_options import default_noise_note
from cli.run_cmds import evaluation_texts
from cli.simulate_cmd import _summary, epsilon_text
from corpora.corpus import CorpusSplits
from corpora.samples import heldout_sample


def test_epsilon_text_rounds_epsilon_and_names_delta() -> None:
    # Prepare: the figures a DP round's metrics line holds
    record = {"epsilon": 8.30958, "delta": 1e-5}

    # Execute / Assert
    assert epsilon_text(record) == "ε 8.31 (δ 1e-05)"
    assert epsilon_text({"train_loss": 7.0}) is None


def test_summary_of_a_dp_round_ends_with_its_epsilon() -> None:
    # Prepare
    record = {
        "server_round": 3,
        "abandoned": False,
        "reported": 4,
        "selected": 5,
        "rejected": 0,
        "train_loss": 7.0554,
        "epsilon": 7.0774,
        "delta": 1e-5,
    }

    # Execute
    line = _summary(record)

    # Assert
    assert line == "round 3: 4/5 reported, 0 rejected, loss 7.055, ε 7.08 (δ 1e-05)"


def _simulate_args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["simulate", "--out", "x", *flags])


def test_default_noise_note_says_z_when_dp_clip_comes_alone() -> None:
    # Execute
    alone = default_noise_note(_simulate_args("--dp-clip", "0.5"))
    given = default_noise_note(
        _simulate_args("--dp-clip", "0.5", "--noise-multiplier", "0.8")
    )
    none = default_noise_note(_simulate_args())

    # Assert: z = 1 on a clip of 0.5 is noise of stddev 0.5 on the sum
    assert alone is not None
    assert "default noise z = 1 is added (stddev 1 x 0.5 on the sum)" in alone
    assert (given, none) == (None, None)


def test_resume_hint_only_once_the_run_directory_exists(tmp_path: Path) -> None:
    # Prepare: one run directory written, one never begun
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    args = build_parser().parse_args(["simulate", "--resume", str(run)])
    fresh = build_parser().parse_args(["train", "--out", str(tmp_path / "none")])

    # Execute
    hint = resume_hint(args)

    # Assert
    assert hint == (
        f"resume it: fedtype simulate --resume {run}\n"
        f"evaluate it: fedtype evaluate --run {run}"
    )
    assert resume_hint(fresh) is None


def test_main_after_ctrl_c_prints_the_resume_command(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Prepare: a train run whose training is interrupted once its directory exists
    out = tmp_path / "run"

    def interrupted(args: argparse.Namespace) -> int:
        out.mkdir()
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.train_cmd, "run_train", interrupted)

    # Execute
    code = main(["train", "--out", str(out)])

    # Assert
    assert code == 130
    assert capsys.readouterr().err.splitlines() == [
        "fedtype train: interrupted",
        f"resume it: fedtype train --resume {out}",
        f"evaluate it: fedtype evaluate --run {out}",
    ]


def test_evaluate_texts_are_the_central_runs_own_sets(
    small_splits: CorpusSplits,
) -> None:
    # Prepare: a central run's settings
    from central.evaluation import evaluation_sets

    training = {"seed": 3, "heldout_messages": 50, "future_messages": 40,
                "future_messages_per_user": 5}  # fmt: skip

    # Execute
    config = {"kind": "central", "training": training}
    sets = evaluation_texts(config, small_splits, None)

    # Assert: the very texts its training evaluated on
    expected = evaluation_sets(
        small_splits, seed=3, heldout_messages=50, future_messages=40,
        future_messages_per_user=5,
    )  # fmt: skip
    assert sets == {
        "held-out users": expected["heldout"],
        "future text": expected["future"],
    }


def test_evaluate_texts_of_a_sharded_fleet_are_its_cohorts(
    small_splits: CorpusSplits,
) -> None:
    # Prepare: a federated run of two-message shards, and its fleet
    from coordinator.config import FederationConfig
    from coordinator.run.evaluation import future_cohort
    from device_sim.config import FleetConfig
    from device_sim.fleet import Fleet

    federation = FederationConfig(
        seed=2, future_messages=30, future_messages_per_phone=3,
        fleet=FleetConfig(messages_per_phone=2),
    )  # fmt: skip
    fleet = Fleet.from_splits(small_splits, federation.fleet, seed=2)
    cohort = future_cohort(fleet, federation)
    config = {"kind": "federated", "federation": dataclasses.asdict(federation)}

    # Execute
    sets = evaluation_texts(config, small_splits, None)

    # Assert: as many future texts as the cohort's phones hold
    assert len(sets["future text"]) == cohort.num_messages
    assert len(sets["held-out users"]) == len(
        heldout_sample(small_splits, federation.heldout_messages)
    )


def test_progress_of_a_max_steps_run_counts_steps_not_epochs() -> None:
    # Prepare
    from rich.console import Console

    from central.events import StepDone, TrainingStarted
    from cli.train_cmd import ProgressDisplay

    # 300 steps of a 900-step epoch, a run of 2 epochs of 90 steps, uncapped
    displays = [
        (ProgressDisplay(Console(quiet=True), max_steps=300), 300),
        (ProgressDisplay(Console(quiet=True), max_steps=200), 180),
        (ProgressDisplay(Console(quiet=True)), 900),
    ]

    # Execute
    for display, total in displays:
        display(TrainingStarted(step=0, total_steps=total, world_size=1, shards=1,
                                train_sequences=16 * total))  # fmt: skip
        display(StepDone(step=total, epoch=0, loss=5.0))

    # Assert
    assert [display.bar.tasks[0].description for display, _ in displays] == [
        "steps (--max-steps 300)",
        "epoch 1",
        "epoch 1",
    ]


def test_personalize_gain_row_splits_the_phones_into_rose_same_fell() -> None:
    # Prepare: the figures of issue 28's table (mean top-3 +9.9 %, hurt 18.3 %)
    from cli.personalize_cmd import GAIN_CAPTION, GAIN_COLUMNS, gain_cells

    gain = {"phones": 60, "mean_top1": -0.02, "median_top1": 0.0,
            "mean_top3": 0.099, "median_top3": 0.0, "helped_share": 0.0,
            "hurt_share": 0.183}  # fmt: skip

    # Execute
    cells = gain_cells(gain)

    # Assert: 0 % rose and 18.3 % fell leave 81.7 % unchanged; the caption says
    # the mean is over phones with a global hit and the split counts top-1 only
    # A report without paired counts has no sign-test split ("–").
    assert cells == ["60", "-2.0%", "+0.0%", "+9.9%", "+0.0%", "–", "–", "–",
                     "0.0%", "81.7%", "18.3%"]  # fmt: skip
    assert len(GAIN_COLUMNS) == len(cells) + 1
    assert "at least one hit" in GAIN_CAPTION and "top-1 only" in GAIN_CAPTION
