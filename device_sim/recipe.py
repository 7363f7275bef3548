"""The public recipe of a protected round: what every phone does to its update.

The server chooses it once a round from public settings (`coordinator.
protections`); the phone follows it (`device_sim.contribution`). Nothing in it
is secret or phone-specific: the clip bound, the weighting, whether a clip bit
is appended, and distributed DP's noise share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from device_sim.clipping import phone_noise
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
