"""Byzantine-robust aggregation of client updates: median, trimmed mean, Krum.

FedAvg's weighted mean lets one report move the average anywhere. These
aggregators bound what a minority of hostile reports can do:

- coordinate-wise median and coordinate-wise trimmed mean (Yin et al. 2018,
  "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
  arXiv 1803.01498): per coordinate, the median of the clients' values, or the
  mean after dropping the `trim` largest and `trim` smallest;
- Krum and Multi-Krum (Blanchard et al. 2017, "Machine Learning with
  Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS): each update is
  scored by the sum of squared distances to its n - f - 2 nearest neighbours,
  where f is the number of hostile reports tolerated; Krum returns the best
  scored update, Multi-Krum the example-weighted mean of the m best (as Flower's
  `MultiKrum`, which scores once and keeps the m lowest).

Each is a pure function `f(updates, num_examples, **settings) -> delta`: the
aggregated update (local minus global weights), which a server optimizer then
applies. Median, trimmed mean and Krum ignore `num_examples` by design (a count is
what a hostile phone inflates); the mean and Multi-Krum's final mean use it.
Updates are stacked per tensor, so memory is n times one update.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from coordinator.round.server_choices import AGGREGATORS as AGGREGATORS
from models.weights import Parameters, check_like


def _check(updates: Sequence[Parameters], num_examples: Sequence[int]) -> None:
    if not updates:
        raise ValueError("no updates to aggregate")
    if len(updates) != len(num_examples):
        raise ValueError(
            f"{len(updates)} updates but {len(num_examples)} example counts"
        )
    if any(n <= 0 for n in num_examples):
        raise ValueError("every num_examples must be positive")
    if any(len(u) != len(updates[0]) for u in updates):
        raise ValueError("updates differ in their number of tensors")


def _stacked(updates: Sequence[Parameters], index: int) -> torch.Tensor:
    """Tensor `index` of every update, stacked: (n, *shape), float64."""
    return torch.stack([u[index].to(torch.float64) for u in updates])


@torch.no_grad()
def weighted_mean(
    updates: Sequence[Parameters], num_examples: Sequence[int]
) -> Parameters:
    """FedAvg's example-weighted mean of the updates (McMahan et al. 2017), one
    new tensor per parameter, accumulated in float64: the one weighted mean.

    Raises:
        ValueError: no updates, a count that is not positive, or tensors whose
            number or shapes differ from the first update's.
    """
    _check(updates, num_examples)
    first = updates[0]
    for update in updates[1:]:
        check_like(first, update, "update")
    accumulators = [
        torch.zeros_like(t, dtype=torch.promote_types(t.dtype, torch.float64))
        for t in first
    ]
    for update, n in zip(updates, num_examples, strict=True):
        for accumulator, t in zip(accumulators, update, strict=True):
            accumulator.add_(t, alpha=n)
    total = sum(num_examples)
    return [a.div_(total).to(t.dtype) for a, t in zip(accumulators, first, strict=True)]


def coordinate_median(
    updates: Sequence[Parameters], num_examples: Sequence[int]
) -> Parameters:
    """The coordinate-wise median (of an even count: the mean of the two middle)."""
    _check(updates, num_examples)
    n = len(updates)
    result = []
    for i, t in enumerate(updates[0]):
        ordered = _stacked(updates, i).sort(dim=0).values
        middle = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
        result.append(middle.to(t.dtype))
    return result


def trimmed_mean(
    updates: Sequence[Parameters],
    num_examples: Sequence[int],
    *,
    trim_fraction: float = 0.1,
) -> Parameters:
    """The coordinate-wise mean without the `floor(trim_fraction * n)` largest and
    as many smallest values (Yin et al.'s beta = `trim_fraction` < 1/2)."""
    _check(updates, num_examples)
    if not 0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must lie in [0, 0.5), got {trim_fraction}")
    n = len(updates)
    trim = math.floor(trim_fraction * n)
    result = []
    for i, t in enumerate(updates[0]):
        ordered = _stacked(updates, i).sort(dim=0).values
        result.append(ordered[trim : n - trim].mean(dim=0).to(t.dtype))
    return result


def krum_scores(updates: Sequence[Parameters], *, num_byzantine: int) -> list[float]:
    """Each update's Krum score: squared distances to its n - f - 2 nearest."""
    n = len(updates)
    flat = torch.stack(
        [torch.cat([t.reshape(-1).to(torch.float64) for t in u]) for u in updates]
    )  # (n, P)
    distances = torch.cdist(flat, flat).pow(2)  # (n, n)
    closest = max(1, n - num_byzantine - 2)
    scores = []
    for row in range(n):
        others = torch.cat([distances[row, :row], distances[row, row + 1 :]])
        scores.append(float(others.sort().values[:closest].sum()))
    return scores


def _check_byzantine(n: int, num_byzantine: int) -> None:
    if num_byzantine < 0:
        raise ValueError(f"num_byzantine must be >= 0, got {num_byzantine}")
    if n < 2 * num_byzantine + 3:
        raise ValueError(
            f"Krum tolerates f hostile reports among n >= 2f + 3; got n = {n}, "
            f"f = {num_byzantine}"
        )


def multi_krum(
    updates: Sequence[Parameters],
    num_examples: Sequence[int],
    *,
    num_byzantine: int,
    num_selected: int | None = None,
) -> Parameters:
    """The example-weighted mean of the `num_selected` best-scored updates.

    `num_selected` defaults to n - f (Blanchard et al.'s m); 1 is Krum.
    """
    _check(updates, num_examples)
    n = len(updates)
    _check_byzantine(n, num_byzantine)
    m = n - num_byzantine if num_selected is None else num_selected
    if not 1 <= m <= n:
        raise ValueError(f"num_selected must lie in [1, {n}], got {m}")
    scores = krum_scores(updates, num_byzantine=num_byzantine)
    # Ties go to the earlier report, so the choice is reproducible.
    chosen = sorted(range(n), key=lambda k: (scores[k], k))[:m]
    chosen.sort()
    return weighted_mean(
        [updates[k] for k in chosen], [num_examples[k] for k in chosen]
    )


def krum(
    updates: Sequence[Parameters], num_examples: Sequence[int], *, num_byzantine: int
) -> Parameters:
    """The single update with the best Krum score (a copy)."""
    return multi_krum(
        updates, num_examples, num_byzantine=num_byzantine, num_selected=1
    )


def byzantine_count(n: int, fraction: float) -> int:
    """Hostile reports to tolerate among n: `floor(fraction * n)`, at most what
    Krum allows (n >= 2f + 3), at least 0."""
    return max(0, min(math.floor(fraction * n), (n - 3) // 2))


@dataclass(frozen=True)
class AggregatorSettings:
    """The run's settings an aggregator may use."""

    trim_fraction: float = 0.1  # trimmed mean: share cut from each end
    byzantine_fraction: float = 0.3  # Krum: share of hostile reports tolerated


def _krum(
    updates: Sequence[Parameters],
    num_examples: Sequence[int],
    settings: AggregatorSettings,
    *,
    single: bool,
) -> Parameters:
    """Krum or Multi-Krum with f from the fraction; the median below 3 reports."""
    if len(updates) < 3:
        return coordinate_median(updates, num_examples)
    f = byzantine_count(len(updates), settings.byzantine_fraction)
    if single:
        return krum(updates, num_examples, num_byzantine=f)
    return multi_krum(updates, num_examples, num_byzantine=f)


Aggregator = Callable[
    [Sequence[Parameters], Sequence[int], AggregatorSettings], Parameters
]
# Every aggregator by its name in `AGGREGATORS` (one entry to add one).
_AGGREGATORS: dict[str, Aggregator] = {
    "mean": lambda u, n, s: weighted_mean(u, n),
    "median": lambda u, n, s: coordinate_median(u, n),
    "trimmed-mean": lambda u, n, s: trimmed_mean(u, n, trim_fraction=s.trim_fraction),
    "krum": lambda u, n, s: _krum(u, n, s, single=True),
    "multi-krum": lambda u, n, s: _krum(u, n, s, single=False),
}


def aggregate_updates(
    name: str,
    updates: Sequence[Parameters],
    num_examples: Sequence[int],
    *,
    trim_fraction: float = 0.1,
    byzantine_fraction: float = 0.3,
) -> Parameters:
    """The delta of aggregator `name` (one of AGGREGATORS) with the run's settings.

    Krum's f is `byzantine_count(n, byzantine_fraction)`; with n < 3 Krum and
    Multi-Krum fall back to the median, which needs no f.
    """
    aggregate = _AGGREGATORS.get(name)
    if aggregate is None:
        choices = ", ".join(AGGREGATORS)
        raise ValueError(f"unknown aggregator {name!r} (one of {choices})")
    settings = AggregatorSettings(trim_fraction, byzantine_fraction)
    return aggregate(updates, num_examples, settings)
