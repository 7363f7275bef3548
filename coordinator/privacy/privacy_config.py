"""The privacy settings of a federated run: secure aggregation, DP, the attack probe.

`PrivacyConfig` sits in `FederationConfig.privacy` and in config.json. A run made
before it existed loads with the default: no protection, the attack measured on
three phones. What each protection does is in `coordinator.protections`.

The delta of (epsilon, delta)-DP must lie below 1/population, or a mechanism that
publishes one random user's whole history would meet it. Left unset it resolves,
when the run is created, to the largest power of ten at or below
min(1e-5, 1 / (10 * population)): 1e-5 for fleets up to 10,000 phones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from coordinator.errors import PrivacyConfigError as PrivacyConfigError
from coordinator.privacy.dp import (
    NOISE_MULTIPLIER_RANGE,
    NOISE_SOURCES,
    DPConfig,
    update_noise_multiplier,
)
from corpora.canaries import MAX_COUNT as MAX_CANARIES
from models.settings import check_settings, setting

if TYPE_CHECKING:  # dp_accounting takes seconds to import
    from coordinator.privacy.accountant import PrivacyAccountant

# Sensible targets: below 0.05 no noise multiplier in range fits even a short
# run; above 100 an (epsilon, delta) guarantee promises nothing.
TARGET_EPSILON_RANGE = (0.05, 100.0)
# A simulated deployment of at most a billion users: more than any keyboard's,
# and q = cohort / population stays where dp_accounting's series converge.
MAX_SIMULATED_POPULATION = 10**9


@dataclass(frozen=True)
class PrivacyConfig:
    """Which protections wrap the aggregation, and what the curious server tries."""

    # SecAgg+ (Bell et al. 2020): the server learns only the round's sum.
    secure_aggregation: bool = setting(
        False,
        help="SecAgg+: the server learns only the round's sum (no norm screening)",
    )
    # Bits b of SecAgg's modulus (`secagg.SecAggConfig.bits`).
    secagg_bits: int = setting(32, at_least=8, at_most=53)
    # DP-FedAvg's settings (McMahan et al. 2018); None: no differential privacy.
    dp: DPConfig | None = None
    # Stop before a round would take epsilon past this (None: no budget). Given
    # without a noise multiplier, z is chosen so that `rounds` rounds fit it.
    target_epsilon: float | None = setting(
        None,
        at_least=TARGET_EPSILON_RANGE[0],
        at_most=TARGET_EPSILON_RANGE[1],
        help="choose z so that --rounds rounds spend at most this epsilon (again "
        "before each round, within the budget left), and stop before a round "
        "would exceed it (range {range})",
    )
    # With a target epsilon: choose z so that the planned rounds fit the budget.
    # A simulated deployment's z is chosen once at creation (the resolved config
    # holds it and False here); the run's own z is chosen again before each
    # round, within the budget left at that round's q (`coordinator.privacy.budget`),
    # and the resolved config holds the z a typical pool would get.
    calibrate_noise: bool = False
    # The delta epsilon is reported at; None resolves from the population.
    delta: float | None = setting(
        None,
        above=0,
        below=1,
        help="delta of (epsilon, delta); default the largest power of ten at or "
        "below min(1e-5, 1/(10 x phones))",
    )
    # Phones whose plain updates the curious server attacks each round (only
    # without SecAgg, which never shows it one); 0 turns the probe off.
    attack_phones: int = setting(
        3,
        at_least=0,
        help="phones whose plain updates the curious server attacks each round "
        "(default: %(default)s; 0: off)",
    )
    # Store the words the probe recovers in metrics.jsonl. Off: the log keeps
    # only the attack's figures and the words stay in memory (the live TUI);
    # on, the run log becomes a store of users' words.
    log_attack_words: bool = setting(
        False,
        help="also store the words the attack recovers in metrics.jsonl: this "
        "writes users' words into the run log (default: only its precision and "
        "recall; the words stay in memory for the live demo)",
    )
    # Secret Sharer canaries planted at creation (0: none).
    canaries: int = setting(
        0,
        at_least=0,
        at_most=MAX_CANARIES,
        help="Secret Sharer canaries planted at creation (default: %(default)s)",
    )
    # A simulated deployment (pfl-research's `noise_cohort_size`): DP noise on
    # the mean is that of a cohort of `noise_cohort_size` phones drawn from
    # `simulated_population` users, while the real, smaller cohort trains. It
    # shows what a large deployment would learn at its epsilon; the run's own
    # epsilon is still reported, at the z its fleet really got (far larger),
    # and the deployment's figures go under `simulated_privacy`, never mixed.
    simulated_population: int | None = setting(
        None,
        at_least=1,
        at_most=MAX_SIMULATED_POPULATION,
        metavar="P",
        help="simulate a deployment of P users (with --noise-cohort-size): DP "
        "noise is that of its cohort, --target-epsilon its epsilon; labelled "
        "simulated everywhere, beside this fleet's own (far larger) epsilon "
        "(range {range})",
    )
    noise_cohort_size: int | None = setting(
        None,
        metavar="M",
        help="the simulated deployment's cohort: noise on the mean is z*C/M while "
        "--clients-per-round phones train (pfl-research's noise_cohort_size)",
    )
    # DP noise (the server's and the phones' shares) from the replayable stream
    # `(seed, server_round, "dp-noise")` instead of the operating system: anyone
    # with the seed can subtract it, so such a run has NO privacy and says so
    # (`noise_source`). For tests and benchmarks that compare DP numbers exactly.
    replayable_noise: bool = setting(
        False,
        help="TESTS ONLY: draw DP noise from the run's seed instead of the OS, so "
        "that anyone with the seed can subtract it; the run is labelled "
        "'replayable noise: no privacy' everywhere",
    )

    def __post_init__(self) -> None:
        check_settings(self, PrivacyConfigError)
        if self.target_epsilon is not None and self.dp is None:
            raise PrivacyConfigError("a target epsilon needs DP (a clip norm)")
        if (
            self.dp is not None
            and self.dp.placement == "distributed"
            and not self.secure_aggregation
        ):
            # Each phone adds only 1/n of the noise: in the clear its update
            # would be nearly noiseless. Only the masked sum carries it all.
            raise PrivacyConfigError(
                "distributed DP noise needs secure aggregation: without it each "
                "update reaches the server with a 1/n share of the noise"
            )
        self._check_simulated()

    def _check_simulated(self) -> None:
        population, cohort = self.simulated_population, self.noise_cohort_size
        if population is None and cohort is None:
            return
        if population is None or cohort is None:
            raise PrivacyConfigError(
                "a simulated deployment needs both simulated_population and "
                "noise_cohort_size"
            )
        if self.dp is None:
            raise PrivacyConfigError("a simulated deployment needs DP (a clip norm)")
        if self.dp.placement != "central":
            raise PrivacyConfigError(
                "a simulated deployment scales the server's noise: it needs "
                "central DP noise, not distributed"
            )
        if not self.dp.expected_clients < cohort <= population:
            raise PrivacyConfigError(
                f"noise_cohort_size {cohort} must lie above the cohort that "
                f"trains ({self.dp.expected_clients}) and at most "
                f"simulated_population {population}"
            )

    @property
    def noise_source(self) -> str:
        """Where DP noise comes from, as labelled in every DP metrics line."""
        return NOISE_SOURCES[self.replayable_noise]

    @property
    def simulated(self) -> bool:
        """Whether DP noise is that of a simulated deployment's cohort."""
        return self.noise_cohort_size is not None

    @property
    def noise_scale(self) -> float:
        """The real noise over the configured: m / noise_cohort_size, or 1."""
        if self.dp is None or self.noise_cohort_size is None:
            return 1.0
        return self.dp.expected_clients / self.noise_cohort_size

    @property
    def simulated_delta(self) -> float:
        """The delta the simulated deployment's epsilon is reported at."""
        assert self.simulated_population is not None
        return default_delta(self.simulated_population)

    @property
    def simulated_sampling_probability(self) -> float:
        """q of the simulated deployment: its cohort over its population."""
        assert self.noise_cohort_size and self.simulated_population
        return self.noise_cohort_size / self.simulated_population

    @property
    def protected(self) -> bool:
        """Whether a protection wraps the aggregation."""
        return self.secure_aggregation or self.dp is not None

    def resolved(
        self,
        *,
        population: int,
        clients_per_round: int,
        rounds: int,
        pool: int | None = None,
        shares_fraction: float = 1.0,
    ) -> PrivacyConfig:
        """This config with delta (and a calibrated z) filled in and checked.

        `pool`: the phones a round typically samples from (the eligible ones),
        which sets the q z is calibrated at; None: the whole population.
        `shares_fraction`: distributed noise only, sqrt(k/n) for the fewest k
        shares a round applies with (`calibrated_noise`).
        """
        if self.dp is None:
            return self
        delta = self.delta if self.delta is not None else default_delta(population)
        if delta >= 1 / population:
            raise PrivacyConfigError(
                f"delta {delta:g} must lie below 1/population = {1 / population:.3g} "
                f"({population} phones)"
            )
        resolved = replace(self, delta=delta)
        if self.calibrate_noise and self.target_epsilon is not None:
            # A simulated deployment's target is its own epsilon's, not the run's.
            z = calibrated_noise(
                self.dp,
                target_epsilon=self.target_epsilon,
                delta=self.simulated_delta if self.simulated else delta,
                sampling_probability=(
                    self.simulated_sampling_probability
                    if self.simulated
                    else min(1.0, clients_per_round / (pool or population))
                ),
                rounds=rounds,
                shares_fraction=1.0 if self.simulated else shares_fraction,
            )
            dp = replace(self.dp, noise_multiplier=z)
            resolved = replace(resolved, dp=dp, calibrate_noise=not self.simulated)
        return resolved

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the DP settings nested)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PrivacyConfig:
        """The config `to_dict` wrote; None or {} (older runs): no protection."""
        values = dict(data or {})
        try:
            dp = values.get("dp")
            values["dp"] = None if dp is None else DPConfig(**dp)
            return cls(**values)
        except (TypeError, PrivacyConfigError) as error:
            raise PrivacyConfigError(f"bad privacy settings ({error})") from None


def calibrated_noise(
    dp: DPConfig,
    *,
    target_epsilon: float,
    delta: float,
    sampling_probability: float,
    rounds: int,
    spent: PrivacyAccountant | None = None,
    shares_fraction: float = 1.0,
) -> float:
    """The update noise z whose `rounds` rounds, after those `spent` recorded,
    keep epsilon at or under `target_epsilon`.

    The accountant is given z as released (`DPConfig.accounting_noise_multiplier`):
    with adaptive clipping z_eff, which the clip bits' noise lowers, so z is
    raised until z_eff meets the calibrated figure; with distributed noise the z
    of the fewest shares a round applies with, `shares_fraction` = sqrt(k/n) of
    it. The result lies in `NOISE_MULTIPLIER_RANGE` (raised to its floor).

    Raises:
        PrivacyConfigError: no z in range fits the budget left.
    """
    # dp_accounting takes seconds to import: only when a run is calibrated
    from coordinator.privacy.accountant import noise_for_epsilon

    try:
        z_accounted = noise_for_epsilon(
            target_epsilon,
            delta,
            sampling_probability=sampling_probability,
            rounds=rounds,
            spent=spent,
        )
        z = z_accounted / shares_fraction
        if dp.adaptive:
            z = update_noise_multiplier(z, dp.resolved_count_stddev)
    except ValueError as error:
        raise PrivacyConfigError(
            f"no noise multiplier fits target epsilon {target_epsilon:g} over "
            f"{rounds} more round(s) ({error})"
        ) from None
    low, high = NOISE_MULTIPLIER_RANGE
    if z > high:
        raise PrivacyConfigError(
            f"target epsilon {target_epsilon:g} over {rounds} more round(s) at q "
            f"{sampling_probability:.3g} needs a noise multiplier of {z:.3g}, above "
            f"{high:g}: raise the target or run fewer rounds"
        )
    return max(z, low)


def default_delta(population: int) -> float:
    """The largest power of ten at or below min(1e-5, 1 / (10 * population))."""
    if population < 1:
        raise PrivacyConfigError("a population of no phones has no delta")
    bound = min(1e-5, 1 / (10 * population))
    return 10.0 ** math.floor(math.log10(bound) + 1e-12)
