"""What a protection carries between rounds, and what one round's release is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coordinator.config import FederationConfig
from coordinator.privacy.accountant import PrivacyAccountant
from models.weights import Parameters


@dataclass(frozen=True)
class PrivacyState:
    """What the protections carry from round to round (saved in state.json)."""

    accountant: dict[str, Any] = field(default_factory=dict)  # to_dict(); {}: none
    clip_norm: float | None = None  # DP's current clip bound (adaptive moves it)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"accountant": self.accountant, "clip_norm": self.clip_norm}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PrivacyState:
        """The state `to_dict` wrote (None: a run without DP so far)."""
        data = data or {}
        clip = data.get("clip_norm")
        return cls(
            dict(data.get("accountant") or {}), None if clip is None else float(clip)
        )

    def load_accountant(self) -> PrivacyAccountant:
        """The accountant of the rounds recorded so far."""
        if not self.accountant:
            return PrivacyAccountant()
        return PrivacyAccountant.from_dict(self.accountant)


@dataclass(frozen=True)
class Release:
    """A round's pseudo-gradient under its protection, and what the server held.

    `exact_sum` and `noisy_mean` are what a curious server holds after the
    round (the attack probe's input, `coordinator.measure.attack_probe`).
    """

    delta: Parameters  # what server_step applies
    state: PrivacyState
    figures: dict[str, Any]  # merged into the round's metrics line
    # The sum the server sees (after unmasking, before noise); None when it sees
    # no sum (a robust aggregator's individual updates).
    exact_sum: Parameters | None
    noisy_mean: Parameters | None = None  # DP's released mean; None without DP
    # The phones whose contributions are in the sum (SecAgg's survivors).
    included: frozenset[str] = frozenset()
    # Bytes each phone sent under the protection (SecAgg's masked vector and
    # messages); None: its update as summarised.
    bytes_up_per_phone: int | None = None


class AggregationAborted(Exception):
    """The protection could not form the round's sum: nothing is released.

    `reason` goes into the line's `abandon_reason`, `figures` beside it.
    """

    def __init__(self, reason: str, figures: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.figures = figures or {}


@dataclass(frozen=True)
class RoundAsk:
    """What a protection is told of the round it wraps (public, server-side)."""

    config: FederationConfig  # the round's config (a budget may choose its z)
    server_round: int
    pool: int  # phones eligible when the round started: DP samples from them
    state: PrivacyState = PrivacyState()  # the protections' state before it
    client_ids: tuple[str, ...] = ()  # the whole fleet (Poisson's draw order)
    pinned: tuple[str, ...] = ()  # phones always selected when eligible
