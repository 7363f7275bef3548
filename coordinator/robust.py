"""Screening of client updates before aggregation.

A phone can report an update that would poison the global model: the wrong
structure, NaN or Inf after a diverged local run, a bogus example count, or an
update far larger than its peers'. `screen_updates` keeps the reports that are
safe to average and names the reason for each one it drops.

The norm rule is a simple median-based outlier test in the spirit of the
norm-bounding defences studied for federated learning (Sun et al. 2019, "Can You
Really Backdoor Federated Learning?", arXiv 1911.07963): an update whose L2 norm
exceeds `norm_factor` times the median norm of the well-formed updates is
dropped. The median, unlike the mean, is not dragged up by the outlier itself.

Everything here is pure: no I/O, no logging, inputs left unchanged.
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from coordinator.strategies import Parameters

# One client's report: (client_id, update = local - global weights, num_examples).
Report = tuple[str, Parameters, int]


@dataclass(frozen=True)
class Rejection:
    """A report left out of aggregation, and why."""

    client_id: str
    # Human-readable, e.g. "shape (4,) != (5,) in tensor 0".
    reason: str


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _structure_problem(
    reference: Parameters, update: object, num_examples: object
) -> str | None:
    """Why a report is malformed, judged without reading tensor values."""
    if isinstance(num_examples, bool) or not isinstance(num_examples, numbers.Integral):
        return f"num_examples {num_examples!r} is not an integer"
    if num_examples <= 0:
        return f"num_examples {num_examples} <= 0"
    if not isinstance(update, list | tuple):
        return f"update is a {type(update).__name__}, not a list of tensors"
    if len(update) != len(reference):
        return f"{len(update)} tensors != {len(reference)} expected"
    for i, (t, r) in enumerate(zip(update, reference, strict=True)):
        if not isinstance(t, torch.Tensor):
            return f"{type(t).__name__} is not a tensor in tensor {i}"
        if t.shape != r.shape:
            return f"shape {tuple(t.shape)} != {tuple(r.shape)} in tensor {i}"
        if t.dtype != r.dtype:
            return (
                f"dtype {_dtype_name(t.dtype)} != {_dtype_name(r.dtype)} in tensor {i}"
            )
        if t.device != r.device:
            return f"device {t.device} != {r.device} in tensor {i}"
    return None


def _update_norm(update: Parameters) -> tuple[float, int | None]:
    """The update's L2 norm (float64) and the first tensor with NaN/Inf, if any.

    One pass per tensor: the norm of a float tensor is finite exactly when all
    its values are, since squares of finite float32 values cannot overflow float64.
    """
    squares = 0.0
    for i, t in enumerate(update):
        norm = float(torch.linalg.vector_norm(t, dtype=torch.float64))
        if not math.isfinite(norm):
            return math.nan, i
        squares += norm * norm
    return math.sqrt(squares), None


@torch.no_grad()
def screen_updates(
    reference: Parameters,
    reports: Sequence[Report],
    *,
    norm_factor: float = 10.0,
    min_for_norm_check: int = 3,
) -> tuple[list[Report], list[Rejection]]:
    """Split `reports` into those safe to aggregate and rejections with reasons.

    Args:
        reference: the global parameters; updates must match their number of
            tensors, shapes, dtypes and devices.
        reports: `(client_id, update, num_examples)` per client.
        norm_factor: an update whose L2 norm exceeds this times the median norm
            of the well-formed updates is rejected.
        min_for_norm_check: the norm rule applies only when at least this many
            updates are well-formed (a median of one or two says little).

    Returns:
        The accepted reports, in their original order and unchanged, and one
        `Rejection` per dropped report, also in report order.
    """
    if not norm_factor > 0:
        raise ValueError(f"norm_factor must be positive, got {norm_factor}")
    if min_for_norm_check < 1:
        raise ValueError(f"min_for_norm_check must be >= 1, got {min_for_norm_check}")
    reasons: list[str | None] = []
    norms: dict[int, float] = {}  # report index -> norm, well-formed reports only
    for index, (_, update, num_examples) in enumerate(reports):
        reason = _structure_problem(reference, update, num_examples)
        if reason is None:
            norm, bad_tensor = _update_norm(update)
            if bad_tensor is not None:
                reason = f"non-finite values in tensor {bad_tensor}"
            else:
                norms[index] = norm
        reasons.append(reason)
    if len(norms) >= min_for_norm_check:
        median = statistics.median(norms.values())
        for index, norm in norms.items():
            if norm > norm_factor * median:
                reasons[index] = (
                    f"norm {norm:.4g} > {norm_factor:g} x median {median:.4g}"
                )
    accepted = [r for r, why in zip(reports, reasons, strict=True) if why is None]
    rejected = [
        Rejection(client_id=r[0], reason=why)
        for r, why in zip(reports, reasons, strict=True)
        if why is not None
    ]
    return accepted, rejected
