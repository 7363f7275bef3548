"""Whole reports through the product's screen, for the screening tests.

A report is `(client_id, update, num_examples)`. Each becomes the summary its
rank would send (`device_sim.executor.summarise`), and `screen_stats` judges the
summaries, exactly as a round does; summaries are keyed by position, since a
test's client ids may repeat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from coordinator.round.robust import (
    Rejection,
    ScreenConfig,
    ScreenHistory,
    UpdateStats,
    screen_stats,
)
from device_sim.config import LocalTrainingConfig
from device_sim.executor import summarise
from device_sim.phone import ClientMetrics, ClientReport

Report = tuple[str, list[torch.Tensor], int]
# The default phones: 16 steps of lr 1 on gradients clipped to 1, batches of 16;
# one step moves at most 1 (16 examples take one step).
DEFAULT = ScreenConfig.for_training(LocalTrainingConfig())
# The loss figures play no part in screening.
_METRICS = ClientMetrics(
    loss_before=0.0, loss_after=0.0, train_loss=0.0, steps=1, num_tokens=1
)


def screen_reports(
    reference: list[torch.Tensor],
    reports: Sequence[Report],
    *,
    config: ScreenConfig | None = None,
    history: ScreenHistory | None = None,
) -> tuple[list[Report], list[Rejection]]:
    """The accepted reports (unchanged, in order) and the rejections."""
    summaries = [
        summarise(ClientReport(str(i), update, count, _METRICS), reference)
        for i, (_, update, count) in enumerate(reports)
    ]
    accepted, rejected, _ = screen_stats(
        summaries, config=config or ScreenConfig(), history=history or ScreenHistory()
    )
    kept = {int(i) for i in accepted}
    return (
        [r for i, r in enumerate(reports) if i in kept],
        [Rejection(reports[int(r.client_id)][0], r.reason) for r in rejected],
    )


def stats(client_id: str, num_examples: int, norm: float) -> UpdateStats:
    """A phone's summary as the screen reads it, healthy when its norm is finite."""
    return UpdateStats(client_id, num_examples, norm, math.isfinite(norm), None)


def sketched(client_id: str, direction: Sequence[float]) -> UpdateStats:
    """A healthy one-example summary of norm 1 whose sketch is `direction`."""
    return UpdateStats(client_id, 1, 1.0, True, None, np.array(direction))
