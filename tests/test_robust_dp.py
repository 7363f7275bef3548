"""Under DP the screen judges each phone by its own report alone (issue 23, 2).

A rule that compares phones (the relative norm rule, the progress rule, the
direction rule, their history) lets one user decide whether another user's
update is counted, so the sensitivity would no longer be the clip bound.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import EVERY_PHONE_ONLINE, NewSimulation
from hypothesis import given, settings
from hypothesis import strategies as st
from screening import stats

from cli.main import main
from coordinator.config import FederationConfig, FederationConfigError
from coordinator.privacy.dp import DPConfig
from coordinator.privacy.privacy_config import PrivacyConfig
from coordinator.round.robust import (
    Rejection,
    ScreenConfig,
    ScreenHistory,
    UpdateStats,
    compares_users,
    screen_stats,
)
from coordinator.round.server_choices import AggregationConfig
from coordinator.run.store import read_screen_history
from device_sim.config import LocalTrainingConfig
from models.rundir import RunDir

# The default phones' bounds (16 steps of lr 1 on gradients clipped to 1), with
# the cross-user rules as DP sets them.
UNDER_DP = ScreenConfig.for_training(
    LocalTrainingConfig(),
    relative=compares_users(secure_aggregation=False, differential_privacy=True),
)


def accepted_ids(reports: list[UpdateStats], config: ScreenConfig) -> list[str]:
    accepted, _, _ = screen_stats(reports, config=config, history=ScreenHistory())
    return accepted


def test_compares_users_only_without_secagg_and_dp() -> None:
    # Execute / Assert
    assert compares_users(secure_aggregation=False, differential_privacy=False)
    assert not compares_users(secure_aggregation=True, differential_privacy=False)
    assert not compares_users(secure_aggregation=False, differential_privacy=True)
    assert not compares_users(secure_aggregation=True, differential_privacy=True)


def test_screen_issue_reproduction_one_phone_flips_another_only_without_dp() -> None:
    # Prepare: the issue's screen (norms, medians of three or more): four phones
    # at 0.20 / 0.30 / 0.34 / 0.36 and v at 1.65; u joins at 0.10.
    plain = ScreenConfig(min_for_norm_check=3)
    under_dp = ScreenConfig(
        min_for_norm_check=3,
        relative=compares_users(secure_aggregation=False, differential_privacy=True),
    )
    others = [stats(f"o{i}", 16, n) for i, n in enumerate((0.20, 0.30, 0.34, 0.36))]
    v, u = stats("v", 32, 1.65), stats("u", 16, 0.10)

    # Execute
    plain_without = accepted_ids([*others, v], plain)
    _, plain_rejected, _ = screen_stats(
        [*others, v, u], config=plain, history=ScreenHistory()
    )
    dp_without = accepted_ids([*others, v], under_dp)
    dp_with = accepted_ids([*others, v, u], under_dp)

    # Assert: median 0.34 -> limit 1.70 >= 1.65; with u the median is
    # (0.30 + 0.34) / 2 = 0.32 -> limit 1.60 < 1.65, so u decides v's fate.
    assert "v" in plain_without
    assert plain_rejected == [Rejection("v", "norm 1.65 > 5 x median 0.32")]
    assert dp_without == ["o0", "o1", "o2", "o3", "v"]
    assert dp_with == ["o0", "o1", "o2", "o3", "v", "u"]


def test_screen_under_dp_keeps_no_history_and_keeps_the_own_bounds() -> None:
    # Prepare: a history a plain run would have left; a phone over its own bound.
    history = ScreenHistory(norms=(0.1, 0.1, 0.1), step_norms=(0.1, 0.1, 0.1))
    reports = [stats("far", 20, 3.0), stats("ok", 16, 0.9), stats("big", 256, 15.0)]

    # Execute
    accepted, rejected, after = screen_stats(reports, config=UNDER_DP, history=history)

    # Assert: 20 examples are 2 steps, at most 2.0; 15 > 5 x 0.1 is kept.
    assert accepted == ["ok", "big"]
    assert [r.client_id for r in rejected] == ["far"]
    assert after == history  # nothing of this round is remembered


report = st.builds(
    UpdateStats,
    client_id=st.just(""),
    num_examples=st.integers(min_value=-2, max_value=400),
    norm=st.one_of(
        st.floats(min_value=0.0, max_value=20.0),
        st.sampled_from([math.nan, math.inf]),
    ),
    finite=st.booleans(),
    problem=st.sampled_from([None, None, None, "shape (4,) != (5,) in tensor 0"]),
    sketch=st.one_of(
        st.none(),
        st.lists(st.floats(min_value=-1.0, max_value=1.0), min_size=4, max_size=4).map(
            np.array
        ),
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    reports=st.lists(report, min_size=1, max_size=9),
    history=st.lists(st.floats(min_value=0.0, max_value=5.0), max_size=12),
    secure=st.booleans(),
)
def test_screen_under_dp_one_phone_never_changes_another_ones_fate(
    reports: list[UpdateStats], history: list[float], secure: bool
) -> None:
    # Prepare: unique ids; the config a DP round builds, with or without SecAgg.
    phones = [
        UpdateStats(str(i), r.num_examples, r.norm, r.finite, r.problem, r.sketch)
        for i, r in enumerate(reports)
    ]
    config = ScreenConfig.for_training(
        LocalTrainingConfig(),
        relative=compares_users(secure_aggregation=secure, differential_privacy=True),
    )
    past = ScreenHistory(norms=tuple(history), step_norms=tuple(history))
    everyone, _, _ = screen_stats(phones, config=config, history=past)

    for left_out in range(len(phones)):
        # Execute: the same round without one phone (or, read backwards, with it)
        rest = [p for i, p in enumerate(phones) if i != left_out]
        accepted, _, _ = screen_stats(rest, config=config, history=past)

        # Assert
        assert set(accepted) == set(everyone) - {str(left_out)}


def test_robust_aggregators_are_refused_under_dp(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    dp = PrivacyConfig(dp=DPConfig(clip_norm=0.5, expected_clients=20))

    # Execute
    with pytest.raises(FederationConfigError, match="sensitivity under DP"):
        FederationConfig(aggregation=AggregationConfig(name="median"), privacy=dp)
    dp_options = ["--dp-clip", "0.5", "--noise-multiplier", "1"]
    out = ["--out", str(tmp_path / "r")]
    code = main(["simulate", *out, *dp_options, "--aggregator", "trimmed-mean"])

    # Assert: one line, exit 2, nothing written.
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "sensitivity under DP is not analysed" in err
    assert not (tmp_path / "r").exists()


def test_dp_round_keeps_no_screen_history(
    tmp_path: Path, new_simulation: NewSimulation
) -> None:
    # Prepare: q = 1 (every one of the phones sampled), one local step each.
    dp = DPConfig(clip_norm=0.5, noise_multiplier=1.0, expected_clients=6)
    federation = FederationConfig(
        rounds=1,
        clients_per_round=6,
        eval_every=0,
        local=LocalTrainingConfig(max_local_steps=1),
        fleet=EVERY_PHONE_ONLINE,
        privacy=PrivacyConfig(dp=dp),
    )
    simulation = new_simulation(tmp_path / "run", federation)

    # Execute
    record = simulation.run_round()
    simulation.close()

    # Assert: no cross-user memory (the line releases no rejections under DP).
    assert record["reported"] > 0
    assert read_screen_history(RunDir(tmp_path / "run")) == ScreenHistory()
