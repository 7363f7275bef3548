"""The privacy accountant: the (epsilon, delta) the rounds that really ran spent.

Each DP-FedAvg round (McMahan et al. 2018, arXiv 1710.06963) is one Poisson-
subsampled Gaussian release: every phone is included independently with
probability q, and the sum of clipped updates gets noise of multiplier z. The
rounds compose under Renyi DP (Mironov 2017, arXiv 1702.07476) with Google's
`dp_accounting` RDP accountant; the guarantee is user-level add-or-remove-one,
where a "user" is a phone's whole history.

Sampling, honestly. A DP round samples each phone ELIGIBLE when the round
starts independently with probability q_t = clients_per_round / eligible_t
(`coordinator.round.selection.poisson_select`), and round t is accounted at its own
q_t; an ineligible phone takes no part in that round. Eligibility (idle,
charging, Wi-Fi, the clock) comes from a device profile independent of the
text, so the pool is fixed before any data is touched. A sampled phone that
drops out or misses the deadline contributes nothing: that only lowers its own
inclusion probability below q_t, so accounting with q_t is an upper bound on
what was spent. Two things
would break the bound: a rule under which one phone's inclusion depends on
another's (keeping only the first `clients_per_round` reports, say), and
participation that depends on the data itself. Production fleets cannot promise
this sampling, which is why Gboard's DP models use DP-FTRL without
amplification by sampling instead (Xu et al. 2023, arXiv 2305.18465); the
amplified epsilon here holds for the simulation, whose sampler we control.
A user sharded over several phones (`FleetConfig.messages_per_phone`) is protected
only at group level: k phones cost up to k times the per-phone guarantee.

`SimulatedPrivacy` answers a different question, the epsilon a population of P
users with cohorts of m would get at the same z (as pfl-research's
`noise_cohort_size`). It is labelled simulated and never mixed with the real one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Bisection stops when the noise multiplier is known to this relative width.
_NOISE_TOLERANCE = 1e-4
# No search for a round count or noise goes beyond these.
_MAX_ROUNDS = 10**9
_MAX_NOISE = 1e6
# dp_accounting is imported where it is used: with the scipy it loads, it adds
# about 60 MB to every process that imports the round, and a run without DP
# never calls it.


@functools.cache
def _orders() -> np.ndarray:
    """The RDP orders of dp_accounting's default accountant."""
    from dp_accounting import rdp

    return rdp.RdpAccountant().orders


def _no_rounds() -> np.ndarray:
    """The RDP curve of no release: zero at every order."""
    return np.zeros_like(_orders(), dtype=np.float64)


def round_event(sampling_probability: float, noise_multiplier: float) -> Any:
    """One round's `dp_accounting` event: a Poisson-subsampled Gaussian."""
    import dp_accounting

    _check(sampling_probability, noise_multiplier)
    return dp_accounting.PoissonSampledDpEvent(
        sampling_probability, dp_accounting.GaussianDpEvent(noise_multiplier)
    )


def _check(sampling_probability: float, noise_multiplier: float) -> None:
    if not 0 <= sampling_probability <= 1:
        raise ValueError(
            f"sampling_probability must lie in [0, 1]: {sampling_probability}"
        )
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise ValueError(f"noise_multiplier must be >= 0: {noise_multiplier}")


@functools.lru_cache(maxsize=256)
def _round_rdp(sampling_probability: float, noise_multiplier: float) -> np.ndarray:
    """The RDP curve of one round at the accountant's default orders (read-only).

    Cached: dp_accounting takes 30 to 120 ms to compute one, and a run repeats
    a few (q, z) pairs many times; composition adds the curves order by order.
    """
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    with _quiet_dp_accounting():
        accountant.compose(round_event(sampling_probability, noise_multiplier))
    curve = accountant.rdp
    curve.flags.writeable = False
    return curve


@contextlib.contextmanager
def _quiet_dp_accounting() -> Iterator[None]:
    """dp_accounting's absl warnings held back while it computes one curve.

    At fractional orders its series can fail to converge (q near 0.1, z near
    0.7: dozens of "_compute_log_a_frac failed to converge" lines a round); it
    then drops that order itself, which can only raise the minimum over the
    rest, so epsilon stays an upper bound. Errors still pass.
    """
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _epsilon(curve: np.ndarray, delta: float) -> float:
    from dp_accounting import rdp

    return float(rdp.compute_epsilon(_orders(), curve, delta)[0])


@dataclass(frozen=True)
class RoundRecord:
    """A run of consecutive rounds released with one (q, z)."""

    sampling_probability: float
    noise_multiplier: float
    rounds: int


class PrivacyAccountant:
    """RDP accounting of the rounds recorded, in order; it never resets."""

    def __init__(self) -> None:
        self._records: list[RoundRecord] = []
        self._composed: np.ndarray | None = None  # made when first needed

    @property
    def _rdp(self) -> np.ndarray:
        """The recorded rounds' RDP curve, composed order by order."""
        if self._composed is None:
            self._composed = _no_rounds()
        return self._composed

    @property
    def rounds(self) -> int:
        """Rounds recorded so far."""
        return sum(r.rounds for r in self._records)

    @property
    def records(self) -> tuple[RoundRecord, ...]:
        """The recorded rounds, runs of equal (q, z) merged."""
        return tuple(self._records)

    def record_round(
        self, sampling_probability: float, noise_multiplier: float
    ) -> None:
        """Add one Poisson-subsampled Gaussian release that really happened.

        Args:
            sampling_probability: q, each phone's probability of being sampled.
            noise_multiplier: The round's z as released: with adaptive clipping
                z_eff, with distributed noise the realised z after dropouts
                (`coordinator.privacy.dp.DPConfig.accounting_noise_multiplier`).
        """
        self._add(RoundRecord(float(sampling_probability), float(noise_multiplier), 1))

    def _add(self, record: RoundRecord) -> None:
        curve = _round_rdp(record.sampling_probability, record.noise_multiplier)
        self._composed = self._rdp + record.rounds * curve
        last = self._records[-1] if self._records else None
        key = (record.sampling_probability, record.noise_multiplier)
        if (
            last is not None
            and (last.sampling_probability, last.noise_multiplier) == key
        ):
            self._records[-1] = RoundRecord(*key, last.rounds + record.rounds)
        else:
            self._records.append(record)

    def epsilon(self, delta: float) -> float:
        """The epsilon spent so far at `delta` (0 before any round)."""
        return _epsilon(self._rdp, delta)

    def rounds_within(
        self,
        target_epsilon: float,
        delta: float,
        *,
        sampling_probability: float,
        noise_multiplier: float,
    ) -> int:
        """How many MORE rounds of (q, z) keep epsilon at or under the target.

        `--target-epsilon` runs stop once this is 0, before the budget is
        exceeded; 0 also when the recorded rounds already spent it.
        """
        per_round = _round_rdp(float(sampling_probability), float(noise_multiplier))

        def fits(count: int) -> bool:
            total = self._rdp + count * per_round if count else self._rdp
            return _epsilon(total, delta) <= target_epsilon

        return _largest_fitting(fits)

    def to_dict(self) -> dict[str, Any]:
        """The recorded rounds as JSON-ready data; epsilon is recomputed on load."""
        return {
            "accountant": "rdp",
            "records": [
                {
                    "sampling_probability": r.sampling_probability,
                    "noise_multiplier": r.noise_multiplier,
                    "rounds": r.rounds,
                }
                for r in self._records
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyAccountant:
        """The accountant `to_dict` wrote, every round composed again."""
        if data.get("accountant") != "rdp":
            raise ValueError(f"not an RDP accountant's state: {data.get('accountant')}")
        accountant = cls()
        for item in data["records"]:
            record = RoundRecord(
                float(item["sampling_probability"]),
                float(item["noise_multiplier"]),
                int(item["rounds"]),
            )
            if record.rounds < 1:
                raise ValueError(f"a record of {record.rounds} rounds")
            accountant._add(record)
        return accountant


def _largest_fitting(fits: Callable[[int], bool]) -> int:
    """The largest count in [0, _MAX_ROUNDS] with fits(count), fits monotone."""
    if not fits(0):
        return 0
    low, high = 0, 1
    while fits(high):
        low, high = high, high * 2
        if high > _MAX_ROUNDS:
            return _MAX_ROUNDS
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def epsilon_for(
    *, sampling_probability: float, noise_multiplier: float, rounds: int, delta: float
) -> float:
    """Epsilon of `rounds` rounds of (q, z) from nothing."""
    if rounds == 0:
        return 0.0
    curve = _round_rdp(float(sampling_probability), float(noise_multiplier))
    return _epsilon(rounds * curve, delta)


def noise_for_epsilon(
    target_epsilon: float,
    delta: float,
    *,
    sampling_probability: float,
    rounds: int,
    spent: PrivacyAccountant | None = None,
) -> float:
    """The smallest z (to 1e-4 relative) whose `rounds` rounds, after the rounds
    `spent` already recorded, keep epsilon at or under the target.

    Bisection; the z returned always fits (epsilon <= target_epsilon).

    Raises:
        ValueError: no z up to 1e6 fits (the spent rounds alone may exceed it).
    """
    base = spent._rdp if spent is not None else _no_rounds()

    def fits(z: float) -> bool:
        curve = _round_rdp(float(sampling_probability), z)
        return _epsilon(base + rounds * curve, delta) <= target_epsilon

    low, high = 0.0, 1.0
    while not fits(high):
        low, high = high, high * 2
        if high > _MAX_NOISE:
            raise ValueError(f"no noise multiplier up to {_MAX_NOISE} fits the target")
    while high - low > _NOISE_TOLERANCE * high:
        middle = (low + high) / 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high


@dataclass(frozen=True, kw_only=True)
class SimulatedPrivacy:
    """What P users sampled m per round would spend at the simulation's z:
    the epsilon of a hypothetical deployment, NOT this run's guarantee.

    A simulation of 1,000 phones with 20 a round says little about the privacy
    of a million-phone deployment with cohorts of 10,000 at the same z; this
    gives that deployment's epsilon, clearly labelled `simulated=True`. The
    sampling probability and epsilon follow from the other fields.
    """

    population: int  # P, users in the hypothetical deployment
    cohort_size: int  # m, expected clients per round there
    sampling_probability: float = field(init=False)  # m / P
    noise_multiplier: float  # z, the same as the simulation's
    rounds: int
    delta: float
    epsilon: float = field(init=False)
    simulated: bool = field(default=True, init=False)  # always a what-if

    def __post_init__(self) -> None:
        if not 1 <= self.cohort_size <= self.population:
            raise ValueError("cohort_size must lie in [1, population]")
        q = self.cohort_size / self.population
        object.__setattr__(self, "sampling_probability", q)
        epsilon = epsilon_for(
            sampling_probability=q,
            noise_multiplier=self.noise_multiplier,
            rounds=self.rounds,
            delta=self.delta,
        )
        object.__setattr__(self, "epsilon", epsilon)
