"""The privacy accountant: epsilon as dp_accounting composes it, kept on resume."""

from __future__ import annotations

import json

import dp_accounting
import pytest
from dp_accounting import rdp

from coordinator.privacy.accountant import (
    PrivacyAccountant,
    RoundRecord,
    SimulatedPrivacy,
    epsilon_for,
    noise_for_epsilon,
)

DELTA = 1e-5


def test_accountant_epsilon_equals_dp_accounting_composed_by_hand() -> None:
    # Prepare: 3 rounds at (0.1, 1.0), then 2 at (0.2, 1.5).
    rounds = [(0.1, 1.0)] * 3 + [(0.2, 1.5)] * 2
    accountant = PrivacyAccountant()
    by_hand = rdp.RdpAccountant()

    # Execute
    for q, z in rounds:
        accountant.record_round(q, z)
        by_hand.compose(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
        )

    # Assert
    assert accountant.epsilon(DELTA) == pytest.approx(by_hand.get_epsilon(DELTA))
    assert accountant.rounds == 5
    assert accountant.records == (RoundRecord(0.1, 1.0, 3), RoundRecord(0.2, 1.5, 2))


def test_accountant_starts_at_zero_and_grows_with_rounds() -> None:
    # Prepare
    accountant = PrivacyAccountant()
    epsilons = [accountant.epsilon(DELTA)]

    # Execute
    for _ in range(6):
        accountant.record_round(0.05, 1.1)
        epsilons.append(accountant.epsilon(DELTA))

    # Assert
    assert epsilons[0] == 0.0
    assert all(b > a for a, b in zip(epsilons, epsilons[1:], strict=False))


def test_accountant_without_noise_has_no_privacy() -> None:
    # Prepare
    accountant = PrivacyAccountant()

    # Execute
    accountant.record_round(0.1, 0.0)

    # Assert
    assert accountant.epsilon(DELTA) == float("inf")


def test_accountant_round_trips_through_json() -> None:
    # Prepare
    accountant = PrivacyAccountant()
    for q, z in [(0.1, 1.0), (0.1, 1.0), (0.3, 0.9), (0.1, 1.0)]:
        accountant.record_round(q, z)

    # Execute
    restored = PrivacyAccountant.from_dict(json.loads(json.dumps(accountant.to_dict())))
    restored.record_round(0.1, 1.0)
    accountant.record_round(0.1, 1.0)

    # Assert: the same rounds, the same epsilon, and it keeps counting.
    assert restored.records == accountant.records
    assert restored.rounds == 5
    assert restored.epsilon(DELTA) == pytest.approx(accountant.epsilon(DELTA))


def test_accountant_from_dict_rejects_foreign_state() -> None:
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match="RDP"):
        PrivacyAccountant.from_dict({"accountant": "pld", "records": []})


def test_rounds_within_is_the_last_count_under_the_target() -> None:
    # Prepare: 10 rounds already spent.
    accountant = PrivacyAccountant()
    for _ in range(10):
        accountant.record_round(0.1, 1.0)
    target = 5.0

    # Execute
    more = accountant.rounds_within(
        target, DELTA, sampling_probability=0.1, noise_multiplier=1.0
    )

    # Assert: 10 + more rounds fit, one more would not.
    def total(rounds: int) -> float:
        return epsilon_for(
            sampling_probability=0.1, noise_multiplier=1.0, rounds=rounds, delta=DELTA
        )

    assert more > 0
    assert total(10 + more) <= target
    assert total(10 + more + 1) > target


def test_rounds_within_is_zero_once_the_budget_is_spent() -> None:
    # Prepare
    accountant = PrivacyAccountant()
    for _ in range(5):
        accountant.record_round(0.5, 0.5)

    # Execute
    more = accountant.rounds_within(
        0.5, DELTA, sampling_probability=0.5, noise_multiplier=0.5
    )

    # Assert
    assert accountant.epsilon(DELTA) > 0.5
    assert more == 0


def test_noise_for_epsilon_fits_the_target_tightly() -> None:
    # Prepare
    target, rounds, q = 2.0, 100, 0.02

    # Execute
    z = noise_for_epsilon(target, DELTA, sampling_probability=q, rounds=rounds)

    # Assert: z fits; 1 % less noise does not.
    def spent(noise: float) -> float:
        return epsilon_for(
            sampling_probability=q, noise_multiplier=noise, rounds=rounds, delta=DELTA
        )

    assert spent(z) <= target
    assert spent(z * 0.99) > target


def test_simulated_privacy_is_labelled_and_matches_its_sampling() -> None:
    # Prepare: a million users, cohorts of 10,000 -> q = 0.01.

    # Execute
    simulated = SimulatedPrivacy(
        population=1_000_000,
        cohort_size=10_000,
        noise_multiplier=1.0,
        rounds=200,
        delta=1e-6,
    )

    # Assert
    assert simulated.simulated is True
    assert simulated.sampling_probability == 0.01
    assert simulated.epsilon == pytest.approx(
        epsilon_for(
            sampling_probability=0.01, noise_multiplier=1.0, rounds=200, delta=1e-6
        )
    )
