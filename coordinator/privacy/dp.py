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
also reports its CENTRED clip bit b_i − ½, b_i = [norm_i <= C]
(`device_sim.clipping.clip_bit`); the server forms the noisy fraction
b̄ = (Σ (b_i − ½) + N(0, σ_b²)) / m + ½ and moves the bound geometrically,
C ← C·exp(−η_C (b̄ − γ)), so C tracks the γ-quantile of the update norms.

The guarantee, in this one place: adding or removing one phone moves the
update sum by at most C (its clipped norm) and the centred bits' sum by at most
½ (`CLIP_BIT_SENSITIVITY`; an uncentred bit in {0, 1} would move it by 1). The
two Gaussian releases, of multipliers z and σ_b / ½ = 2σ_b, are together one
Gaussian mechanism of z_eff = (z^-2 + (2σ_b)^-2)^(-1/2)
(`effective_noise_multiplier`), which is what the accountant is given and what
`--target-epsilon` inverts (`update_noise_multiplier`). The centring is exact
under SecAgg (±½ is a signed fixed-point value at SecAgg's power-of-two scales)
and with distributed noise (each phone adds its share to its centred bit).

Where the noise comes from: by default the operating system's randomness
(`os_noise_rng`), never stored, so nobody can regenerate it from the run's seed
and subtract it. A replayable stream `(seed, server_round, "dp-noise")`
(`noise_rng`) exists only for tests and benchmarks behind
`PrivacyConfig.replayable_noise`, and a run using it is labelled as having no
privacy (`NOISE_SOURCES`).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np

from coordinator.errors import DPConfigError as DPConfigError
from models.seeding import numpy_rng
from models.settings import check_settings, setting

# Where the update noise is added (see the module docstring).
NOISE_PLACEMENTS: tuple[str, ...] = ("central", "distributed")
# The sensible ranges of the DP settings (`fedtype simulate --help` shows them).
# z below 0.1 spends epsilon near 100 in one round; above 100 the noise on a
# mean of 20 phones is 5 clip bounds a coordinate, more than anything it hides.
NOISE_MULTIPLIER_RANGE = (0.1, 100.0)
# C on a whole update: the default model's median update norm is 0.32 and no
# honest update exceeds the local bound (16 at the defaults); a bound far above
# it clips nothing while the noise z·C grows with it.
CLIP_NORM_RANGE = (1e-4, 100.0)
# A phone's centred clip bit b − ½ lies in {−½, +½}: one phone moves the bits'
# sum by at most this (see the module docstring).
CLIP_BIT_SENSITIVITY = 0.5
# The `noise_source` label of a DP round's metrics line: OS randomness, or the
# replayable stream (`PrivacyConfig.replayable_noise`), which gives no privacy.
NOISE_SOURCES: dict[bool, str] = {False: "os", True: "replayable (no privacy)"}
# How `fedtype compare` and the TUI label a run whose noise was replayable.
NO_PRIVACY_LABEL = "replayable noise: no privacy"


@dataclass(frozen=True)
class DPConfig:
    """Settings of DP-FedAvg with optional adaptive clipping.

    Its options (`fedtype simulate`) default to unset: DP is on when the clip
    norm is given.
    """

    # The (initial) clip bound C on a phone's whole update. The median update norm
    # of the default model's phones at round 1 was 0.32 (12 phones, 0.17 to 4.24,
    # default local training), so 0.5 clips the heavy typists and few others.
    clip_norm: float = setting(
        0.5,
        at_least=CLIP_NORM_RANGE[0],
        at_most=CLIP_NORM_RANGE[1],
        flag="dp-clip-norm",
        aliases=("dp-clip",),
        help="DP-FedAvg: clip each update to this L2 norm (e.g. {default}; "
        "range {range})",
    )
    # z: the noise on the sum of clipped updates has stddev z·C. McMahan et al.
    # 2018 train with z near 1; epsilon then depends on q and the rounds run.
    noise_multiplier: float = setting(
        1.0,
        at_least=NOISE_MULTIPLIER_RANGE[0],
        at_most=NOISE_MULTIPLIER_RANGE[1],
        help="DP noise z on the sum, stddev z*C (default with --dp-clip: {default}; "
        "range {range})",
    )
    # m = q·population, the fixed denominator of the mean: set it to
    # clients_per_round (FederationConfig's default is 20).
    expected_clients: int = setting(20, at_least=1)
    # gamma: the quantile of update norms the clip bound tracks; None keeps C
    # fixed. Andrew et al. 2021 recommend the median, 0.5.
    adaptive_clip_quantile: float | None = setting(
        None,
        above=0,
        below=1,
        aliases=("adaptive-clip",),
        metavar="QUANTILE",
        help="move the DP clip bound to this quantile of the norms (e.g. 0.5)",
    )
    # eta_C: the geometric step of the clip bound (Andrew et al. 2021 use 0.2).
    clip_lr: float = setting(0.2, above=0)
    # sigma_b: stddev of the noise on the count of clip bits; None takes Andrew et
    # al.'s m / 20, which costs little privacy (z_eff stays near z).
    count_stddev: float | None = setting(None, at_least=0)
    # "central" (the server adds it after unmasking) or "distributed" (phones).
    placement: str = setting(
        "central",
        choices=NOISE_PLACEMENTS,
        flag="noise-placement",
        aliases=("dp-noise",),
        help="who adds the DP noise: the server after unmasking (central, the "
        "default) or each phone a share before masking (distributed, needs "
        "--secure-aggregation)",
    )
    # n: phones whose noise shares sum to the full noise (distributed only);
    # None takes expected_clients. Lower values over-provision against dropouts.
    noise_shares: int | None = setting(None, at_least=1)

    def __post_init__(self) -> None:
        check_settings(self, DPConfigError)

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
    """The REPLAYABLE server noise stream `(seed, server_round, "dp-noise")`.

    Anyone with the seed can regenerate it and subtract it: tests and benchmarks
    only (`PrivacyConfig.replayable_noise`), never a private run.
    """
    return numpy_rng(seed, server_round, "dp-noise")


def os_noise_seed() -> int:
    """128 bits of the operating system's randomness, kept nowhere."""
    return secrets.randbits(128)


def os_noise_rng(entropy: int | None = None) -> np.random.Generator:
    """A noise stream seeded from the OS (or from `entropy`, itself from
    `os_noise_seed`, when several ranks must add the same noise)."""
    return np.random.default_rng(os_noise_seed() if entropy is None else entropy)


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
    centred_sum: float,
    *,
    expected_clients: int,
    count_stddev: float,
    rng: np.random.Generator,
) -> float:
    """b̄ = (Σ (b_i − ½) + N(0, σ_b²)) / m + ½: the noisy share within the bound.

    Args:
        centred_sum: Σ (b_i − ½), the (unmasked) sum of the phones' centred clip
            bits (`device_sim.clipping.clip_bit`); with distributed noise it
            already carries the phones' shares, and `count_stddev` is then 0.
    """
    noise = rng.normal(0.0, count_stddev) if count_stddev > 0 else 0.0
    return (float(centred_sum) + noise) / expected_clients + 0.5


def adapt_clip_norm(
    clip_norm: float, *, clip_fraction: float, target_quantile: float, clip_lr: float
) -> float:
    """Andrew et al.'s geometric step C·exp(−η_C (b̄ − γ)).

    More updates within the bound than the target share (b̄ > γ) shrinks C.
    """
    return clip_norm * math.exp(-clip_lr * (clip_fraction - target_quantile))


def effective_noise_multiplier(
    noise_multiplier: float,
    count_stddev: float,
    *,
    bit_sensitivity: float = CLIP_BIT_SENSITIVITY,
) -> float:
    """z_eff = (z^-2 + (σ_b / Δ_b)^-2)^(-1/2) of the update and clip-bit releases.

    Δ_b is the bits' sensitivity: ½ for the centred bits fedtype's phones send
    (z_eff = (z^-2 + (2σ_b)^-2)^(-1/2)); 1 would be uncentred bits in {0, 1}.
    Either noise being 0 gives 0: a release without noise has no privacy.
    """
    if noise_multiplier <= 0 or count_stddev <= 0:
        return 0.0
    bits = count_stddev / bit_sensitivity
    return (noise_multiplier**-2 + bits**-2) ** -0.5


def update_noise_multiplier(target: float, count_stddev: float) -> float:
    """The z on the updates that makes z_eff equal `target` (the inverse of
    `effective_noise_multiplier` with centred bits).

    Raises:
        ValueError: when σ_b / Δ_b <= target: the bits alone would spend the
            budget.
    """
    bits = count_stddev / CLIP_BIT_SENSITIVITY
    if bits <= target:
        raise ValueError(
            f"count_stddev {count_stddev} is too small for a combined noise "
            f"multiplier of {target} (needs 2·sigma_b > z)"
        )
    return (target**-2 - bits**-2) ** -0.5


def realised_noise_multiplier(
    noise_multiplier: float, *, noise_shares: int, survivors: int
) -> float:
    """The noise multiplier of a sum holding `survivors` of `noise_shares` shares.

    k shares of variance (z·C)²/n sum to (z·C)²·k/n: z·sqrt(k/n).
    """
    if noise_shares < 1 or survivors < 0:
        raise ValueError("noise_shares must be >= 1 and survivors >= 0")
    return noise_multiplier * math.sqrt(survivors / noise_shares)
