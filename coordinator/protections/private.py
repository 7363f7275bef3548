"""Secure aggregation and DP-FedAvg wrap the aggregation of a round.

A `Private` protection is three parts chosen once per run
(`coordinator.protections.protection_for`): who is asked (`sampling`), how the
phones' contributions are summed (`transport`: in the clear or under SecAgg+),
and what is released from the sum (`releases`: the weighted mean, or DP's noisy
mean and its charge). What each phone does to its update before it leaves is
the phone's side, `device_sim.contribution`, given a public `Recipe`.

C is DP's clip bound (adapting to a quantile of the norms when asked), or under
SecAgg alone the bound honest local training already respects
(`ScreenConfig.max_norm`: steps × client_lr × local clip), so the clip changes
no honest update and bounds what a hostile one adds to the sum. The screen
judges each phone by its own report only (no rule compares phones), and under
SecAgg sees only what a phone reports of itself (its count, a finite/structure
flag), never its norm.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from coordinator.config import FederationConfig
from coordinator.protections.plain import Screening
from coordinator.protections.releases import NoisyMean, SumRelease, WeightedMean
from coordinator.protections.sampling import Sampler
from coordinator.protections.state import (
    AggregationAborted,
    PrivacyState,
    Release,
    RoundAsk,
)
from coordinator.protections.sum_checks import SumCheckFailed
from coordinator.protections.transport import Opening, SumShape, Transport
from coordinator.round.robust import ScreenConfig, StatsLike
from device_sim.executor import ClientSummary, TrainedRound
from device_sim.recipe import NoiseShare, Recipe
from secagg import SecAggAbort

# A phone's noise share fits the quantisation range up to this many stddevs.
_SHARE_SPREAD = 6


def local_bound(config: FederationConfig) -> tuple[float, int]:
    """(the norm, the count) no honest phone's update exceeds: SecAgg's clip."""
    screen = ScreenConfig.for_training(config.local)
    max_examples = screen.max_examples()
    norm = None if max_examples is None else screen.max_norm(max_examples)
    if norm is None or max_examples is None:
        raise ValueError("no bound on the phones' updates (see FederationConfig)")
    return norm, max_examples


def current_clip(config: FederationConfig, state: PrivacyState) -> float:
    """The clip bound C of this round."""
    dp = config.privacy.dp
    if dp is None:
        return local_bound(config)[0]
    return state.clip_norm if state.clip_norm is not None else dp.clip_norm


def phone_recipe(config: FederationConfig, clip_norm: float) -> Recipe:
    """What every phone of the round does to its update (public settings)."""
    privacy, dp = config.privacy, config.privacy.dp
    noise = None
    if dp is not None and dp.placement == "distributed":
        noise = NoiseShare(
            noise_multiplier=dp.noise_multiplier,
            noise_shares=dp.resolved_noise_shares,
            bit_stddev=dp.resolved_count_stddev,
            replay_seed=config.seed if privacy.replayable_noise else None,
        )
    return Recipe(
        clip_norm=clip_norm,
        weighted=dp is None,
        clip_bit=dp is not None and dp.adaptive,
        noise=noise,
    )


def _max_abs(config: FederationConfig, recipe: Recipe) -> float:
    """The public bound on every value a phone sends (SecAgg's range)."""
    max_examples = local_bound(config)[1] if recipe.weighted else 1
    spread = 0.0
    if recipe.noise is not None:
        spread = _SHARE_SPREAD * recipe.noise.largest_stddev(recipe.clip_norm)
    return max_examples * max(recipe.clip_norm, 1.0) + spread


@dataclass(frozen=True)
class Private(Screening):
    """Secure aggregation, DP-FedAvg, or both: a sampler, a transport, a release."""

    name: str
    sampler: Sampler
    transport: Transport
    release: WeightedMean | NoisyMean
    # Per-phone rules only: under DP one phone may not decide whether another
    # is counted, and under SecAgg the server sees no single norm.
    relative: bool = False

    @property
    def reveals_norms(self) -> bool:
        """Whether the phones' summaries carry their norms and losses."""
        return self.transport.reveals_norms

    @property
    def must_release(self) -> bool:
        """DP releases whatever arrived: abandoning would depend on who did."""
        return self.release.must_release

    def view(self, summaries: Sequence[ClientSummary]) -> Sequence[StatsLike]:
        """What the transport lets the server see of each phone."""
        return self.transport.view(summaries)

    def aggregate(
        self, trained: TrainedRound, accepted: Collection[str], ask: RoundAsk
    ) -> Release:
        """The round's delta under the protection.

        Raises:
            AggregationAborted: SecAgg could not unmask the sum, or no honest
                cohort could have sent it (`SumCheckFailed`, counted as a
                hostile phone's); nothing is released.
        """
        try:
            return self._aggregate(trained, accepted, ask)
        except SecAggAbort as abort:
            fault = {"sum_check_failed": 1} if isinstance(abort, SumCheckFailed) else {}
            reason = f"secure aggregation abandoned the round: {abort.reason}"
            raise AggregationAborted(reason, fault) from abort

    def _aggregate(
        self, trained: TrainedRound, accepted: Collection[str], ask: RoundAsk
    ) -> Release:
        config = ask.config
        clip = current_clip(config, ask.state)
        recipe = phone_recipe(config, clip)
        max_abs = _max_abs(config, recipe)
        opening = Opening(config, ask.server_round, max_abs, trained.secagg_phones)
        opened = self.transport.open(sorted(accepted), opening)
        total, opened.mask_seconds = trained.protected_sum(
            opened.survivors,
            recipe,
            server_round=ask.server_round,
            maskers=opened.masker,
            dtype=opened.dtype,
        )
        included = set(opened.survivors)
        size = sum(t.numel() for t in trained.reference)
        noise = 0.0 if recipe.noise is None else recipe.noise.largest_stddev(clip)
        counts = [s.num_examples for s in trained.summaries if s.client_id in included]
        shape = SumShape(counts, clip, size, recipe.appended, noise)
        summed, figures = opened.close(total, shape=shape, config=config)
        shares = len(included) if recipe.noise is not None else None
        like = [t.to(torch.float64) for t in trained.reference]
        release = self.release.release(
            SumRelease(summed, like, clip, ask, trained.ranks, shares)
        )
        secure = config.privacy.secure_aggregation
        head = {"secure_aggregation": secure, "clip_norm": clip}
        return replace(
            release,
            figures={**head, **figures, **release.figures},
            included=frozenset(included),
            bytes_up_per_phone=opened.bytes_up_per_phone(shape),
        )

    def charge_abandoned(self, ask: RoundAsk) -> tuple[PrivacyState, dict[str, Any]]:
        """A DP round that sampled and released nothing is charged anyway."""
        return self.release.charge_abandoned(ask)
