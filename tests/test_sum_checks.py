"""Hostile phones under secure aggregation, and the server's checks of the sum
(issue 24, section 1)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import METRICS, two_phone_round
from test_private_round import private_delta

from cli.main import main
from coordinator.config import FederationConfig, FederationConfigError
from coordinator.privacy.privacy_config import PrivacyConfig
from coordinator.protections import PrivacyState
from coordinator.protections.state import AggregationAborted
from coordinator.protections.sum_checks import (
    SumCheckFailed,
    check_sum,
    phone_bounds,
    sum_bounds,
)
from coordinator.round.robust import ScreenConfig
from device_sim.config import FleetConfig, LocalTrainingConfig
from device_sim.executor import TrainedRound
from device_sim.faults import Fault, hostile_contribution
from device_sim.phone import ClientReport
from models.rundir import RunDir
from secagg.quantize import QuantizationSpec, quantize

# 16 steps of lr 1 on gradients clipped to 8: one step moves at most 8, so the
# textbook pair ([1, 2, 3] and [3, 4, 5], norms 3.74 and 7.07) is honest.
LOCAL = LocalTrainingConfig(grad_clip_norm=8.0)
SECAGG = FederationConfig(
    clients_per_round=2, local=LOCAL, privacy=PrivacyConfig(secure_aggregation=True)
)


def test_hostile_contribution_skips_the_honest_pipeline() -> None:
    # Prepare: an update of norm 5, 2 examples, clip 1, range 7
    update = [torch.tensor([3.0, -4.0])]

    def vector(kind: str, scale: float, weighted: bool = True) -> list[float]:
        return hostile_contribution(
            update, 2, fault=Fault(kind, scale), clip_norm=1.0, max_abs=7.0,
            weighted=weighted,
        ).tolist()  # fmt: skip

    # Execute / Assert: no clip (weight 2); the clipped [0.6, -0.8] weighted
    # 100; the top of the range; under DP weight 1
    assert vector("scale", 1000.0) == [6.0, -8.0]
    assert vector("weight", 100.0) == pytest.approx([60.0, -80.0])
    assert vector("range", 1.0) == [7.0, -7.0]
    assert vector("sign", 5.0, weighted=False) == [3.0, -4.0]


def test_quantize_without_clip_wraps_modulo_the_range() -> None:
    # Prepare: 8 bits, scale 1, public range 10
    spec = QuantizationSpec(bits=8, scale=1.0, max_abs=10.0)
    x = np.array([300.0, -3.0, 5.0])

    # Execute
    honest = quantize(x, spec)
    hostile = quantize(x, spec, clip=False)

    # Assert: clipped to 10, -3 = 253 and 5; unclipped 300 = 44 mod 256
    assert (honest.astype(np.int64) & 255).tolist() == [10, 253, 5]
    assert hostile.tolist() == [44, 253, 5]


def test_phone_bounds_weight_each_phone_by_its_count_and_reach() -> None:
    # Prepare: the default phones (one step moves at most 1), C = 16
    screen = ScreenConfig.for_training(LocalTrainingConfig())

    # Execute
    weighted = phone_bounds([1, 3, 20, 256], clip_norm=16.0, screen=screen)
    unweighted = phone_bounds([1, 3], clip_norm=0.5, screen=None)

    # Assert: n x min(16, steps x 1.001): 1 and 3 examples take one step, 20
    # two, 256 sixteen (capped by C = 16)
    assert weighted == pytest.approx([1.001, 3.003, 40.04, 4096.0])
    assert unweighted == [0.5, 0.5]


def test_check_sum_each_bound() -> None:
    # Prepare: two phones of bound 1 each, range 2, scale 2^20 (rounding
    # 2 / 2^21 per coordinate), each appending its count (4 in all)
    bounds = sum_bounds([1.0, 1.0], size=2, max_abs=2.0, scale=2.0**20, count=4)
    bits = sum_bounds([1.0, 1.0], size=2, max_abs=2.0, scale=2.0**20, bits=True)

    # Execute / Assert: norm 1 and 2 pass; norm 3, a coordinate of 4.5 (> 2 x
    # 2), a count of 4099 and centred clip bits of 3 (> 2 x 1/2) fail
    check_sum(np.array([0.6, 0.8, 4.0]), bounds)
    check_sum(np.array([1.2, 1.6, 4.0]), bounds)
    failures = [
        (np.array([1.8, 2.4, 4.0]), bounds, "the unmasked sum's norm 3 > 2, the sum"),
        (np.array([4.5, 0.0, 4.0]), bounds, "an unmasked coordinate 4.5 > 4, what"),
        (np.array([0.6, 0.8, 4099.0]), bounds, "the unmasked count 4099 != 4, the"),
        (np.array([0.6, 0.8, 3.0]), bits, r"clip bits 3 lie outside \[-1, 1\]"),
        (np.array([math.nan, 0.0, 4.0]), bounds, "non-finite"),
    ]
    for summed, limits, reason in failures:
        with pytest.raises(SumCheckFailed, match=reason):
            check_sum(summed, limits)


def hostile_round(kind: str, scale: float) -> TrainedRound:
    """The textbook pair with phone b hostile (its update corrupted first)."""
    trained = two_phone_round()
    honest = trained.local["b"].update
    update = [t * scale for t in honest] if kind == "scale" else honest
    trained.local["b"] = ClientReport("b", update, 3, METRICS)
    trained.faults["b"] = Fault(kind, scale)
    return trained


def test_private_delta_abandons_a_sum_no_honest_pair_could_send() -> None:
    # Prepare: the honest pair's bounds are 1 x 8.008 + 3 x 8.008 = 32.03
    honest = two_phone_round()

    # Execute
    result = private_delta(
        honest, {"a", "b"}, SECAGG, PrivacyState(), server_round=1, pool=2
    )
    reasons = {}
    for kind, scale in (("scale", 1000.0), ("weight", 4096.0), ("range", 1.0)):
        with pytest.raises(AggregationAborted) as failed:
            private_delta(
                hostile_round(kind, scale),
                {"a", "b"},
                SECAGG,
                PrivacyState(),
                server_round=1,
                pool=2,
            )
        assert failed.value.figures == {"sum_check_failed": 1}
        assert isinstance(failed.value.__cause__, SumCheckFailed)
        reasons[kind] = failed.value.__cause__.reason

    # Assert: the honest mean [2.5, 3.5, 4.5]; x1000 unclipped (3 x 7071), the
    # weight 4096 x 7.07 = 28,963 and every coordinate at the top of the range
    # (256 x 128 = 32,768) are all beyond 32.03
    assert result.delta[0].tolist() == pytest.approx([2.5, 3.5, 4.5], abs=1e-3)
    assert all("the sum of the phones' bounds" in r for r in reasons.values())
    assert "norm 28966.8 > 32.032" in reasons["weight"]


def test_private_delta_lets_a_weight_lie_inside_the_slack_through() -> None:
    # Prepare: weight 4 in place of 3 on [3, 4, 5] (norm 28.3 + 3.74 <= 32.03)
    trained = hostile_round("weight", 4.0)

    # Execute
    result = private_delta(
        trained, {"a", "b"}, SECAGG, PrivacyState(), server_round=1, pool=2
    )

    # Assert: (1 x [1, 2, 3] + 4 x [3, 4, 5]) / 4 counted examples: what a
    # hostile phone can still do (docs/robustness.md)
    assert result.delta[0].tolist() == pytest.approx([3.25, 4.5, 5.75], abs=1e-3)


def test_masked_only_kinds_need_secure_aggregation() -> None:
    # Execute / Assert
    fleet = FleetConfig(faulty_fraction=0.3, fault_kind="weight")
    with pytest.raises(FederationConfigError, match="needs secure aggregation"):
        FederationConfig(fleet=fleet)
    FederationConfig(fleet=fleet, privacy=PrivacyConfig(secure_aggregation=True))


def test_simulate_secagg_with_range_phones_abandons_and_counts(
    tmp_path: Path,
) -> None:
    # Prepare: 30 % of phones fill the quantisation range
    out = tmp_path / "run"
    argv = ["simulate", "--out", str(out), "--max-users", "40",
            "--clients-per-round", "6", "--rounds", "2", "--eval-every", "0",
            "--threads", "1", "--secure-aggregation", "--faulty-fraction", "0.3",
            "--fault-kind", "range", "--seed", "1"]  # fmt: skip

    # Execute
    code = main(argv)

    # Assert: every round that summed a hostile phone is abandoned, says why
    # and counts the fault; a round without one is not
    records = RunDir(out).read_metrics()
    assert code == 0 and len(records) == 2
    failed = [r for r in records if r.get("sum_check_failed")]
    assert failed, "no round summed a hostile phone: pick another seed"
    for record in failed:
        assert record["abandoned"] and record["sum_check_failed"] == 1
        assert "the sum of the phones' bounds" in record["abandon_reason"]
