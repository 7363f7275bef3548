"""What the server checks of an unmasked sum whose parts it never sees.

Under secure aggregation (Bonawitz et al. 2017) any vector of Z_{2^b}^D is a
valid masked input: a hostile phone need not clip its update, keep to the
quantisation range, or weight its update by the count it reported
(`device_sim.faults.hostile_contribution`). Without range proofs (as in RoFL,
Lycklama et al. 2023, arXiv 2107.03311) the server cannot check one phone, but
it can check the sum against what honest phones could have sent together:

1. the count: under SecAgg alone each phone appends its count, and the summed
   count must equal the sum of the counts the screen judged (a phone that lies
   about its weight inside the mask but reports an honest count is caught when
   it also lies in the count coordinate); under DP's adaptive clip the summed
   centred clip bits (each +-1/2) must lie in [-n/2, n/2];
2. the norm: by the triangle inequality, |sum_i x_i| <= sum_i bound_i, where
   bound_i = n_i x min(C, steps(n_i) x client_lr x clip_norm) under SecAgg
   alone (`ScreenConfig.max_norm`: the furthest n_i examples' clipped steps
   move, weighted by n_i) and C under DP;
3. each coordinate: |sum_i x_ij| <= n x max_abs, what the public range allows.

Each bound allows for the quantisation's rounding (1 / (2 scale) per phone and
coordinate) and, under distributed DP noise, for the phones' noise shares (ten
standard deviations beyond the norm's mean, a chance below e^-50 for an honest
round). An honest round never fails a check, so the checks abandon only rounds
that hold a hostile report: what a hostile phone can still do is stay inside
them (docs/robustness.md, "Hostile phones under secure aggregation").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from coordinator.config import FederationConfig
from coordinator.round.robust import BOUND_SLACK, ScreenConfig
from secagg import SecAggAbort
from secagg.quantize import QuantizationSpec

# Standard deviations of noise allowed beyond its expected norm (sqrt(D) sigma).
NOISE_MARGIN = 10.0


class SumCheckFailed(SecAggAbort):
    """The unmasked sum is not one honest phones could have sent: not released."""


@dataclass(frozen=True)
class SumBounds:
    """What an honest cohort's unmasked sum keeps to."""

    size: int  # D: the update part is the sum's first D values
    norm: float  # most the L2 norm of the update part may be
    coordinate: float  # most any coordinate of the update part may be, in size
    # What the last coordinate must be: the exact count (SecAgg alone), or
    # within +-bits of 0, the centred clip bits' sum (adaptive DP); None: no check.
    count: int | None = None
    bits: float | None = None
    # Per-coordinate slack: rounding and noise shares.
    slack: float = 0.0
    # Slack of the norm (the slack over every coordinate, and the noise's norm).
    norm_slack: float = 0.0


def phone_bounds(
    counts: Sequence[int], *, clip_norm: float, screen: ScreenConfig | None
) -> list[float]:
    """Each phone's most contribution norm: n_i x min(C, its absolute bound)
    weighted (SecAgg alone, `screen` given), else C (DP-FedAvg's weight 1)."""
    if screen is None:
        return [clip_norm for _ in counts]
    bounds = []
    for n in counts:
        reach = screen.max_norm(n)
        limit = clip_norm if reach is None else min(clip_norm, reach * BOUND_SLACK)
        bounds.append(n * limit)
    return bounds


def sum_bounds(
    bounds: Sequence[float],
    *,
    size: int,
    max_abs: float,
    scale: float,
    count: int | None = None,
    bits: bool = False,
    noise_stddev: float = 0.0,
) -> SumBounds:
    """The bounds of `len(bounds)` phones' sum of (size,) update parts.

    Args:
        bounds: each phone's most contribution norm (`phone_bounds`).
        max_abs, scale: the round's quantisation range and scale.
        count: the screened counts' sum, when each phone appends its count.
        bits: whether each phone appends a clip bit.
        noise_stddev: the summed noise shares' stddev per coordinate (0: none).
    """
    n = len(bounds)
    rounding = n / (2 * scale)
    noise = NOISE_MARGIN * noise_stddev
    slack = rounding + noise
    norm_slack = math.sqrt(size) * (rounding + noise_stddev) + noise
    return SumBounds(
        size=size,
        norm=float(sum(bounds)),
        coordinate=n * max_abs,
        count=count,
        bits=n / 2 if bits else None,
        slack=slack,
        norm_slack=norm_slack,
    )


def check_sum(summed: np.ndarray, bounds: SumBounds) -> None:
    """Raise `SumCheckFailed` when `summed` breaks a bound; (D,) or longer, the
    figures the phones append after the update part (the count last)."""
    update = summed[: bounds.size]
    if not np.isfinite(summed).all():
        raise SumCheckFailed("the unmasked sum holds non-finite values")
    if bounds.count is not None and abs(summed[-1] - bounds.count) > bounds.slack:
        raise SumCheckFailed(
            f"the unmasked count {summed[-1]:.6g} != {bounds.count}, the sum of "
            "the screened counts"
        )
    if bounds.bits is not None and abs(summed[-1]) > bounds.bits + bounds.slack:
        raise SumCheckFailed(
            f"the unmasked clip bits {summed[-1]:.6g} lie outside "
            f"[{-bounds.bits:g}, {bounds.bits:g}]"
        )
    largest = float(np.abs(update).max()) if update.size else 0.0
    if largest > bounds.coordinate + bounds.slack:
        raise SumCheckFailed(
            f"an unmasked coordinate {largest:.6g} > {bounds.coordinate:.6g}, what "
            "the quantisation range allows"
        )
    norm = float(np.linalg.norm(update))
    if norm > bounds.norm + bounds.norm_slack:
        raise SumCheckFailed(
            f"the unmasked sum's norm {norm:.6g} > {bounds.norm:.6g}, the sum of "
            "the phones' bounds"
        )


def check_round_sum(
    summed: np.ndarray,
    counts: Sequence[int],
    *,
    config: FederationConfig,
    spec: QuantizationSpec,
    clip_norm: float,
    size: int,
    noise_stddev: float = 0.0,
) -> None:
    """Raise `SumCheckFailed` unless honest phones could have sent `summed`.

    Args:
        counts: the screened counts of the phones in the sum.
        spec: the round's quantisation.
        clip_norm: the round's clip bound C.
        size: D, the update part's length (the figures follow it).
        noise_stddev: one phone's noise share's stddev (0: none).
    """
    dp = config.privacy.dp
    weighted, bit = dp is None, dp is not None and dp.adaptive
    screen = ScreenConfig.for_training(config.local) if weighted else None
    bounds = sum_bounds(
        phone_bounds(counts, clip_norm=clip_norm, screen=screen),
        size=size,
        max_abs=spec.max_abs,
        scale=spec.scale,
        count=sum(counts) if weighted else None,
        bits=bit,
        noise_stddev=noise_stddev * math.sqrt(len(counts)),
    )
    check_sum(summed, bounds)
