"""Fixed-point quantisation of an update into Z_{2^b}, and back.

Secure aggregation adds integers modulo R = 2^b (Bonawitz et al. 2017, section
3), so a float update is first scaled and rounded. The scale is chosen so that
the sum over the whole cohort cannot wrap: each phone's coordinates lie in
[-max_abs, max_abs] (the caller clips, and the bound is public), so with n
phones

    |sum_u round(x_u * scale)| <= n * (max_abs * scale + 1/2) < 2^(b-1),

and the sum taken modulo 2^b, read as a centred (signed) value, is the true
integer sum. The scale is a power of two, so `x * scale` and the final division
are exact in float64 and the only error is the rounding itself: deterministic
round-half-to-even, at most 1 / (2 * scale) per phone and coordinate, so at most
`num_summed / (2 * scale)` per coordinate of the dequantised sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QuantizationSpec:
    """The public fixed-point format of one round, known to phones and server."""

    bits: int  # the modulus is 2^bits
    scale: float  # a power of two: q = round(x * scale)
    max_abs: float  # the public bound on |x_i|; larger values are clipped to it

    @property
    def modulus_mask(self) -> int:
        """2^bits - 1: `value & mask` is `value mod 2^bits`, negatives included."""
        return (1 << self.bits) - 1

    def error_bound(self, num_summed: int) -> float:
        """Largest |dequantised sum - true sum| per coordinate over `num_summed`."""
        return num_summed / (2 * self.scale)


def choose_spec(*, bits: int, max_abs: float, num_clients: int) -> QuantizationSpec:
    """The finest power-of-two scale at which `num_clients` phones cannot wrap."""
    if not max_abs > 0 or not math.isfinite(max_abs):
        raise ValueError(f"max_abs must be positive and finite, got {max_abs}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    # n * (max_abs * scale + 1/2) <= 2^(b-1) - 1
    room = 2.0 ** (bits - 1) - 1 - num_clients / 2
    if room <= 0:
        raise ValueError(f"{bits} bits cannot hold a sum of {num_clients} phones")
    scale = 2.0 ** math.floor(math.log2(room / (num_clients * max_abs)))
    return QuantizationSpec(bits=bits, scale=scale, max_abs=max_abs)


def lane_dtype(bits: int) -> type[np.unsignedinteger]:
    """The narrowest unsigned lane whose wrapping add is exact mod 2^bits."""
    return np.uint32 if bits <= 32 else np.uint64


def quantize(x: np.ndarray, spec: QuantizationSpec, *, clip: bool = True) -> np.ndarray:
    """round(clip(x) * scale) mod 2^bits, in `lane_dtype(bits)` lanes.

    Args:
        x: a finite float64 vector, (D,).
        clip: clip to the public range; a hostile phone (`device_sim.faults`)
            skips it, and its values wrap modulo 2^bits.
    Returns:
        (D,) unsigned integers; values above 2^bits - 1 only in the high bits
        that wrapping lanes discard (the caller masks with `modulus_mask`).
    """
    if x.ndim != 1:
        raise ValueError(f"expected a vector, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the update has NaN or Inf values")
    scaled = np.multiply(x, spec.scale, dtype=np.float64)
    lanes = lane_dtype(spec.bits)
    if not clip:
        np.rint(np.fmod(scaled, 2.0**spec.bits, out=scaled), out=scaled)
        return (scaled.astype(np.int64) & spec.modulus_mask).astype(lanes)
    limit = spec.max_abs * spec.scale
    np.clip(scaled, -limit, limit, out=scaled)
    np.rint(scaled, out=scaled)
    # Through the signed twin of the lane (|q| < 2^(b-1) fits it): a negative
    # float cast straight to unsigned is undefined; the view is two's complement.
    signed = np.int32 if lanes is np.uint32 else np.int64
    return scaled.astype(signed).view(lanes)


def centred(total: np.ndarray, bits: int) -> np.ndarray:
    """Integers mod 2^bits (any integer dtype) as int64 in [-2^(b-1), 2^(b-1))."""
    half = 1 << (bits - 1)
    # In place on one copy: (v + 2^(b-1)) mod 2^b - 2^(b-1). A uint64 input
    # read as int64 is off by 2^64, a multiple of 2^b.
    out = total.astype(np.int64)
    np.add(out, half, out=out)
    np.bitwise_and(out, (1 << bits) - 1, out=out)
    np.subtract(out, half, out=out)
    return out


def dequantize(total: np.ndarray, spec: QuantizationSpec) -> np.ndarray:
    """The float64 sum of the phones' inputs from their quantised sum mod 2^bits."""
    # 1 / scale is a power of two: the product is the exact quotient.
    return np.multiply(centred(total, spec.bits), 1.0 / spec.scale)
