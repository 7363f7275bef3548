"""Screening of client updates: each rejection reason, the norm rule, purity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import f32
from screening import screen_reports

from coordinator.round.robust import Rejection, ScreenConfig

# The global parameters: a (2,) tensor and a (1,) tensor.
REFERENCE = [f32(0, 0), f32(0)]
# The relative rule on medians of three or more, as in these small rounds (the
# default asks for six: tests/test_robust_cohort.py).
THREE = ScreenConfig(min_for_norm_check=3)


def update(a: float, b: float, c: float) -> list[torch.Tensor]:
    return [f32(a, b), f32(c)]


def test_screen_accepts_well_formed_in_order() -> None:
    # Prepare
    reports = [("c", update(3, 0, 0), 5), ("a", update(0, 4, 0), 1)]
    reports.append(("b", update(0, 0, -5), 2))

    # Execute
    accepted, rejected = screen_reports(REFERENCE, reports)

    # Assert: the very same report objects, in report order
    assert [r[0] for r in accepted] == ["c", "a", "b"]
    assert all(a is r for a, r in zip(accepted, reports, strict=True))
    assert rejected == []


def test_screen_rejects_wrong_tensor_count() -> None:
    # Prepare
    reports = [("short", [f32(1, 2)], 3)]

    # Execute
    accepted, rejected = screen_reports(REFERENCE, reports)

    # Assert
    assert accepted == []
    assert rejected == [Rejection("short", "1 tensors != 2 expected")]


def test_screen_rejects_wrong_shape() -> None:
    # Prepare
    reference = [torch.zeros(5)]
    reports = [("phone", [torch.zeros(4)], 3)]

    # Execute
    _, rejected = screen_reports(reference, reports)

    # Assert
    assert rejected == [Rejection("phone", "shape (4,) != (5,) in tensor 0")]


def test_screen_rejects_wrong_dtype() -> None:
    # Prepare
    reports = [("phone", [f32(1, 2), torch.ones(1, dtype=torch.float64)], 3)]

    # Execute
    _, rejected = screen_reports(REFERENCE, reports)

    # Assert
    assert rejected == [Rejection("phone", "dtype float64 != float32 in tensor 1")]


def test_screen_rejects_nan_and_inf() -> None:
    # Prepare
    reports = [
        ("nan", update(1, 2, math.nan), 3),
        ("inf", update(-math.inf, 2, 3), 3),
        ("ok", update(1, 2, 3), 3),
    ]

    # Execute
    accepted, rejected = screen_reports(REFERENCE, reports)

    # Assert
    assert [r[0] for r in accepted] == ["ok"]
    assert rejected == [
        Rejection("nan", "non-finite values in tensor 1"),
        Rejection("inf", "non-finite values in tensor 0"),
    ]


def test_screen_rejects_bad_num_examples() -> None:
    # Prepare
    reports = [
        ("zero", update(1, 0, 0), 0),
        ("negative", update(1, 0, 0), -3),
        ("fraction", update(1, 0, 0), 2.5),
        ("bool", update(1, 0, 0), True),
        ("numpy", update(1, 0, 0), np.int64(4)),
    ]

    # Execute
    accepted, rejected = screen_reports(REFERENCE, reports)  # type: ignore[arg-type]

    # Assert
    assert [r[0] for r in accepted] == ["numpy"]
    assert rejected == [
        Rejection("zero", "num_examples 0 <= 0"),
        Rejection("negative", "num_examples -3 <= 0"),
        Rejection("fraction", "num_examples 2.5 is not an integer"),
        Rejection("bool", "num_examples True is not an integer"),
    ]


def test_screen_rejects_norm_outlier() -> None:
    # Prepare: norms 3, 4, 5 and sqrt(60^2 + 80^2) = 100 across two tensors
    reports = [
        ("a", update(3, 0, 0), 1),
        ("b", update(0, 4, 0), 1),
        ("c", update(3, 4, 0), 1),
        ("big", update(60, 0, 80), 1),
    ]

    # Execute
    accepted, rejected = screen_reports(REFERENCE, reports, config=THREE)

    # Assert: median(3, 4, 5, 100) = 4.5 and 100 > 5 x 4.5
    assert [r[0] for r in accepted] == ["a", "b", "c"]
    assert rejected == [Rejection("big", "norm 100 > 5 x median 4.5")]


def test_screen_norm_at_limit_is_accepted() -> None:
    # Prepare: norms 1, 1 and 4; median 1
    reports = [
        ("a", update(1, 0, 0), 1),
        ("b", update(0, 1, 0), 1),
        ("c", update(0, 0, 4), 1),
    ]

    # Execute
    at_limit, _ = screen_reports(
        REFERENCE, reports, config=ScreenConfig(norm_factor=4.0, min_for_norm_check=3)
    )
    _, over_limit = screen_reports(
        REFERENCE, reports, config=ScreenConfig(norm_factor=3.5, min_for_norm_check=3)
    )

    # Assert: 4 > 4 x 1 is false, 4 > 3.5 x 1 is true
    assert len(at_limit) == 3
    assert over_limit == [Rejection("c", "norm 4 > 3.5 x median 1")]


def test_screen_norm_rule_needs_enough_well_formed() -> None:
    # Prepare: two well-formed updates (norms 1 and 1000) and a NaN one
    reports = [
        ("small", update(1, 0, 0), 1),
        ("huge", update(0, 0, 1000), 1),
        ("nan", update(math.nan, 0, 0), 1),
    ]

    # Execute
    accepted, rejected = screen_reports(REFERENCE, reports, config=THREE)
    strict, _ = screen_reports(
        REFERENCE, reports, config=ScreenConfig(min_for_norm_check=2)
    )

    # Assert: the NaN report does not count towards min_for_norm_check = 3;
    # with 2 the median of (1, 1000) is 500.5 and nothing exceeds 2502.5
    assert [r[0] for r in accepted] == ["small", "huge"]
    assert rejected == [Rejection("nan", "non-finite values in tensor 0")]
    assert [r[0] for r in strict] == ["small", "huge"]


def test_screen_median_ignores_malformed_reports() -> None:
    # Prepare: malformed reports with huge values must not raise the median
    reports = [
        ("a", update(1, 0, 0), 1),
        ("b", update(0, 2, 0), 1),
        ("c", update(0, 0, 50), 1),
        ("wrong-dtype", [f32(1e6, 0), torch.ones(1, dtype=torch.float64)], 1),
        ("no-examples", update(1e6, 0, 0), 0),
    ]

    # Execute
    accepted, rejected = screen_reports(REFERENCE, reports, config=THREE)

    # Assert: median(1, 2, 50) = 2 and 50 > 5 x 2 = 10
    assert [r[0] for r in accepted] == ["a", "b"]
    assert [r.client_id for r in rejected] == ["c", "wrong-dtype", "no-examples"]
    assert rejected[0].reason == "norm 50 > 5 x median 2"


def test_screen_leaves_inputs_untouched() -> None:
    # Prepare
    reports = [("a", update(1, 2, 3), 1), ("b", update(1, math.nan, 3), 1)]
    snapshot = [[t.clone() for t in u] for _, u, _ in reports]

    # Execute
    screen_reports(REFERENCE, reports)

    # Assert
    for (_, tensors, _), before in zip(reports, snapshot, strict=True):
        for t, b in zip(tensors, before, strict=True):
            torch.testing.assert_close(t, b, equal_nan=True, rtol=0, atol=0)


def test_screen_empty_and_bad_settings() -> None:
    # Execute / Assert
    assert screen_reports(REFERENCE, []) == ([], [])
    with pytest.raises(ValueError, match="norm_factor"):
        ScreenConfig(norm_factor=0.0)
    with pytest.raises(ValueError, match="min_for_norm_check"):
        ScreenConfig(min_for_norm_check=0)
