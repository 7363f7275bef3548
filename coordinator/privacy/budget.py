"""The privacy budget of a run with a target epsilon: each round's z, and the stop.

`--target-epsilon T` promises that the run's epsilon never passes T and that its
planned rounds run. A round's q_t = clients_per_round / eligible_t depends on
how many phones are eligible when it starts, which the run cannot know ahead
(the clock, the phones' daily patterns). One z calibrated at creation for a
typical pool ran short whenever the real pools were smaller (issue 23: 2 of 3
rounds, silently). So before each round the noise is chosen again
(`round_config`): the smallest z in range with which this round and the rounds
still planned after it, all at this round's q_t, keep epsilon at or under T
after what the privacy ledger already holds. The last planned round therefore
always fits. A round beyond the plan, a budget that no z in range can keep, or
a fixed z whose next round would pass T stops the run (`budget_stop`), with the
reason; `coordinator.run.simulation` evaluates the model of the last round first.

z_t depends only on q_t, on the rounds left and on the epsilon spent, none of
them on the phones' text; the accountant composes the (q_t, z_t) that ran.
A simulated deployment's q is fixed, so its z is calibrated once at creation
(`PrivacyConfig.resolved`) and only the stop applies.
"""

from __future__ import annotations

from dataclasses import replace

from coordinator.config import FederationConfig
from coordinator.privacy.dp import realised_noise_multiplier
from coordinator.privacy.privacy_config import PrivacyConfigError, calibrated_noise
from coordinator.protections.charge import epsilon_budget_left, sampling_probability
from coordinator.protections.state import PrivacyState


def shares_fraction(config: FederationConfig) -> float:
    """sqrt(k/n): the share of z the fewest noise shares a round applies with
    carry (distributed noise; 1 for central noise)."""
    dp = config.privacy.dp
    if dp is None or dp.placement != "distributed":
        return 1.0
    return realised_noise_multiplier(
        1.0, noise_shares=dp.resolved_noise_shares, survivors=config.min_reports
    )


def round_config(
    config: FederationConfig, state: PrivacyState, *, pool: int, server_round: int
) -> FederationConfig:
    """The config round `server_round` runs with: z chosen again within the
    budget left when the run calibrates its noise to a target, else `config`.

    Raises:
        PrivacyConfigError: no z in range keeps the budget.
    """
    privacy, dp = config.privacy, config.privacy.dp
    if (
        dp is None
        or not privacy.calibrate_noise
        or privacy.target_epsilon is None
        or privacy.delta is None
        or privacy.simulated
    ):
        return config
    z = calibrated_noise(
        dp,
        target_epsilon=privacy.target_epsilon,
        delta=privacy.delta,
        sampling_probability=sampling_probability(config, pool),
        rounds=max(1, config.rounds - server_round + 1),
        spent=state.load_accountant(),
        shares_fraction=shares_fraction(config),
    )
    dp = replace(dp, noise_multiplier=z)
    return replace(config, privacy=replace(privacy, dp=dp))


class PrivacyBudgetSpent(RuntimeError):
    """The next round would spend more epsilon than the run's target allows."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def next_round_config(
    config: FederationConfig, state: PrivacyState, next_round: tuple[int, int]
) -> FederationConfig:
    """The config of the next round, `next_round` = (its number, the phones
    eligible when it starts).

    Raises:
        PrivacyBudgetSpent: it may not run (the reason says why).
    """
    server_round, pool = next_round
    config, reason = budget_stop(config, state, pool=pool, server_round=server_round)
    if reason is not None:
        raise PrivacyBudgetSpent(reason)
    return config


def budget_ends(
    config: FederationConfig, state: PrivacyState, next_round: tuple[int, int]
) -> bool:
    """Whether a target epsilon stops the run before `next_round`."""
    if config.privacy.dp is None or config.privacy.target_epsilon is None:
        return False
    try:
        next_round_config(config, state, next_round)
    except PrivacyBudgetSpent:
        return True
    return False


def budget_stop(
    config: FederationConfig, state: PrivacyState, *, pool: int, server_round: int
) -> tuple[FederationConfig, str | None]:
    """The config round `server_round` runs with, and why it may not run (None:
    it may); `pool` is the phones eligible when it starts."""
    privacy = config.privacy
    try:
        config = round_config(config, state, pool=pool, server_round=server_round)
    except PrivacyConfigError as error:
        return config, _why(config, state, server_round, str(error))
    if epsilon_budget_left(config, state, pool=pool) != 0:
        return config, None
    whose = "the simulated deployment's epsilon" if privacy.simulated else "epsilon"
    delta = privacy.simulated_delta if privacy.simulated else privacy.delta
    reason = (
        f"round {server_round} would take {whose} past the target "
        f"{privacy.target_epsilon:g} (delta {delta:g})"
    )
    return config, _why(config, state, server_round, reason)


def _why(
    config: FederationConfig, state: PrivacyState, server_round: int, reason: str
) -> str:
    """The stop's sentence: the reason, and this fleet's own epsilon so far."""
    delta = config.privacy.delta or 0.0
    spent = state.load_accountant().epsilon(delta)
    return (
        f"{reason}; after {server_round - 1} rounds this fleet's own epsilon is "
        f"{spent:.3f} at delta {delta:g}; the run stops here"
    )
