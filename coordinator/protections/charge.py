"""The privacy charge: one DP round recorded in the accountant, once.

Every DP round is recorded in the `PrivacyAccountant` as one Poisson-subsampled
Gaussian release of (q_t, z_eff), q_t = clients_per_round / the phones eligible
when round t starts; the selection then is Poisson among those phones
(`coordinator.round.selection.poisson_select`), as accounted. Eligibility (idle,
charging, Wi-Fi, time zone) depends on a phone's profile and the clock, never on
its text, so the pool is fixed before any data is touched. Real fleets cannot
promise such a sampler, which is why Gboard uses DP-FTRL without amplification
(Xu et al. 2023, arXiv 2305.18465); the amplified epsilon holds for the
simulation, whose sampler we control (docs/privacy.md, "Sampling and
accounting"). A round that sampled phones and released nothing is charged the
same (`charge_unreleased`): epsilon only ever grows.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from coordinator.config import FederationConfig
from coordinator.privacy.accountant import PrivacyAccountant, SimulatedPrivacy
from coordinator.protections.state import PrivacyState


def sampling_probability(config: FederationConfig, pool: int) -> float:
    """q: each phone's chance of being sampled in a DP round from `pool` phones
    (the ones eligible when the round starts)."""
    return min(1.0, config.clients_per_round / max(1, pool))


def charge(
    state: PrivacyState,
    config: FederationConfig,
    *,
    pool: int,
    noise_multiplier: float,
    clip_norm: float | None,
) -> tuple[PrivacyState, dict[str, Any]]:
    """The state after one round of (q, `noise_multiplier`), and its figures:
    epsilon spent so far, q and z (`clip_norm`: the next round's bound)."""
    accountant = state.load_accountant()
    q = sampling_probability(config, pool)
    accountant.record_round(q, noise_multiplier)
    figures = {
        **_spent(accountant, config),
        "noise_multiplier": noise_multiplier,
        "sampling_probability": q,
    }
    return PrivacyState(accountant.to_dict(), clip_norm), figures


def charge_unreleased(
    state: PrivacyState, config: FederationConfig, pool: int
) -> tuple[PrivacyState, dict[str, Any]]:
    """A DP round that sampled phones and then released nothing, charged anyway.

    Whether a round is abandoned (SecAgg short of its threshold, a non-finite
    aggregate; too few valid reports never abandon a DP round) depends on who
    was sampled, so the accountant records it as a full round of (q, z), every
    noise share assumed present: an abandoned round never makes a run look more
    private than it was.
    """
    dp = config.privacy.dp
    assert dp is not None
    z = dp.accounting_noise_multiplier() * config.privacy.noise_scale
    charged, figures = charge(
        state, config, pool=pool, noise_multiplier=z, clip_norm=state.clip_norm
    )
    return charged, {**figures, "charged_unreleased": True}


def _spent(accountant: PrivacyAccountant, config: FederationConfig) -> dict[str, Any]:
    """epsilon spent so far, its delta, and the run's budget when it has one;
    with a simulated deployment its figures apart, under `simulated_privacy`."""
    privacy = config.privacy
    assert privacy.delta is not None
    figures: dict[str, Any] = {
        "epsilon": accountant.epsilon(privacy.delta),
        "delta": privacy.delta,
        "noise_source": privacy.noise_source,
    }
    if privacy.simulated:
        assert privacy.simulated_population and privacy.noise_cohort_size
        deployment: dict[str, Any] = asdict(
            SimulatedPrivacy(
                population=privacy.simulated_population,
                cohort_size=privacy.noise_cohort_size,
                noise_multiplier=_simulated_noise(config),
                rounds=accountant.rounds,
                delta=privacy.simulated_delta,
            )
        )
        if privacy.target_epsilon is not None:
            deployment["target_epsilon"] = privacy.target_epsilon
        figures["simulated_privacy"] = deployment
    elif privacy.target_epsilon is not None:
        figures["target_epsilon"] = privacy.target_epsilon
    return figures


def _simulated_noise(config: FederationConfig) -> float:
    """The z the simulated deployment's cohort gets (the configured one)."""
    dp = config.privacy.dp
    assert dp is not None
    return dp.accounting_noise_multiplier()


def _simulated_accountant(config: FederationConfig, rounds: int) -> PrivacyAccountant:
    """The simulated deployment's accountant after `rounds` rounds of (q, z)."""
    accountant = PrivacyAccountant()
    q = config.privacy.simulated_sampling_probability
    z = _simulated_noise(config)
    for _ in range(rounds):
        accountant.record_round(q, z)
    return accountant


def epsilon_budget_left(
    config: FederationConfig, state: PrivacyState, *, pool: int
) -> int | None:
    """Rounds of (q, z) that still fit the target epsilon (None: no target).

    Under distributed noise a round's z depends on how many shares arrive; the
    check assumes the fewest a round may apply with (`min_reports`), so the
    target holds whoever drops out. With a simulated deployment the target is
    the deployment's epsilon, and so is the check.
    """
    privacy, dp = config.privacy, config.privacy.dp
    if dp is None or privacy.target_epsilon is None or privacy.delta is None:
        return None
    if privacy.simulated:
        done = state.load_accountant().rounds
        return _simulated_accountant(config, done).rounds_within(
            privacy.target_epsilon,
            privacy.simulated_delta,
            sampling_probability=privacy.simulated_sampling_probability,
            noise_multiplier=_simulated_noise(config),
        )
    fewest = config.min_reports if dp.placement == "distributed" else None
    return state.load_accountant().rounds_within(
        privacy.target_epsilon,
        privacy.delta,
        sampling_probability=sampling_probability(config, pool),
        noise_multiplier=dp.accounting_noise_multiplier(shares_survived=fewest),
    )
