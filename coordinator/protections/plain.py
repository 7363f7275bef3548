"""No protection: FedAvg's weighted mean, or a robust aggregator, in the clear.

FedAvg's example-weighted mean (McMahan et al. 2017, arXiv 1602.05629) needs
only sums: one all-reduce over the ranks. A robust aggregator (a median, Krum)
needs every update, so those are gathered from the ranks. The screen sees each
phone's norm and sketch, and may compare phones with each other
(`coordinator.round.robust`, rules 5 to 7).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from coordinator.config import FederationConfig
from coordinator.protections.sampling import FixedSize
from coordinator.protections.state import PrivacyState, Release, RoundAsk
from coordinator.round.robust import (
    Rejection,
    ScreenConfig,
    ScreenHistory,
    StatsLike,
    screen_stats,
)
from coordinator.round.robust_aggregation import aggregate_updates
from device_sim.executor import ClientSummary, TrainedRound


def screen_config(config: FederationConfig, *, relative: bool) -> ScreenConfig:
    """The run's screen: every absolute bound, the relative rules if allowed."""
    return ScreenConfig.of_run(config.screen, config.local, relative=relative)


Screened = tuple[list[str], list[Rejection], ScreenHistory]


class Screening:
    """The screen a protection allows: on what the server may see of each
    phone, with the rules that compare phones only when `relative`."""

    relative: bool

    def view(self, summaries: Sequence[ClientSummary]) -> Sequence[StatsLike]:
        """What the screen sees of each phone (every summary as it is)."""
        return summaries

    def screen(
        self, summaries: Sequence[ClientSummary], ask: RoundAsk, history: ScreenHistory
    ) -> Screened:
        """The accepted phones, the rejections, the screen's new history."""
        config = screen_config(ask.config, relative=self.relative)
        return screen_stats(self.view(summaries), config=config, history=history)


@dataclass(frozen=True)
class Plain(Screening):
    """No protection: the server sees every summary and every sum."""

    name: str = "none"
    sampler: FixedSize = FixedSize()
    reveals_norms: bool = True  # summaries carry norms, sketches, losses
    must_release: bool = False  # too few valid reports abandon the round
    relative: bool = True  # every rule of `coordinator.round.robust`

    def aggregate(
        self, trained: TrainedRound, accepted: Collection[str], ask: RoundAsk
    ) -> Release:
        """The round's pseudo-gradient from the accepted updates."""
        config, state = ask.config, ask.state
        if config.aggregation.name == "mean":
            total, num_examples = trained.weighted_sum(accepted)
            mean = [t / num_examples for t in total]
            # The weighted mean is a positive multiple of the sum: the same attack.
            return Release(mean, state, {}, mean, included=frozenset(accepted))
        pairs = trained.gather_updates(accepted)
        delta = aggregate_updates(
            config.aggregation.name,
            [u for u, _ in pairs],
            [n for _, n in pairs],
            trim_fraction=config.aggregation.trim_fraction,
            byzantine_fraction=config.aggregation.byzantine_fraction,
        )
        return Release(delta, state, {}, None, included=frozenset(accepted))

    def charge_abandoned(self, ask: RoundAsk) -> tuple[PrivacyState, dict[str, Any]]:
        """Nothing to charge."""
        return ask.state, {}
