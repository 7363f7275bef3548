"""Robust aggregators and hostile reports: hand-computed medians, trims and Krum."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import f32

from coordinator.round.robust_aggregation import (
    AGGREGATORS,
    aggregate_updates,
    byzantine_count,
    coordinate_median,
    krum,
    krum_scores,
    multi_krum,
    trimmed_mean,
    weighted_mean,
)
from device_sim.config import FleetConfig, FleetConfigError
from device_sim.faults import FAULT_KINDS, corrupt_report, default_fault_scale


def vectors(*rows: tuple[float, ...]) -> list[list[torch.Tensor]]:
    """One update per row, each a single (k,) tensor."""
    return [[f32(*row)] for row in rows]


def scalars(*values: float) -> list[list[torch.Tensor]]:
    """One update per value, each a (1,) tensor and a (2,) tensor of zeros."""
    return [[f32(v), f32(0, 0)] for v in values]


def values(update: list[torch.Tensor]) -> list[float]:
    return [float(x) for t in update for x in t.reshape(-1)]


def test_weighted_mean_is_fedavg_of_the_updates() -> None:
    # Prepare: FedAvg of [1, 2, 3] and [3, 4, 5] with 1 and 3 examples
    updates = vectors((1, 2, 3), (3, 4, 5))

    # Execute
    mean = weighted_mean(updates, [1, 3])

    # Assert
    assert values(mean) == [2.5, 3.5, 4.5]
    assert mean[0].dtype == torch.float32


def test_coordinate_median_odd_and_even_counts() -> None:
    # Prepare: per coordinate (1, 3, 10) -> 3, (2, 4, -1) -> 2, (3, 5, 0) -> 3
    odd = vectors((1, 2, 3), (3, 4, 5), (10, -1, 0))
    even = vectors((1,), (3,), (4,), (100,))

    # Execute
    odd_median = coordinate_median(odd, [1, 1, 1000])
    even_median = coordinate_median(even, [1, 1, 1, 1])

    # Assert: counts do not matter; of four values the mean of the middle two
    assert values(odd_median) == [3.0, 2.0, 3.0]
    assert values(even_median) == [3.5]


def test_trimmed_mean_drops_each_end() -> None:
    # Prepare
    five = vectors((1,), (2,), (3,), (4,), (50,))

    # Execute
    trimmed = trimmed_mean(five, [1] * 5, trim_fraction=0.2)  # floor(1.0) = 1
    untrimmed = trimmed_mean(five, [1] * 5, trim_fraction=0.1)  # floor(0.5) = 0

    # Assert: mean(2, 3, 4) = 3; mean(1, 2, 3, 4, 50) = 12
    assert values(trimmed) == [3.0]
    assert values(untrimmed) == [12.0]
    with pytest.raises(ValueError, match="trim_fraction"):
        trimmed_mean(five, [1] * 5, trim_fraction=0.5)


def test_krum_scores_hand_computed() -> None:
    # Prepare: values 0, 1, 2, 10 with f = 0: each scores its n - f - 2 = 2
    # nearest squared distances
    updates = scalars(0, 1, 2, 10)

    # Execute
    scores = krum_scores(updates, num_byzantine=0)

    # Assert: 0: 1 + 4; 1: 1 + 1; 2: 1 + 4; 10: 64 + 81
    assert scores == [5.0, 2.0, 5.0, 145.0]


def test_krum_picks_the_most_central_update() -> None:
    # Prepare: 0, 1, 2, 3 and a hostile 100, f = 1 (n = 5 >= 2f + 3)
    updates = scalars(0, 1, 2, 3, 100)

    # Execute
    chosen = krum(updates, [1] * 5, num_byzantine=1)

    # Assert: scores 5, 2, 2, 5, huge; the tie goes to the earlier report
    assert values(chosen) == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="2f \\+ 3"):
        krum(updates[:4], [1] * 4, num_byzantine=1)


def test_multi_krum_averages_the_best_scored() -> None:
    # Prepare
    five = scalars(0, 1, 2, 3, 100)
    four = scalars(0, 1, 2, 10)

    # Execute
    default = multi_krum(five, [1] * 5, num_byzantine=1)  # m = n - f = 4
    two = multi_krum(four, [1, 3, 1, 1], num_byzantine=0, num_selected=2)

    # Assert: mean(0, 1, 2, 3) = 1.5; scores 5, 2, 5, 145 keep reports 1 and 0,
    # weighted (0 x 1 + 1 x 3) / 4 = 0.75
    assert values(default) == [1.5, 0.0, 0.0]
    assert values(two) == [0.75, 0.0, 0.0]


def test_aggregate_updates_dispatches_each_name() -> None:
    # Prepare: three honest updates near 1 and one hostile 1000
    updates = scalars(1, 1, 1, 1000)
    counts = [1, 1, 1, 1]

    # Execute
    results = {
        name: values(aggregate_updates(name, updates, counts))[0]
        for name in AGGREGATORS
    }

    # Assert: only the mean is dragged away; f = byzantine_count(4, 0.3) = 0 for
    # Krum (n >= 2f + 3 allows f = 0), whose best score is an honest update
    assert results["mean"] == pytest.approx(250.75)
    assert results["median"] == 1.0
    assert results["trimmed-mean"] == 250.75  # floor(0.1 x 4) = 0: nothing trimmed
    assert results["krum"] == 1.0
    assert byzantine_count(4, 0.3) == 0 and byzantine_count(10, 0.3) == 3
    assert byzantine_count(20, 0.5) == 8
    with pytest.raises(ValueError, match="unknown aggregator"):
        aggregate_updates("mode", updates, counts)


def test_aggregators_leave_inputs_untouched_and_check_them() -> None:
    # Prepare
    updates = scalars(3, 1, 2)
    before = [[t.clone() for t in u] for u in updates]

    # Execute
    for name in AGGREGATORS:
        aggregate_updates(name, updates, [1, 2, 3])

    # Assert
    for u, b in zip(updates, before, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(u, b, strict=True))
    with pytest.raises(ValueError, match="no updates"):
        coordinate_median([], [])
    with pytest.raises(ValueError, match="example counts"):
        weighted_mean(updates, [1])


def test_corrupt_report_each_kind() -> None:
    # Prepare
    update = [torch.ones(3, 2), torch.zeros(4)]

    # Execute
    reports = {
        kind: corrupt_report(update, 7, kind=kind, scale=default_fault_scale(kind))
        for kind in FAULT_KINDS
    }

    # Assert
    assert torch.isnan(reports["nan"][0][0]).sum() == 1
    assert torch.isinf(reports["inf"][0][0]).sum() == 1
    assert float(reports["scale"][0][0].sum()) == 6000.0
    assert float(reports["sign"][0][0].sum()) == -30.0
    assert reports["count"][1] == 700 and reports["count"][0][0] is update[0]
    assert tuple(reports["shape"][0][0].shape) == (2, 2)
    assert reports["dtype"][0][0].dtype == torch.float64
    # range and weight lie only inside the mask: their plain report is honest.
    assert {kind: n for kind, (_, n) in reports.items()} == {
        "nan": 7, "inf": 7, "scale": 7, "sign": 7, "count": 700, "shape": 7,
        "dtype": 7, "range": 7, "weight": 7,
    }  # fmt: skip
    assert torch.equal(reports["weight"][0][0], update[0])
    assert torch.equal(update[0], torch.ones(3, 2))  # the input is untouched


def test_corrupt_report_bad_settings() -> None:
    # Prepare
    update = [torch.ones(2)]

    # Execute / Assert
    with pytest.raises(ValueError, match="unknown fault kind"):
        corrupt_report(update, 1, kind="melted", scale=1.0)
    for scale in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="fault scale"):
            corrupt_report(update, 1, kind="scale", scale=scale)
    assert corrupt_report(update, 3, kind="count", scale=0.1)[1] == 1  # at least 1


def test_fault_scale_defaults_per_kind() -> None:
    # Execute
    scales = {k: default_fault_scale(k) for k in FAULT_KINDS}

    # Assert
    assert (scales["scale"], scales["sign"], scales["count"], scales["nan"]) == (
        1000.0,
        5.0,
        100.0,
        1.0,
    )
    for bad in (0.0, -3.0, math.nan, math.inf):
        with pytest.raises(FleetConfigError, match="fault_scale"):
            FleetConfig(fault_scale=bad)


def test_every_aggregator_name_has_one_implementation() -> None:
    # Prepare: the names the CLI offers (torch-free) and the table behind them.
    from coordinator.round import robust_aggregation

    # Execute
    implemented = set(robust_aggregation._AGGREGATORS)

    # Assert
    assert implemented == set(AGGREGATORS)
