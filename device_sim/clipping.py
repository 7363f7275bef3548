"""The phone's side of DP-FedAvg: clip the update, report a clip bit, add a share.

DP-FedAvg (McMahan et al. 2018, arXiv 1710.06963) bounds each phone's influence by
scaling its whole update to a global L2 norm of at most `clip_norm` before it leaves
the device; the server then adds Gaussian noise calibrated to that bound
(`coordinator.privacy.dp`). Adaptive clipping (Andrew et al. 2021, arXiv 1905.03871)
also needs one bit per phone, whether its update was within the bound, sent centred (b
− ½) so that one phone moves the bits' sum by at most ½, the sensitivity the
accountant is given (`coordinator.privacy.dp`, where the guarantee is stated).

With distributed noise each phone adds its share of the noise itself, before its
contribution is masked for secure aggregation, so that the server never has to be
trusted to add it: n shares of variance (z·C)²/n sum to the central mechanism's
(z·C)². The share here is continuous Gaussian; a deployment over SecAgg's modular
integers would use the distributed discrete Gaussian (Kairouz et al. 2021, arXiv
2102.06387). The share's random stream is the caller's: by default seeded from
the operating system and kept nowhere; a replayable `(seed, server_round,
client_id, "dp-noise")` stream only when a run opts into replayable noise, which
then has no privacy.

`flatten` and `unflatten` are the one place where an update becomes a vector and
back, for clipping, noise and secure aggregation alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


class NonFiniteUpdateError(ValueError):
    """An update holding NaN or infinity: it cannot be clipped or summed.

    A phone that meets one sends no contribution this round; a sum with it would
    be NaN for every phone in the cohort once masked.
    """


def flatten(update: Sequence[torch.Tensor]) -> np.ndarray:
    """The update's tensors, in order, as one float64 vector."""
    if not update:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate(
        [t.detach().to(torch.float64).reshape(-1).cpu().numpy() for t in update]
    )


def unflatten(vector: np.ndarray, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Tensors of `like`'s shapes and dtypes holding `vector`'s values, in order.

    Raises:
        ValueError: when the vector's length is not the tensors' total size.
    """
    sizes = [t.numel() for t in like]
    if vector.ndim != 1 or vector.shape[0] != sum(sizes):
        raise ValueError(
            f"vector of shape {vector.shape} does not fill {sum(sizes)} values"
        )
    pieces = np.split(vector, np.cumsum(sizes)[:-1]) if sizes else []
    return [
        torch.from_numpy(np.ascontiguousarray(p)).to(t.dtype).reshape(t.shape)
        for p, t in zip(pieces, like, strict=True)
    ]


def global_norm(update: Sequence[torch.Tensor]) -> float:
    """The L2 norm of all the update's values together, computed in float64."""
    total = sum(float((t.detach().to(torch.float64) ** 2).sum()) for t in update)
    return math.sqrt(total)


def clip_update(
    update: Sequence[torch.Tensor], clip_norm: float
) -> tuple[list[torch.Tensor], float]:
    """A copy of `update` scaled to a global L2 norm of at most `clip_norm`.

    The scale is min(1, clip_norm / norm), one factor for every tensor, as in
    DP-FedAvg's flat clipping (McMahan et al. 2018).

    Returns:
        The clipped copy (dtypes kept) and the norm before clipping.

    Raises:
        ValueError: when `clip_norm` is not a positive finite number.
        NonFiniteUpdateError: when the update holds NaN or infinity.
    """
    if not (clip_norm > 0 and math.isfinite(clip_norm)):
        raise ValueError(f"clip_norm must be positive and finite, not {clip_norm}")
    norm = global_norm(update)
    if not math.isfinite(norm):
        raise NonFiniteUpdateError(
            "update holds NaN or infinity (or overflows float64); it cannot be "
            "clipped and must not be sent"
        )
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    clipped = [(t.detach().to(torch.float64) * scale).to(t.dtype) for t in update]
    return clipped, norm


def clip_bit(norm: float, clip_norm: float) -> float:
    """Andrew et al.'s centred bit b − ½ with b = [norm <= C]: +½ when the update
    was not scaled down, −½ when it was (sensitivity ½ of the bits' sum)."""
    return 0.5 if norm <= clip_norm else -0.5


def phone_noise(
    size: int,
    *,
    clip_norm: float,
    noise_multiplier: float,
    noise_shares: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """One phone's share of distributed noise, N(0, (z·C)² / n) per coordinate.

    Added to the phone's clipped (flattened) contribution before masking. When
    all `noise_shares` phones' shares reach the sum it carries N(0, (z·C)²), the
    central mechanism's noise; every share lost to a dropout lowers it (see
    `coordinator.privacy.dp.realised_noise_multiplier`).

    Args:
        size: Length of the flattened update.
        clip_norm: The round's clip bound C.
        noise_multiplier: z, as for the central mechanism.
        noise_shares: n, the number of phones whose shares are meant to sum to
            the full noise; choosing it below the expected cohort over-provisions
            noise against dropouts.
        rng: The phone's secret stream for the round (OS randomness).
    """
    if noise_shares < 1:
        raise ValueError(f"noise_shares must be >= 1, not {noise_shares}")
    if noise_multiplier < 0 or clip_norm <= 0:
        raise ValueError("noise_multiplier must be >= 0 and clip_norm positive")
    stddev = noise_multiplier * clip_norm / math.sqrt(noise_shares)
    return rng.normal(0.0, stddev, size=size)
