"""The screen's rules that judge a report against the others (rules 5 to 7 of
`coordinator.round.robust`): the pace rule, the progress rule and the direction rule,
and the history of accepted paces they pool with each round.

Each rule reads the reports' statistics and the reasons found so far, and writes
a reason for each survivor it rejects. They never run under secure aggregation
or differential privacy (`coordinator.round.robust.compares_users`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from coordinator.round.robust import ScreenConfig, ScreenHistory, StatsLike


def _survivors(
    stats: Sequence[StatsLike], reasons: list[str | None]
) -> list[tuple[int, StatsLike]]:
    return [(i, s) for i, s in enumerate(stats) if reasons[i] is None]


def _norm_rule(
    stats: Sequence[StatsLike],
    reasons: list[str | None],
    config: ScreenConfig,
    history: ScreenHistory,
) -> None:
    """Rule 5: no pace above `norm_factor` x the pooled median pace (the norm
    per claimed step, or the norm when the local settings are unknown)."""
    paced = config.local is not None
    survivors = [
        (i, s, per_step if paced and per_step is not None else s.norm)
        for i, s in _survivors(stats, reasons)
        for per_step in (_step_norm(s, config),)
    ]
    past = history.step_norms if paced else history.norms
    pooled = [*past, *(pace for _, _, pace in survivors)]
    if len(pooled) < config.min_for_norm_check:
        return
    median = statistics.median(pooled)
    for index, s, pace in survivors:
        if pace <= config.norm_factor * median:
            continue
        if paced:
            reasons[index] = (
                f"norm {s.norm:.4g} over {config.steps(s.num_examples)} steps > "
                f"{config.norm_factor:g} x median per step {median:.4g}"
            )
        else:
            reasons[index] = (
                f"norm {s.norm:.4g} > {config.norm_factor:g} x median {median:.4g}"
            )


def _step_norm(s: StatsLike, config: ScreenConfig) -> float | None:
    steps = config.steps(s.num_examples)
    return None if not steps else s.norm / steps


def _progress_rule(
    stats: Sequence[StatsLike],
    reasons: list[str | None],
    config: ScreenConfig,
    history: ScreenHistory,
) -> None:
    """Rule 6: no norm per claimed step below 1 / `norm_factor` of the median."""
    survivors = [
        (i, s, per_step)
        for i, s in _survivors(stats, reasons)
        if (per_step := _step_norm(s, config)) is not None
    ]
    pooled = [*history.step_norms, *(per_step for _, _, per_step in survivors)]
    if len(pooled) < config.min_for_norm_check:
        return
    median = statistics.median(pooled)
    for index, s, per_step in survivors:
        if per_step * config.norm_factor < median:
            reasons[index] = (
                f"norm {s.norm:.4g} over {config.steps(s.num_examples)} steps for "
                f"{s.num_examples} examples < 1/{config.norm_factor:g} of the "
                f"median per step {median:.4g}"
            )


def _direction_rule(
    stats: Sequence[StatsLike],
    reasons: list[str | None],
    config: ScreenConfig,
    history: ScreenHistory,
) -> None:
    """Rule 7: no cosine with the survivors' coordinate-wise median below the
    threshold (estimated from sketches; reports without one are not judged)."""
    if config.min_cosine <= -1.0:
        return
    from device_sim.sketch import cosine  # here: coordinator.config needs no torch

    sketched = [
        (i, s.sketch) for i, s in _survivors(stats, reasons) if s.sketch is not None
    ]
    if len(sketched) < config.min_for_norm_check:
        return
    median = np.median(np.stack([sketch for _, sketch in sketched]), axis=0)
    for index, sketch in sketched:
        similarity = cosine(sketch, median)
        if similarity < config.min_cosine:
            reasons[index] = (
                f"direction: cosine {similarity:.3f} with the round's median "
                f"update < {config.min_cosine:g}"
            )


def remember(
    history: ScreenHistory, kept: Sequence[StatsLike], config: ScreenConfig
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The history's norms and paces with the accepted reports', the newest
    `history_size` of each."""
    size = config.history_size
    norms = (*history.norms, *(s.norm for s in kept))
    per_step = [_step_norm(s, config) for s in kept]
    step_norms = (*history.step_norms, *(n for n in per_step if n is not None))
    return (
        norms[max(0, len(norms) - size) :],
        step_norms[max(0, len(step_norms) - size) :],
    )


Rule = Callable[
    [Sequence["StatsLike"], list[str | None], "ScreenConfig", "ScreenHistory"], None
]
# In order: a rule judges the survivors of the ones before it.
RULES: tuple[Rule, ...] = (_norm_rule, _progress_rule, _direction_rule)
