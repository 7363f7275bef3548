"""The phone's side of a protected round: what leaves the phone, and how.

Each step is a pure function of the phone's own report, applied where the
update lives (on the rank that trained it), in the order of DP-FedAvg
(McMahan et al. 2018) over SecAgg+ (Bonawitz et al. 2017; Bell et al. 2020):

  clip to C (`device_sim.clipping.clip_update`) → weight it, `num_examples ×
  clipped` with its weighted losses and count appended (SecAgg alone:
  `device_sim.masked_figures`), or weight 1 with the centred clip bit appended
  (DP with an adaptive clip) → add the phone's noise share (distributed DP) →
  quantise and mask (`device_sim.secagg`).

A hostile phone under SecAgg skips the honest pipeline and masks what it likes
(`device_sim.faults`); the server can only check the sum. The server's side
(`coordinator.protections`) chooses the `Recipe` once a round from public
settings and never sees a phone's vector before it is summed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from device_sim.clipping import clip_bit, clip_update, flatten, phone_noise
from device_sim.faults import Fault, hostile_contribution
from device_sim.masked_figures import loss_scale, weighted_losses
from device_sim.phone import ClientReport
from device_sim.secagg import Masker
from models.seeding import numpy_rng, os_rng

# Values SecAgg alone appends to a phone's weighted update: three weighted
# losses and the count.
FIGURES = 4


@dataclass(frozen=True)
class NoiseShare:
    """Distributed DP: each phone's share of the round's Gaussian noise."""

    noise_multiplier: float  # z, as for the central mechanism
    noise_shares: int  # n: the shares meant to sum to the full noise
    # σ_b: the clip bit's noise, drawn when the clip adapts; the quantisation
    # range leaves room for it either way.
    bit_stddev: float
    # A replayable stream `(replay_seed, server_round, client_id, "dp-noise")`
    # (tests and benchmarks: no privacy); None: the OS's randomness.
    replay_seed: int | None = None

    def rng(self, server_round: int, client_id: str) -> np.random.Generator:
        """The phone's noise stream for the round."""
        if self.replay_seed is None:
            return os_rng()
        return numpy_rng(self.replay_seed, server_round, client_id, "dp-noise")

    def draw(
        self, size: int, *, clip_norm: float, bit: bool, rng: np.random.Generator
    ) -> np.ndarray:
        """N(0, (zC)²/n) on the update's coordinates and, with a clip `bit`, N(0,
        σ_b²/n) on the appended bit: n shares sum to the central mechanism's."""
        coordinates = size - 1 if bit else size
        noise = phone_noise(
            coordinates,
            clip_norm=clip_norm,
            noise_multiplier=self.noise_multiplier,
            noise_shares=self.noise_shares,
            rng=rng,
        )
        if not bit:
            return noise
        share = rng.normal(0.0, self.bit_stddev / math.sqrt(self.noise_shares))
        return np.append(noise, share)

    def largest_stddev(self, clip_norm: float) -> float:
        """The largest stddev of one share's values (update or clip bit)."""
        widest = max(self.noise_multiplier * clip_norm, self.bit_stddev)
        return widest / math.sqrt(self.noise_shares)


@dataclass(frozen=True)
class Recipe:
    """What every phone of a round does to its update: public, the same for all."""

    clip_norm: float  # C
    weighted: bool  # SecAgg alone: n × update, its losses and count appended
    clip_bit: bool  # DP with an adaptive clip: the centred bit appended
    noise: NoiseShare | None = None  # distributed DP's share, else None

    @property
    def appended(self) -> int:
        """Values after the update in every contribution."""
        return FIGURES if self.weighted else int(self.clip_bit)


def contribution(report: ClientReport, recipe: Recipe) -> np.ndarray:
    """The phone's float64 vector before noise and masking: clipped, weighted,
    appended.

    (D,) clipped update times `num_examples`, then its three weighted losses
    and the count, when `weighted`; weight 1 with the centred bit [norm <= C] − ½
    appended when `clip_bit` (`device_sim.clipping.clip_bit`).
    """
    clipped, norm = clip_update(report.update, recipe.clip_norm)
    x = flatten(clipped)
    if recipe.weighted:
        n = report.num_examples
        scale = loss_scale(recipe.clip_norm)
        losses = weighted_losses(report.metrics, n, scale=scale)
        return np.concatenate([x * n, losses, [float(n)]])
    if recipe.clip_bit:
        return np.append(x, clip_bit(norm, recipe.clip_norm))
    return x


def protect(
    report: ClientReport,
    recipe: Recipe,
    *,
    server_round: int,
    masker: Masker | None = None,
    fault: Fault | None = None,
) -> np.ndarray:
    """What leaves the phone: its contribution with its noise share, masked
    (int64 in [0, 2^b)) when a `masker` is given, else float64.

    A phone with a `fault` under SecAgg masks its own vector unclipped.
    """
    x = contribution(report, recipe)
    hostile = masker is not None and fault is not None
    if hostile:
        assert masker is not None and fault is not None
        update = hostile_contribution(
            report.update,
            report.num_examples,
            fault=fault,
            clip_norm=recipe.clip_norm,
            weighted=recipe.weighted,
            max_abs=masker.spec.max_abs,
        )
        x[: update.shape[0]] = update  # its figures after it as reported
    if recipe.noise is not None:
        rng = recipe.noise.rng(server_round, report.client_id)
        x = x + recipe.noise.draw(
            x.shape[0], clip_norm=recipe.clip_norm, bit=recipe.clip_bit, rng=rng
        )
    if masker is None:
        return x
    return masker.mask(x, clip=not hostile).vector
