"""What the server releases from a protected round's sum.

- `WeightedMean` (secure aggregation alone): the example-weighted mean, and the
  round's count and mean losses from the sum's appended totals (the line's
  `masked_sum`): the server learns them only summed.
- `NoisyMean` (DP-FedAvg, McMahan et al. 2018, arXiv 1710.06963): the sum plus
  N(0, (zC)²) over the fixed expected cohort m, the clip step of Andrew et al.
  2021 (arXiv 1905.03871) when it adapts, and the round's charge
  (`coordinator.protections.charge`). The noise comes from the operating
  system's randomness, rank 0's entropy broadcast so that every rank adds the
  same noise, and is kept nowhere; only `PrivacyConfig.replayable_noise` (tests,
  benchmarks) draws it from `(seed, server_round, "dp-noise")`, and every DP
  metrics line then says `noise_source: "replayable (no privacy)"`. Under
  distributed noise the sum already carries the phones' shares: the server adds
  none, and the accountant is given the z the survivors' shares carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from coordinator.config import FederationConfig
from coordinator.privacy.dp import (
    DPConfig,
    adapt_clip_norm,
    noisy_clip_fraction,
    noisy_mean,
)
from coordinator.protections.charge import charge, charge_unreleased
from coordinator.protections.state import PrivacyState, Release, RoundAsk
from device_sim.clipping import unflatten
from device_sim.masked_figures import loss_scale, mean_losses
from device_sim.ranks import Ranks
from device_sim.recipe import FIGURES
from models.seeding import numpy_rng, os_entropy, os_rng


@dataclass(frozen=True)
class SumRelease:
    """One round's unmasked sum and what the release needs to know of it."""

    summed: np.ndarray  # (D + appended,) float64
    like: list[torch.Tensor]  # the parameters' shapes, float64
    clip_norm: float  # the round's C
    ask: RoundAsk  # the round: its config, number, pool and privacy state
    ranks: Ranks  # every rank releases the same (DP: the same noise)
    # Distributed noise only: the phones whose shares are in the sum.
    shares_survived: int | None = None


@dataclass(frozen=True)
class WeightedMean:
    """Secure aggregation alone: the example-weighted mean of the sum."""

    must_release: bool = False  # too few valid reports abandon the round

    def release(self, sum_: SumRelease) -> Release:
        """The mean, and the masked sum's count and mean losses."""
        summed = sum_.summed
        update, losses, count = summed[:-FIGURES], summed[-FIGURES:-1], summed[-1]
        figures: dict[str, Any] = {
            "masked_sum": {
                "num_examples": int(round(count)),
                **mean_losses(losses, count, scale=loss_scale(sum_.clip_norm)),
            }
        }
        mean = unflatten(update / count, sum_.like)
        exact = unflatten(update.copy(), sum_.like)
        return Release(mean, sum_.ask.state, figures, exact)

    def charge_abandoned(self, ask: RoundAsk) -> tuple[PrivacyState, dict[str, Any]]:
        """Nothing to charge."""
        return ask.state, {}


@dataclass(frozen=True)
class NoisyMean:
    """DP-FedAvg's noisy fixed-denominator mean, the clip step and the charge.

    The round's `DPConfig` is read from its config: a target epsilon may choose
    z again each round (`coordinator.privacy.budget`).
    """

    # Whether a round is released must not depend on how many valid reports
    # arrived: the noisy sum over the fixed denominator is released whatever did.
    must_release: bool = True

    def release(self, sum_: SumRelease) -> Release:
        """The noisy mean; called on every rank (they add the same noise)."""
        config, clip = sum_.ask.config, sum_.clip_norm
        dp = _dp(config)
        rng = server_noise_rng(config, sum_.ask.server_round, sum_.ranks)
        distributed = sum_.shares_survived is not None
        # A simulated deployment's noise is its large cohort's, scaled to this one.
        scale = config.privacy.noise_scale
        vector = sum_.summed[:-1] if dp.adaptive else sum_.summed
        released = noisy_mean(
            vector,
            expected_clients=dp.expected_clients,
            clip_norm=clip,
            noise_multiplier=0.0 if distributed else dp.noise_multiplier * scale,
            rng=rng,
        )
        next_clip = _next_clip(dp, sum_, rng, count_scale=0.0 if distributed else scale)
        z = dp.accounting_noise_multiplier(shares_survived=sum_.shares_survived)
        charged, figures = charge(
            sum_.ask.state,
            config,
            pool=sum_.ask.pool,
            noise_multiplier=z * scale,
            clip_norm=next_clip,
        )
        figures.update(noise_placement=dp.placement, next_clip_norm=next_clip)
        mean = unflatten(released, sum_.like)
        # What the server holds after unmasking: noiseless only with central noise.
        exact = unflatten(vector.copy(), sum_.like)
        return Release(mean, charged, figures, exact, mean)

    def charge_abandoned(self, ask: RoundAsk) -> tuple[PrivacyState, dict[str, Any]]:
        """A round that sampled and released nothing, charged as a full one."""
        return charge_unreleased(ask.state, ask.config, ask.pool)


def server_noise_rng(
    config: FederationConfig, server_round: int, ranks: Ranks
) -> np.random.Generator:
    """The server's DP noise stream of a round: the OS's randomness, rank 0's
    entropy given to every rank so that all ranks add the same noise (called on
    every rank); the replayable stream only with `replayable_noise`."""
    if config.privacy.replayable_noise:
        return numpy_rng(config.seed, server_round, "dp-noise")
    entropy = ranks.broadcast_object(os_entropy())
    assert isinstance(entropy, int)
    return os_rng(entropy)


def _next_clip(
    dp: DPConfig, sum_: SumRelease, rng: np.random.Generator, *, count_scale: float
) -> float:
    """The next round's C: moved towards the target quantile when adaptive."""
    if not dp.adaptive:
        return sum_.clip_norm
    assert dp.adaptive_clip_quantile is not None
    fraction = noisy_clip_fraction(
        sum_.summed[-1],
        expected_clients=dp.expected_clients,
        count_stddev=dp.resolved_count_stddev * count_scale,
        rng=rng,
    )
    return adapt_clip_norm(
        sum_.clip_norm,
        clip_fraction=fraction,
        target_quantile=dp.adaptive_clip_quantile,
        clip_lr=dp.clip_lr,
    )


def _dp(config: FederationConfig) -> DPConfig:
    dp = config.privacy.dp
    assert dp is not None, "NoisyMean in a run without DP"
    return dp
