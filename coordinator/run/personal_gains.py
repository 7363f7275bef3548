"""How personal models did against the global one, phone by phone, and whether
it can be told from noise.

A phone's future text holds at most a few dozen word targets, so its accuracy
moves by several points when a handful of predictions change: "top-1 fell" on a
phone is mostly chance. A phone counts as **significantly helped or hurt** only
by an exact two-sided sign test at 5 % on its paired counts: the future word
targets the personal model got and the global one missed (wins) against the
reverse (losses); targets both got or both missed say nothing about the
difference. Relative gains are (personal − global) / global top-1 hits.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the phone's code: torch
    from device_sim.personal_outcome import Paired
    from models.metrics import EvalCounts

# The sign test's level: a phone is helped or hurt below this p-value.
SIGNIFICANCE = 0.05


def relative_gain(new: float, base: float) -> float:
    """(new - base) / base: 0.25 from 0.20 to 0.25; nan when base is 0."""
    return (new - base) / base if base else math.nan


def sign_test(wins: int, losses: int) -> float:
    """The exact two-sided sign test's p-value of `wins` against `losses`.

    Under no difference each discordant target is a win with probability ½:
    p = min(1, 2·P(X ≤ min(wins, losses))), X ~ Binomial(wins + losses, ½).
    sign_test(0, 0) is 1; sign_test(6, 0) is 2/64 = 0.03125.
    """
    if wins < 0 or losses < 0:
        raise ValueError(f"counts must be >= 0, not {wins} and {losses}")
    n = wins + losses
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2**n)


@dataclass(frozen=True)
class GainSummary:
    """How one variant did against the global model, phone by phone."""

    mean_top1: float  # mean over phones of the relative top-1 gain
    median_top1: float
    mean_top3: float  # the same for top-3
    median_top3: float
    hurt_share: float  # phones whose top-1 hits fell at all, of those measured
    helped_share: float  # phones whose top-1 hits rose at all
    phones: int  # phones with word targets in their future text
    no_baseline: int  # of them, phones the global model got no top-1 hit on
    # Phones the sign test finds helped or hurt at 5 %, and the rest; nan
    # without paired counts (a report written before they were kept).
    significantly_helped: float = math.nan
    significantly_hurt: float = math.nan
    no_detectable_change: float = math.nan


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _significance(paired: Sequence[Paired]) -> tuple[float, float, float]:
    """Shares of phones significantly helped, hurt, and neither."""
    if not paired:
        return math.nan, math.nan, math.nan
    tested = [(p.wins > p.losses, sign_test(p.wins, p.losses)) for p in paired]
    helped = sum(up and p < SIGNIFICANCE for up, p in tested)
    hurt = sum(not up and p < SIGNIFICANCE for up, p in tested)
    n = len(tested)
    return helped / n, hurt / n, (n - helped - hurt) / n


def gain_summary(
    pairs: Sequence[tuple[EvalCounts, EvalCounts]],
    paired: Sequence[Paired | None] | None = None,
) -> GainSummary:
    """The relative gains of `(variant, global)` counts on each phone's one text.

    A phone without word targets counts nowhere; one where the global model had
    no top-1 (or top-3) hit has no relative gain there and is left out of that
    mean and median, but still counts as hurt or helped. `paired`, one per pair
    when given, feeds the sign test.
    """
    rows = [
        (new, base, paired[i] if paired is not None else None)
        for i, (new, base) in enumerate(pairs)
        if base.word_targets
    ]
    top1 = [relative_gain(n.top1_hits, b.top1_hits) for n, b, _ in rows]
    top3 = [relative_gain(n.top3_hits, b.top3_hits) for n, b, _ in rows]
    top1 = [g for g in top1 if not math.isnan(g)]
    top3 = [g for g in top3 if not math.isnan(g)]
    phones = len(rows)
    tested = [p for _, _, p in rows if p is not None]
    helped, hurt, unchanged = _significance(tested if len(tested) == phones else [])
    return GainSummary(
        mean_top1=_mean(top1),
        median_top1=_median(top1),
        mean_top3=_mean(top3),
        median_top3=_median(top3),
        hurt_share=sum(n.top1_hits < b.top1_hits for n, b, _ in rows) / phones
        if phones
        else math.nan,
        helped_share=sum(n.top1_hits > b.top1_hits for n, b, _ in rows) / phones
        if phones
        else math.nan,
        phones=phones,
        no_baseline=sum(not b.top1_hits for _, b, _ in rows),
        significantly_helped=helped,
        significantly_hurt=hurt,
        no_detectable_change=unchanged,
    )
