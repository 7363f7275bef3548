"""DP settings at their edges: ranges, strict JSON, and a target epsilon kept.

Degenerate settings are one line and exit status 2 naming the option and its
range; metrics.jsonl is strict JSON; a `--target-epsilon` run runs the rounds it
planned (each round's z chosen within the budget left), and when the budget
does stop a run it says why, after evaluating the model.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import NewSimulation, dp_epsilon, run_cli
from test_private_round import dp_federation

from coordinator.events import BudgetSpent, Event
from coordinator.privacy.accountant import PrivacyAccountant
from coordinator.privacy.budget import PrivacyBudgetSpent, round_config
from coordinator.privacy.dp import DPConfig
from coordinator.privacy.privacy_config import PrivacyConfigError, calibrated_noise
from coordinator.protections.state import PrivacyState
from models.rundir import RunDir

TINY = ["--hidden-dim", "8", "--embed-dim", "8", "--threads", "1"]


def simulate(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit status and output of `fedtype simulate ARGV`, one line per message."""
    status, output = run_cli(["simulate", *argv], capsys, stdout=True)
    return status, " ".join(output.split())


def test_help_shows_the_dp_ranges(capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare / Execute
    status, text = simulate(["--help"], capsys)

    # Assert
    assert status == 0
    for shown in ("[0.1, 100]", "[0.05, 100]", "[0.0001, 100]", "1,000,000,000]"):
        assert shown in text


def test_metrics_lines_are_strict_json(tmp_path: Path) -> None:
    # Prepare: an infinite epsilon and a NaN loss, as a run without noise gives.
    run = RunDir(tmp_path)
    record = {"epsilon": math.inf, "train_loss": math.nan, "nested": [-math.inf, 1.5]}

    # Execute
    run.append_metrics(record)
    run.rewrite_metrics([record, *run.read_metrics()])

    # Assert: null, never a bare Infinity or NaN.
    for line in run.metrics_path.read_text().splitlines():
        parsed = json.loads(line, parse_constant=lambda name: pytest.fail(name))
        assert parsed == {"epsilon": None, "train_loss": None, "nested": [None, 1.5]}


def test_target_epsilon_runs_every_planned_round_within_the_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: the reproduction (on a small model).
    out = tmp_path / "run"
    argv = ["--out", str(out), "--rounds", "3", "--clients-per-round", "8",
            "--max-users", "60", "--dp-clip", "0.5", "--target-epsilon", "8",
            *TINY]  # fmt: skip

    # Execute
    status, text = simulate(argv, capsys)

    # Assert: all 3 rounds ran, the last one spent nearly all of the budget and
    # no more, and it was evaluated (so `fedtype compare` has a figure).
    assert status == 0, text
    records = RunDir(out).read_metrics()
    assert [r["server_round"] for r in records] == [1, 2, 3]
    assert 7.5 < records[-1]["epsilon"] <= 8.0
    assert "heldout" in records[-1]
    assert all(r["noise_source"] == "os" for r in records)


def test_a_spent_budget_is_announced_after_evaluating_the_last_round(
    tmp_path: Path, new_simulation: NewSimulation
) -> None:
    # Prepare: z = 1 fixed, a target between 2 and 3 rounds' epsilon (at q 6/30),
    # evaluation every 10 rounds of 5.
    q = 6 / 30
    target = sum(dp_epsilon(q, 1.0, rounds=r, delta=1e-5) for r in (2, 3)) / 2
    federation = replace(
        dp_federation(6, rounds=5, target_epsilon=target, attack_phones=0),
        eval_every=10,
    )
    events: list[Event] = []
    simulation = new_simulation(tmp_path / "run", federation, on_event=events.append)

    # Execute
    with pytest.raises(PrivacyBudgetSpent):
        while True:
            simulation.run_round()
    simulation.close()

    # Assert: the last round that ran was evaluated though it was not on the
    # schedule, and the stop was announced with its reason.
    records = RunDir(tmp_path / "run").read_metrics()
    assert "heldout" in records[-1]
    assert not any("heldout" in r for r in records[:-1])
    (spent,) = [e for e in events if isinstance(e, BudgetSpent)]
    assert spent.server_round == records[-1]["server_round"]
    assert spent.server_round == 2 and "past the target" in spent.reason


def test_calibrated_noise_divides_by_the_fewest_shares_fraction() -> None:
    # Prepare: z accounted under distributed noise is z·sqrt(k/n).
    dp = DPConfig(clip_norm=0.5, expected_clients=8)
    settings = {"target_epsilon": 4.0, "delta": 1e-5, "sampling_probability": 0.2}

    # Execute
    central = calibrated_noise(dp, **settings, rounds=5)
    half = calibrated_noise(dp, **settings, rounds=5, shares_fraction=0.5)

    # Assert: the shares must carry twice the noise for the same accounted z.
    assert half == pytest.approx(2 * central)
    assert dp_epsilon(0.2, central, rounds=5, delta=1e-5) <= 4.0


def test_round_config_spends_what_is_left_over_the_rounds_left() -> None:
    # Prepare: a 4-round run at q 6/30 with target 6 that has spent 2 rounds at
    # z = 1 (round 3 of 4 is next).
    federation = dp_federation(
        6, rounds=4, target_epsilon=6.0, calibrate_noise=True, delta=1e-5
    )
    spent = PrivacyAccountant()
    for _ in range(2):
        spent.record_round(0.2, 1.0)
    state = PrivacyState(spent.to_dict())

    # Execute
    config = round_config(federation, state, pool=30, server_round=3)
    assert config.privacy.dp is not None
    z = config.privacy.dp.noise_multiplier

    # Assert: 2 more rounds at z reach the target and no further (z to 1e-4).
    total = PrivacyAccountant()
    for noise in (1.0, 1.0, z, z):
        total.record_round(0.2, noise)
    assert 5.99 < total.epsilon(1e-5) <= 6.0


def test_round_config_refuses_a_budget_already_spent() -> None:
    # Prepare: 2 rounds at z = 1 spent, the target just below what they cost.
    target = 0.99 * dp_epsilon(0.2, 1.0, rounds=2, delta=1e-5)
    federation = dp_federation(
        6, rounds=4, target_epsilon=target, calibrate_noise=True, delta=1e-5
    )
    spent = PrivacyAccountant()
    for _ in range(2):
        spent.record_round(0.2, 1.0)

    # Execute / Assert
    with pytest.raises(PrivacyConfigError, match="no noise multiplier fits"):
        round_config(federation, PrivacyState(spent.to_dict()), pool=30, server_round=3)
