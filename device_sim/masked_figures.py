"""A phone's loss figures as numbers that ride inside secure aggregation's sum.

Under SecAgg the server must not see one phone's losses on its own data: how
well the global model fits one phone's text is a membership signal. What the
server uses are example-weighted means over the round, which need only sums, so
each phone appends n × loss (train, before and after) to the vector it masks,
beside n × update and n (`device_sim.contribution`), and the
server divides the unmasked sums by the summed count.

Every coordinate of the masked vector must lie within the round's public bound
max_abs = max_examples × max(C, 1) (`secagg.quantize`). A loss is
clamped to [0, LOSS_CAP] and scaled by `loss_scale(C)` = max(C, 1) / LOSS_CAP,
so n × the scaled loss fits the bound too; the server undoes the scale.
"""

from __future__ import annotations

import numpy as np

from device_sim.phone import ClientMetrics

# Nats: above the loss of any model fedtype trains on a real vocabulary (a
# uniform guess over 100,000 words is 11.5); a diverged phone's loss is clamped.
LOSS_CAP = 64.0
LOSS_FIELDS = ("train_loss", "loss_before", "loss_after")


def loss_scale(clip_norm: float) -> float:
    """The public factor that maps a loss in [0, LOSS_CAP] into [0, max(C, 1)]."""
    return max(clip_norm, 1.0) / LOSS_CAP


def weighted_losses(
    metrics: ClientMetrics, num_examples: int, *, scale: float
) -> np.ndarray:
    """(3,) float64: n × the clamped train, before and after losses × `scale`.

    A non-finite loss (a broken phone) counts as LOSS_CAP, so the vector stays
    quantisable; the screen judges the update, not these figures.
    """
    losses = np.array([getattr(metrics, f) for f in LOSS_FIELDS], dtype=np.float64)
    losses = np.nan_to_num(losses, nan=LOSS_CAP, posinf=LOSS_CAP, neginf=0.0)
    return np.clip(losses, 0.0, LOSS_CAP) * (num_examples * scale)


def mean_losses(
    sums: np.ndarray, num_examples: float, *, scale: float
) -> dict[str, float | None]:
    """The example-weighted mean losses from the summed `weighted_losses`."""
    if not num_examples > 0:
        return {f: None for f in LOSS_FIELDS}
    return {
        f: float(total / scale / num_examples)
        for f, total in zip(LOSS_FIELDS, sums, strict=True)
    }
