"""The one-run privacy audit: the bound's arithmetic and a small audited run."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import NewSimulation, small_federation

from coordinator.measure.audit import (
    AuditError,
    audit,
    audit_at,
    epsilon_lower_bound,
    guess_grid,
    guesses,
    p_value,
)
from coordinator.measure.audit_run import (
    CANARY_PREFIX,
    AuditReport,
    CanaryUsers,
    audit_simulation,
)
from coordinator.privacy.dp import DPConfig
from coordinator.privacy.privacy_config import PrivacyConfig
from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer
from device_sim.config import LocalTrainingConfig


def test_p_value_all_correct_at_epsilon_zero_adds_the_delta_term() -> None:
    # Prepare: 10 of 10 right at eps 0 (q = 1/2): f(10) = 1/1024, and the delta
    # term's max over i of (f(10 - i) - f(10)) / i is at i = 6:
    # (10 + 45 + 120 + 210 + 252 + 210) / 1024 / 6 = 847 / 6144.
    expected = 1 / 1024 + 2 * 10 * 0.001 * 847 / 6144  # 0.0037337...

    # Execute
    p = p_value(10, 10, 10, epsilon=0.0, delta=0.001)

    # Assert
    assert p == pytest.approx(expected, rel=1e-12)
    assert p == pytest.approx(0.00373372, abs=1e-8)


def test_epsilon_lower_bound_all_correct_is_the_closed_form() -> None:
    # Prepare: with delta 0 and every guess right, P[W >= r] = q^r = beta gives
    # q = 0.05^(1/10) = 0.741134 and eps = ln(q / (1 - q)) = 1.051873.

    # Execute
    bound = epsilon_lower_bound(10, 10, 10, delta=0.0, beta=0.05)
    hundred = epsilon_lower_bound(100, 100, 100, delta=0.0, beta=0.05)

    # Assert: 0.05^(1/100) = 0.970487, ln(0.970487 / 0.029513) = 3.492965.
    assert bound == pytest.approx(1.051873, abs=1e-5)
    assert hundred == pytest.approx(3.492965, abs=1e-5)


def test_epsilon_lower_bound_zero_correct_or_chance_is_zero() -> None:
    # Execute
    none_right = epsilon_lower_bound(100, 20, 0, delta=1e-5)
    half_right = epsilon_lower_bound(100, 20, 10, delta=1e-5)

    # Assert
    assert (none_right, half_right) == (0.0, 0.0)


def test_epsilon_lower_bound_grows_with_correct_and_shrinks_with_delta() -> None:
    # Execute
    bounds = [epsilon_lower_bound(1000, 200, v, delta=1e-5) for v in (150, 180, 200)]
    pure = epsilon_lower_bound(1000, 1000, 1000, delta=0.0)
    approximate = epsilon_lower_bound(1000, 1000, 1000, delta=1e-5)

    # Assert: the delta term can only weaken what the guesses prove.
    assert 0 < bounds[0] < bounds[1] < bounds[2]
    assert pure == pytest.approx(math.log(0.05**0.001 / (1 - 0.05**0.001)), abs=1e-5)
    assert approximate < pure


def test_epsilon_lower_bound_refuses_impossible_counts() -> None:
    # Execute / Assert
    with pytest.raises(AuditError, match="correct <= guesses"):
        epsilon_lower_bound(10, 4, 5, delta=0.0)
    with pytest.raises(AuditError, match="beta"):
        epsilon_lower_bound(10, 4, 4, delta=0.0, beta=1.0)


def test_guesses_take_the_highest_in_and_the_lowest_out() -> None:
    # Execute
    made = guesses([0.3, 0.9, 0.1, 0.5, 0.5], k_plus=2, k_minus=1)

    # Assert: ties (0.5, 0.5) break by position.
    assert made.tolist() == [0, 1, -1, 1, 0]


def test_audit_at_counts_right_guesses_both_ways() -> None:
    # Prepare: guesses in = canaries 1, 3; out = canary 2 and 0 ... (k- = 2).
    scores = [0.3, 0.9, 0.1, 0.5, 0.4]
    included = [False, True, True, True, False]

    # Execute
    result = audit_at(scores, included, k_plus=2, k_minus=2, delta=0.0)

    # Assert: in {1, 3} both right; out {2, 0}: 0 right, 2 wrong.
    assert (result.correct, result.guesses) == (3, 4)
    assert result.epsilon_lower_bound == epsilon_lower_bound(5, 4, 3, delta=0.0)


def test_audit_shares_beta_over_the_grid() -> None:
    # Prepare: perfectly separated scores for 40 canaries.
    included = [k % 2 == 0 for k in range(40)]
    scores = [1.0 if i else 0.0 for i in included]

    # Execute
    result = audit(scores, included, delta=0.0)

    # Assert: k = 20 (all guessed, all right) wins, at 0.05 / 5 points.
    assert guess_grid(40) == [1, 2, 4, 8, 20]
    assert (result.k_plus, result.correct, result.beta) == (20, 40, 0.01)
    expected = math.log(0.01 ** (1 / 40) / (1 - 0.01 ** (1 / 40)))
    assert result.epsilon_lower_bound == pytest.approx(expected, abs=1e-5)


def test_canary_users_are_seeded_and_only_included_ones_join(
    small_splits: CorpusSplits, tokenizer: WordTokenizer
) -> None:
    # Execute
    users = CanaryUsers.make(count=30, repeats=3, seed=5, tokenizer=tokenizer)
    again = CanaryUsers.make(count=30, repeats=3, seed=5, tokenizer=tokenizer)
    splits = users.add_to(small_splits)

    # Assert
    assert users == again
    added = {
        u: h for u, h in splits.training_users.items() if u.startswith(CANARY_PREFIX)
    }
    assert len(added) == sum(users.included) and 0 < len(added) < 30
    for canary, included in zip(users.canaries, users.included, strict=True):
        (user,) = canary.client_ids
        assert (user in added) == included
        if included:
            assert added[user].train == (canary.text,) * 3
    assert len(small_splits.training_users) + len(added) == len(splits.training_users)


def test_audit_of_a_small_run_stays_below_the_accounted_epsilon(
    tmp_path: Path,
    new_simulation: NewSimulation,
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
) -> None:
    # Prepare: 60 canary users (16 copies each) beside the 30 real ones, 3 rounds
    # of 30; real phones take 2 local steps so that the run takes seconds.
    users = CanaryUsers.make(count=60, repeats=16, seed=0, tokenizer=tokenizer)
    splits = users.add_to(small_splits)
    base = small_federation(
        rounds=3,
        clients_per_round=30,
        eval_every=0,
        local=LocalTrainingConfig(max_local_steps=2),
    )
    dp = DPConfig(clip_norm=0.5, expected_clients=30)
    privacy = PrivacyConfig(
        dp=dp, target_epsilon=1.0, calibrate_noise=True, attack_phones=0
    )
    fedavg = replace(base.strategy, name="fedavg", server_lr=1.0)
    runs = {
        "none": base,
        "dp": replace(base, strategy=fedavg, privacy=privacy),
    }

    # Execute: with the largest one-round drop as the score (the default,
    # the total drop, gets 23 of these 24 right).
    reports = {
        name: audit_simulation(
            new_simulation(tmp_path / name, federation, splits=splits),
            users,
            score="max-drop",
        )
        for name, federation in runs.items()
    }

    # Assert: unprotected, every one of the 2 x 12 guesses is right (seeded,
    # no noise), which proves more than DP's epsilon of 1: a DP run that leaked
    # as much would fail. DP's bound stays at or below its accounted epsilon.
    none, private = reports["none"], reports["dp"]
    assert none.epsilon == math.inf
    assert (none.result.correct, none.result.guesses) == (24, 24)
    assert none.result.epsilon_lower_bound > 1.5
    assert private.epsilon == pytest.approx(1.0, abs=0.01) and private.rounds == 3
    assert not private.violated
    assert private.result.epsilon_lower_bound <= private.epsilon


def test_audit_report_is_violated_only_above_the_accounted_epsilon() -> None:
    # Prepare: 40 of 40 right at delta 0 proves 2.10 at the 5-point grid's
    # level, 0.01: ln(q / (1 - q)) with q = 0.01^(1/40).
    result = audit([1.0] * 20 + [0.0] * 20, [True] * 20 + [False] * 20, delta=0.0)

    # Execute
    reports = [
        AuditReport(result=result, epsilon=e, delta=0.0, rounds=1, score="total-drop")
        for e in (2.0, 2.2, math.inf)
    ]

    # Assert
    assert result.epsilon_lower_bound == pytest.approx(2.1036, abs=1e-4)
    assert [r.violated for r in reports] == [True, False, False]
