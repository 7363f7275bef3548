"""The settings of a phone's memory (`device_sim.memory`), free of torch so that
the command line's help and argument checks load no model code."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Mixing:
    """How a memory is mixed into the model: λ, k and the temperature T."""

    weight: float  # λ, the kNN reading's share of the probability
    neighbours: int  # k, the nearest keys that vote
    temperature: float  # T in softmax(-d / T) over squared L2 distances
    # μ, the phrase reading's share: the words that followed the previous word
    # in the phone's own text. λ = μ = 0 is the model alone.
    phrase_weight: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.weight < 1:
            raise ValueError(f"weight must lie in [0, 1), not {self.weight}")
        if not 0 <= self.phrase_weight < 1 - self.weight:
            raise ValueError(
                f"phrase_weight must lie in [0, 1 - weight), not {self.phrase_weight}"
            )
        if self.neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, not {self.neighbours}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be positive, not {self.temperature}")

    @property
    def mixes(self) -> bool:
        """Whether either reading of the memory gets a share (λ or μ > 0)."""
        return self.weight > 0 or self.phrase_weight > 0


# The global model alone.
NO_MEMORY = Mixing(weight=0.0, neighbours=1, temperature=1.0)


@dataclass(frozen=True)
class MemoryConfig:
    """How big a phone's memory is and which mixings its gate tries."""

    # Newest entries kept: a word and the end of each message are one entry each,
    # so this holds the whole 4,000-word capped history of the heaviest typist.
    capacity: int = 4096
    # λ tried besides 0 (the global model, which the gate starts from).
    weights: tuple[float, ...] = (0.1, 0.25, 0.5)
    # k tried: few neighbours copy the last context's word; more smooth it.
    neighbours: tuple[int, ...] = (8, 32)
    # T tried, in squared feature distance. On the default model at round 25
    # the median squared distance from a phone's validation positions to the
    # nearest key of its older text was 0.03-0.20, to the 8th 0.10-2.5 (15
    # phones): 0.1 lets the nearest keys outvote the rest, 1.0 counts k evenly.
    temperatures: tuple[float, ...] = (0.1, 1.0)
    # μ tried first, alone (the phrase reading); the kNN grid then tries λ, k, T
    # on top of the best. On the default run's sample of 60 cohort phones
    # (docs/learning.md) this order gave the memory 12.26 % pooled future top-1
    # against 11.99 % with kNN first (the model alone: 11.31 %).
    phrase_weights: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    # What a phone with too little history for a validation slice uses (the
    # demo's phone after its first messages): a middling mixing.
    prior: Mixing = Mixing(
        weight=0.25, neighbours=8, temperature=0.1, phrase_weight=0.1
    )

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {self.capacity}")
        for mixing in self.phrase_grid():  # each Mixing checks its own values
            self.grid(mixing.phrase_weight)

    def phrase_grid(self) -> list[Mixing]:
        """Every phrase weight μ the gate tries alone, in a fixed order."""
        return [replace(NO_MEMORY, phrase_weight=mu) for mu in self.phrase_weights]

    def grid(self, phrase_weight: float = 0.0) -> list[Mixing]:
        """Every kNN mixing the gate tries on top of `phrase_weight`, leaving the
        model a share, in a fixed order."""
        return [
            Mixing(weight, k, temperature, phrase_weight)
            for weight in self.weights
            if weight + phrase_weight < 1
            for k in self.neighbours
            for temperature in self.temperatures
        ]
