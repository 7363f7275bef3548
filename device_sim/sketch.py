"""A count sketch of an update: a few thousand numbers that keep its direction.

The screen (`coordinator.round.robust`) rejects an update that points away from the
round's other updates, which a norm bound cannot see: a sign-flipped update is
exactly as long as an honest one. Comparing directions needs every update in one
place, and a multi-rank round keeps updates on the rank that trained them. So each
rank sends a sketch instead: the update with a random sign on every coordinate,
folded into `SKETCH_WIDTH` buckets (coordinate i lands in bucket i mod width).
With random signs the inner product of two sketches is an unbiased estimate of the
updates' inner product, with a standard error of about |x| |y| sqrt(2 / width)
(the count sketch of Charikar, Chen and Farach-Colton 2002; FetchSGD, Rothchild
et al. 2020, arXiv 2007.07682, sketches federated updates the same way). At 4,096
buckets a cosine is off by about 0.02, far less than the gap between honest and
flipped updates' cosines measured in docs/robustness.md.

The signs come from a fixed public seed, as a hash does: the sketch bounds faulty
and the benchmark's hostile phones, not an attacker who crafts its update against
the hash. Under secure aggregation no sketch leaves a phone (`summarise`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

# Buckets of a sketch: 32 KiB a phone in float64, a cosine error of about 0.02.
SKETCH_WIDTH = 4096
# The public seed of the signs, the same on every rank and in every run.
SKETCH_SEED = 0x5EC7


@lru_cache(maxsize=2)
def _signs(size: int, seed: int) -> torch.Tensor:
    """+1 or -1 for each of `size` coordinates, float32."""
    generator = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (size,), generator=generator, dtype=torch.int8)
    return bits.to(torch.float32).mul_(2).sub_(1)


def sketch_update(
    update: Sequence[torch.Tensor],
    *,
    width: int = SKETCH_WIDTH,
    seed: int = SKETCH_SEED,
) -> np.ndarray:
    """The update's count sketch, shape (width,), float64.

    Raises:
        ValueError: `width` is below 1.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    size = sum(t.numel() for t in update)
    rows = -(-size // width)
    folded = torch.zeros(rows * width, dtype=torch.float32)
    if size:
        flat = torch.cat([t.detach().reshape(-1).to(torch.float32) for t in update])
        torch.mul(flat, _signs(size, seed), out=folded[:size])
    return folded.view(rows, width).sum(0, dtype=torch.float64).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The cosine of two vectors (0 when either is zero)."""
    scale = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b)) / scale if scale > 0 else 0.0
