"""Fixed-point quantisation mod 2^b: the scale, rounding, wrap-freedom, bounds."""

from __future__ import annotations

import numpy as np
import pytest

from secagg.quantize import (
    QuantizationSpec,
    centred,
    choose_spec,
    dequantize,
    lane_dtype,
    quantize,
)


def test_choose_spec_hand_computed() -> None:
    # Prepare: room = 2^15 - 1 - 3/2 = 32765.5; / (3 * 4) = 2730.46 -> 2^11
    # Execute
    spec = choose_spec(bits=16, max_abs=4.0, num_clients=3)

    # Assert
    assert spec == QuantizationSpec(bits=16, scale=2048.0, max_abs=4.0)
    assert spec.error_bound(3) == 3 / 4096


def test_choose_spec_default_bits_twenty_phones() -> None:
    # Prepare: (2^31 - 11) / (20 * 256) = 419430.4 -> 2^18
    # Execute
    spec = choose_spec(bits=32, max_abs=256.0, num_clients=20)

    # Assert
    assert spec.scale == 2.0**18
    assert spec.modulus_mask == 2**32 - 1


def test_choose_spec_rejects_too_few_bits() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        choose_spec(bits=8, max_abs=1.0, num_clients=300)


def test_quantize_hand_computed_rounds_half_to_even() -> None:
    # Prepare: scale 2048; 0.0001 * 2048 = 0.2048 -> 0; 2.5 / 2048 * 2048 = 2.5 -> 2
    spec = QuantizationSpec(bits=16, scale=2048.0, max_abs=4.0)
    x = np.array([0.5, -0.25, 0.0001, 2.5 / 2048, -3.0])

    # Execute
    q = quantize(x, spec)

    # Assert: negatives in two's complement of the uint32 lane
    assert q.dtype == np.uint32
    assert centred(q, 16).tolist() == [1024, -512, 0, 2, -6144]


def test_quantize_clips_to_max_abs() -> None:
    # Prepare
    spec = QuantizationSpec(bits=16, scale=2048.0, max_abs=4.0)

    # Execute
    q = quantize(np.array([100.0, -100.0]), spec)

    # Assert
    assert centred(q, 16).tolist() == [8192, -8192]


def test_quantize_rejects_nan() -> None:
    spec = QuantizationSpec(bits=16, scale=2048.0, max_abs=4.0)
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([0.0, np.nan]), spec)


def test_quantize_wide_bits_use_uint64_lanes() -> None:
    # Prepare
    spec = choose_spec(bits=48, max_abs=1.0, num_clients=2)

    # Execute
    q = quantize(np.array([-1.0, 1.0]), spec)

    # Assert
    assert lane_dtype(48) is np.uint64 and q.dtype == np.uint64
    assert centred(q, 48).tolist() == [-int(spec.scale), int(spec.scale)]


def test_dequantize_extreme_cohort_sum_does_not_wrap() -> None:
    # Prepare: every one of n phones at +max_abs, then at -max_abs
    n = 20
    spec = choose_spec(bits=32, max_abs=256.0, num_clients=n)
    top = quantize(np.full(3, 256.0), spec).astype(np.int64)
    bottom = quantize(np.full(3, -256.0), spec).astype(np.int64)

    # Execute
    high = dequantize(n * top, spec)
    low = dequantize(n * bottom, spec)

    # Assert
    assert high.tolist() == [n * 256.0] * 3
    assert low.tolist() == [-n * 256.0] * 3


def test_dequantize_sum_within_error_bound() -> None:
    # Prepare
    n = 7
    spec = choose_spec(bits=24, max_abs=3.0, num_clients=n)
    xs = np.random.default_rng(0).uniform(-3, 3, size=(n, 1000))

    # Execute
    total = sum(quantize(x, spec).astype(np.int64) for x in xs)
    result = dequantize(np.asarray(total), spec)

    # Assert
    error = np.abs(result - xs.sum(axis=0)).max()
    assert 0 < error <= spec.error_bound(n)
