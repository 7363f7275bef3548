"""DP-FedAvg's server math: the noisy mean, adaptive clipping, noise multipliers.

DP-FedAvg (McMahan et al. 2018, arXiv 1710.06963): each sampled phone clips its
update to a global L2 norm C (`device_sim.clipping.clip_update`); the server sums
the clipped updates, adds Gaussian noise N(0, (z·C)²) to the SUM and divides by
the EXPECTED cohort size m = q·population, the fixed-denominator estimator. Every
phone has weight 1: weighting by `num_examples` would let a phone's influence
grow with its data and break the sensitivity bound C, so DP-FedAvg does not.

Where the noise is added:
  - central (`noisy_mean`): on the server, after secure aggregation has been
    unmasked. The server sees the exact sum first, so it must be trusted to add
    the noise and to forget the sum; SecAgg only hides the individual updates.
  - distributed (`device_sim.clipping.phone_noise`): each phone adds a share
    N(0, (z·C)²/n) to its clipped update before masking, so the unmasked sum
    already carries the noise. Honest caveat: a phone that drops out after
    masking takes its share with it, and the sum of k < n surviving shares has
    noise multiplier z·sqrt(k/n) (`realised_noise_multiplier`); that realised
    figure, not z, is what the accountant must be given. Choosing n below the
    expected cohort over-provisions noise against dropouts.

Adaptive clipping to a quantile (Andrew et al. 2021, arXiv 1905.03871): each phone
also reports b_i = [norm_i <= C]; the server forms the noisy fraction
b̄ = (Σ b_i + N(0, σ_b²)) / m and moves the bound geometrically,
C ← C·exp(−η_C (b̄ − γ)), so C tracks the γ-quantile of the update norms. The bits
are a second Gaussian release; the two together are accounted as one Gaussian
mechanism with z_eff = (z^-2 + (2σ_b)^-2)^(-1/2) (`effective_noise_multiplier`).

All noise is drawn from a `numpy.random.Generator` the caller passes; in a
simulation it comes from `(seed, server_round, "dp-noise")` (`noise_rng`) so a
round replays, which a deployment must never do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.seeding import numpy_rng

# Where the update noise is added (see the module docstring).
NOISE_PLACEMENTS: tuple[str, ...] = ("central", "distributed")


class DPConfigError(ValueError):
    """A differential-privacy setting that cannot work; the message says which."""


@dataclass(frozen=True)
class DPConfig:
    """Settings of DP-FedAvg with optional adaptive clipping."""

    # The (initial) clip bound C on a phone's whole update. The median update norm
    # of the default model's phones at round 1 was 0.32 (12 phones, 0.17 to 4.24,
    # default local training), so 0.5 clips the heavy typists and few others.
    clip_norm: float = 0.5
    # z: the noise on the sum of clipped updates has stddev z·C. McMahan et al.
    # 2018 train with z near 1; epsilon then depends on q and the rounds run.
    noise_multiplier: float = 1.0
    # m = q·population, the fixed denominator of the mean: set it to
    # clients_per_round (FederationConfig's default is 20).
    expected_clients: int = 20
    # gamma: the quantile of update norms the clip bound tracks; None keeps C
    # fixed. Andrew et al. 2021 recommend the median, 0.5.
    adaptive_clip_quantile: float | None = None
    # eta_C: the geometric step of the clip bound (Andrew et al. 2021 use 0.2).
    clip_lr: float = 0.2
    # sigma_b: stddev of the noise on the count of clip bits; None takes Andrew et
    # al.'s m / 20, which costs little privacy (z_eff stays near z).
    count_stddev: float | None = None
    # "central" (the server adds it after unmasking) or "distributed" (phones).
    placement: str = "central"
    # n: phones whose noise shares sum to the full noise (distributed only);
    # None takes expected_clients. Lower values over-provision against dropouts.
    noise_shares: int | None = None

    def __post_init__(self) -> None:
        if not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise DPConfigError(f"clip_norm must be positive, not {self.clip_norm}")
        if not (self.noise_multiplier >= 0 and math.isfinite(self.noise_multiplier)):
            raise DPConfigError(
                f"noise_multiplier must be >= 0, not {self.noise_multiplier}"
            )
        if self.expected_clients < 1:
            raise DPConfigError("expected_clients must be >= 1")
        quantile = self.adaptive_clip_quantile
        if quantile is not None and not 0 < quantile < 1:
            raise DPConfigError(
                f"adaptive_clip_quantile must lie in (0, 1): {quantile}"
            )
        if not self.clip_lr > 0:
            raise DPConfigError(f"clip_lr must be positive, not {self.clip_lr}")
        if self.count_stddev is not None and not self.count_stddev >= 0:
            raise DPConfigError(f"count_stddev must be >= 0, not {self.count_stddev}")
        if self.placement not in NOISE_PLACEMENTS:
            raise DPConfigError(
                f"unknown placement {self.placement!r} (central or distributed)"
            )
        if self.noise_shares is not None and self.noise_shares < 1:
            raise DPConfigError("noise_shares must be >= 1")

    @property
    def adaptive(self) -> bool:
        """Whether the clip bound follows a quantile of the norms."""
        return self.adaptive_clip_quantile is not None

    @property
    def resolved_count_stddev(self) -> float:
        """sigma_b, with Andrew et al.'s m / 20 filled in."""
        if self.count_stddev is not None:
            return self.count_stddev
        return self.expected_clients / 20

    @property
    def resolved_noise_shares(self) -> int:
        """n, with the expected cohort filled in."""
        return self.noise_shares or self.expected_clients

    def accounting_noise_multiplier(
        self, *, shares_survived: int | None = None
    ) -> float:
        """The z one round of this config gives the accountant.

        Args:
            shares_survived: Distributed noise only: phones whose noise shares
                (of the update and of the clip bit) reached the unmasked sum.
                None assumes all `noise_shares` did.
        """
        z, sigma_b = self.noise_multiplier, self.resolved_count_stddev
        if self.placement == "distributed" and shares_survived is not None:
            shares = self.resolved_noise_shares
            z, sigma_b = (
                realised_noise_multiplier(
                    x, noise_shares=shares, survivors=shares_survived
                )
                for x in (z, sigma_b)
            )
        if not self.adaptive:
            return z
        return effective_noise_multiplier(z, sigma_b)


def noise_rng(seed: int, server_round: int) -> np.random.Generator:
    """The server's noise stream of a round, `(seed, server_round, "dp-noise")`."""
    return numpy_rng(seed, server_round, "dp-noise")


def noisy_mean(
    sum_vector: np.ndarray,
    *,
    expected_clients: int,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """DP-FedAvg's fixed-denominator mean: (sum + N(0, (z·C)²)) / m.

    Args:
        sum_vector: The unmasked sum of the cohort's clipped updates, each with
            weight 1 (float64, flattened).
        expected_clients: m = q·population; not the number that reported, which
            would make the denominator depend on who took part.
        clip_norm: The bound C the updates were clipped to (the sensitivity).
        noise_multiplier: z; 0 gives the plain mean of clipped updates.
        rng: The round's noise stream (`noise_rng`).
    """
    if expected_clients < 1:
        raise ValueError(f"expected_clients must be >= 1, not {expected_clients}")
    noisy = np.asarray(sum_vector, dtype=np.float64)
    if noise_multiplier > 0:
        noise = rng.normal(0.0, noise_multiplier * clip_norm, size=noisy.shape)
        noisy = noisy + noise
    return noisy / expected_clients


def noisy_clip_fraction(
    clipped_count: int | float,
    *,
    expected_clients: int,
    count_stddev: float,
    rng: np.random.Generator,
) -> float:
    """b̄ = (Σ b_i + N(0, σ_b²)) / m: the noisy share of updates within the bound.

    Args:
        clipped_count: Σ b_i, the (unmasked) sum of the phones' clip bits; with
            distributed noise it already carries the phones' shares, and
            `count_stddev` should then be 0.
    """
    noise = rng.normal(0.0, count_stddev) if count_stddev > 0 else 0.0
    return (float(clipped_count) + noise) / expected_clients


def adapt_clip_norm(
    clip_norm: float, *, clip_fraction: float, target_quantile: float, clip_lr: float
) -> float:
    """Andrew et al.'s geometric step C·exp(−η_C (b̄ − γ)).

    More updates within the bound than the target share (b̄ > γ) shrinks C.
    """
    return clip_norm * math.exp(-clip_lr * (clip_fraction - target_quantile))


def effective_noise_multiplier(noise_multiplier: float, count_stddev: float) -> float:
    """z_eff = (z^-2 + (2σ_b)^-2)^(-1/2) of the update and clip-bit releases.

    The bits are centred at 1/2 in Andrew et al. 2021, so their sum has
    sensitivity 1/2 and noise multiplier 2σ_b. Either noise being 0 gives 0:
    a release without noise has no privacy.
    """
    if noise_multiplier <= 0 or count_stddev <= 0:
        return 0.0
    return (noise_multiplier**-2 + (2 * count_stddev) ** -2) ** -0.5


def update_noise_multiplier(target: float, count_stddev: float) -> float:
    """The z on the updates that makes z_eff equal `target` (the inverse).

    Raises:
        ValueError: when 2σ_b <= target: the bits alone would spend the budget.
    """
    if 2 * count_stddev <= target:
        raise ValueError(
            f"count_stddev {count_stddev} is too small for a combined noise "
            f"multiplier of {target} (needs 2·sigma_b > z)"
        )
    return (target**-2 - (2 * count_stddev) ** -2) ** -0.5


def realised_noise_multiplier(
    noise_multiplier: float, *, noise_shares: int, survivors: int
) -> float:
    """The noise multiplier of a sum holding `survivors` of `noise_shares` shares.

    k shares of variance (z·C)²/n sum to (z·C)²·k/n: z·sqrt(k/n).
    """
    if noise_shares < 1 or survivors < 0:
        raise ValueError("noise_shares must be >= 1 and survivors >= 0")
    return noise_multiplier * math.sqrt(survivors / noise_shares)
