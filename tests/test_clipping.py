"""The phone's DP steps: flat clipping, the clip bit, flattening, noise shares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from device_sim.clipping import (
    NonFiniteUpdateError,
    clip_bit,
    clip_update,
    flatten,
    global_norm,
    phone_noise,
    unflatten,
)


def test_clip_update_scales_a_long_update_to_the_bound() -> None:
    # Prepare: norm sqrt(9 + 16 + 0) = 5.
    update = [torch.tensor([3.0]), torch.tensor([[4.0, 0.0]])]

    # Execute
    clipped, norm = clip_update(update, clip_norm=1.0)

    # Assert: every tensor scaled by 1/5, shapes and dtypes kept.
    assert norm == 5.0
    assert torch.equal(clipped[0], torch.tensor([0.6]))
    assert torch.allclose(clipped[1], torch.tensor([[0.8, 0.0]]))
    assert [c.dtype for c in clipped] == [torch.float32, torch.float32]
    assert global_norm(clipped) == pytest.approx(1.0, rel=1e-6)


def test_clip_update_leaves_a_short_update_unchanged_and_copies() -> None:
    # Prepare: norm 0.5 under a bound of 2.
    update = [torch.tensor([0.3, 0.4])]

    # Execute
    clipped, norm = clip_update(update, clip_norm=2.0)
    same = torch.equal(clipped[0], update[0])
    clipped[0][0] = 99.0

    # Assert: same values, and the caller's tensor is not the returned one.
    assert norm == pytest.approx(0.5)
    assert same
    assert update[0].tolist() == pytest.approx([0.3, 0.4])


def test_clip_update_norm_is_float64() -> None:
    # Prepare: 10^6 values of 1e-4 in float32; the norm is exactly 0.1.
    update = [torch.full((1_000_000,), 1e-4)]

    # Execute
    _, norm = clip_update(update, clip_norm=1.0)

    # Assert: within float32's rounding of 1e-4, not float32 accumulation error.
    assert norm == pytest.approx(0.1, rel=1e-7)


def test_clip_update_zero_update_stays_zero() -> None:
    # Prepare
    update = [torch.zeros(3)]

    # Execute
    clipped, norm = clip_update(update, clip_norm=1.0)

    # Assert
    assert norm == 0.0
    assert torch.equal(clipped[0], torch.zeros(3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_clip_update_non_finite_raises(bad: float) -> None:
    # Prepare
    update = [torch.tensor([1.0, bad])]

    # Execute / Assert
    with pytest.raises(NonFiniteUpdateError):
        clip_update(update, clip_norm=1.0)


@pytest.mark.parametrize("clip_norm", [0.0, -1.0, float("inf"), float("nan")])
def test_clip_update_bad_bound_raises(clip_norm: float) -> None:
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match="clip_norm"):
        clip_update([torch.ones(2)], clip_norm=clip_norm)


def test_clip_bit_is_centred_plus_half_at_or_under_the_bound() -> None:
    # Prepare / Execute / Assert: b − ½ with b = [norm <= C] (Andrew et al.).
    assert [clip_bit(n, 1.0) for n in (0.5, 1.0, 1.5)] == [0.5, 0.5, -0.5]


def test_flatten_then_unflatten_round_trips() -> None:
    # Prepare
    like = [torch.arange(6.0).reshape(2, 3), torch.tensor([7.0, 8.0])]

    # Execute
    vector = flatten(like)
    back = unflatten(vector * 2, like)

    # Assert
    assert vector.dtype == np.float64
    assert vector.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 8.0]
    assert torch.equal(back[0], torch.tensor([[0.0, 2.0, 4.0], [6.0, 8.0, 10.0]]))
    assert torch.equal(back[1], torch.tensor([14.0, 16.0]))
    assert back[0].dtype == torch.float32


def test_unflatten_wrong_length_raises() -> None:
    # Prepare
    like = [torch.zeros(2, 2)]

    # Execute / Assert
    with pytest.raises(ValueError, match="does not fill 4"):
        unflatten(np.zeros(5), like)


def test_phone_noise_has_the_share_variance() -> None:
    # Prepare: z = 2, C = 0.5, n = 4 -> stddev 2 * 0.5 / 2 = 0.5.
    rng = np.random.default_rng(0)

    # Execute
    noise = phone_noise(
        200_000, clip_norm=0.5, noise_multiplier=2.0, noise_shares=4, rng=rng
    )

    # Assert
    assert noise.std() == pytest.approx(0.5, rel=0.01)
    assert abs(noise.mean()) < 0.01


def test_phone_noise_four_shares_sum_to_the_central_stddev() -> None:
    # Prepare: z = 1, C = 1, n = 4: four shares sum to stddev 1.
    rngs = [np.random.default_rng(k) for k in range(4)]

    # Execute
    total = sum(
        phone_noise(100_000, clip_norm=1.0, noise_multiplier=1.0, noise_shares=4, rng=r)
        for r in rngs
    )

    # Assert
    assert float(np.std(total)) == pytest.approx(1.0, rel=0.02)
