"""Who a round asks: a fixed-size draw, or Poisson sampling under DP.

DP's accounting assumes each eligible phone is sampled independently with
probability q (`coordinator.protections.charge`), so a DP round uses every
sampled report that arrives in time: keeping only the first few would couple
the phones. Pinned phones (the demo's "you") are ignored under DP: always
selecting one would break its accounting.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.config import FederationConfig
from coordinator.protections.charge import sampling_probability
from coordinator.protections.state import RoundAsk
from coordinator.round.selection import poisson_select, select_clients


@dataclass(frozen=True)
class FixedSize:
    """Bonawitz et al. 2019's over-selection: a seeded draw of a fixed size."""

    def select(self, eligible: list[str], ask: RoundAsk) -> list[str]:
        """`selection_size` eligible phones, the pinned ones first."""
        return select_clients(
            eligible,
            count=ask.config.selection_size,
            seed=ask.config.seed,
            server_round=ask.server_round,
            pinned=ask.pinned,
        )

    def goal(self, selected: list[str], config: FederationConfig) -> int:
        """Reports the round waits for: the first `clients_per_round`."""
        return config.clients_per_round


@dataclass(frozen=True)
class Poisson:
    """Each eligible phone independently with probability q (DP's sampler)."""

    def select(self, eligible: list[str], ask: RoundAsk) -> list[str]:
        """The sampled phones (pinned ones get no special treatment)."""
        return poisson_select(
            ask.client_ids,
            eligible,
            sampling_probability=sampling_probability(ask.config, len(eligible)),
            seed=ask.config.seed,
            server_round=ask.server_round,
        )

    def goal(self, selected: list[str], config: FederationConfig) -> int:
        """Every sampled report that arrives in time."""
        return len(selected)


Sampler = FixedSize | Poisson
