"""The count sketch of an update (`device_sim.sketch`) and where it travels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from device_sim.executor import summarise
from device_sim.phone import ClientMetrics, ClientReport
from device_sim.sketch import cosine, sketch_update

METRICS = ClientMetrics(
    loss_before=0.0, loss_after=0.0, train_loss=0.0, steps=1, num_tokens=1
)


def test_sketch_without_folding_keeps_inner_products_exactly() -> None:
    # Prepare: 3 coordinates in 8 buckets, so no two share one
    x = [torch.tensor([1.0, 2.0]), torch.tensor([3.0])]
    y = [torch.tensor([3.0, 4.0]), torch.tensor([5.0])]

    # Execute
    sx, sy = sketch_update(x, width=8), sketch_update(y, width=8)

    # Assert: each coordinate times its sign (+1 or -1), so 1*3 + 2*4 + 3*5 = 26
    assert float(sx @ sy) == 26.0
    assert sorted(abs(sx[:3])) == [1.0, 2.0, 3.0] and not sx[3:].any()


def test_sketch_is_linear_and_a_flip_has_cosine_minus_one() -> None:
    # Prepare
    generator = torch.Generator().manual_seed(3)
    a = [torch.randn(50, 7, generator=generator), torch.randn(9, generator=generator)]
    b = [torch.randn(50, 7, generator=generator), torch.randn(9, generator=generator)]

    # Execute
    summed = sketch_update([s + t for s, t in zip(a, b, strict=True)], width=16)
    parts = sketch_update(a, width=16) + sketch_update(b, width=16)
    flipped = sketch_update([-t for t in a], width=16)

    # Assert
    assert np.allclose(summed, parts, atol=1e-5)
    assert cosine(flipped, sketch_update(a, width=16)) == pytest.approx(-1.0)


def test_sketch_cosine_estimates_the_true_cosine() -> None:
    # Prepare: 200,000 coordinates, a true cosine of 0.6 / sqrt(0.36 + 1) = 0.51
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(200_000, generator=generator)
    other = 0.6 * base + torch.randn(200_000, generator=generator)
    true = float(torch.nn.functional.cosine_similarity(base, other, dim=0))

    # Execute
    estimate = cosine(sketch_update([base]), sketch_update([other]))

    # Assert: the standard error at 4,096 buckets is about sqrt(2 / 4096) = 0.022
    assert abs(estimate - true) < 0.07


def test_summarise_sends_a_sketch_only_with_the_norm() -> None:
    # Prepare
    update = [torch.tensor([3.0, 4.0])]
    report = ClientReport("p", update, 5, METRICS)

    # Execute
    shown = summarise(report, [torch.zeros(2)])
    hidden = summarise(report, [torch.zeros(2)], with_norm=False)

    # Assert: under secure aggregation neither the size nor the direction leaves
    assert shown.norm == 5.0 and shown.sketch is not None
    assert float(np.linalg.norm(shown.sketch)) == pytest.approx(5.0)
    assert np.isnan(hidden.norm) and hidden.sketch is None


def test_sketch_refuses_a_width_below_one() -> None:
    with pytest.raises(ValueError, match="width"):
        sketch_update([torch.zeros(3)], width=0)
