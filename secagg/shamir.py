"""Shamir t-out-of-n secret sharing of 32-byte secrets over GF(2^127 - 1).

Shamir 1979 ("How to Share a Secret", CACM 22(11)): a secret s is the constant
term of a random polynomial f of degree t - 1; the share of holder x is f(x).
Any t shares give f(0) by Lagrange interpolation; t - 1 shares are consistent
with every value of s, so they reveal nothing. Bonawitz et al. 2017 share each
phone's self-mask seed and mask private key this way.

A 32-byte secret does not fit one element of the Mersenne prime field
p = 2^127 - 1, so it is cut into 15-byte chunks (15, 15, 2 bytes), each below p
and shared with its own polynomial; a share carries one value per chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

PRIME = 2**127 - 1
# Bytes per field element of a secret: 15 * 8 = 120 bits < 127.
CHUNK_BYTES = 15
SECRET_BYTES = 32
# Bytes of one field value on the wire.
VALUE_BYTES = 16


@dataclass(frozen=True)
class Share:
    """f(x) of each chunk's polynomial at the holder's point x >= 1."""

    x: int
    values: tuple[int, ...]

    def to_bytes(self) -> bytes:
        """x as 4 bytes, then each value as 16 big-endian bytes."""
        body = b"".join(v.to_bytes(VALUE_BYTES, "big") for v in self.values)
        return self.x.to_bytes(4, "big") + body

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """The inverse of `to_bytes`."""
        count, rest = divmod(len(data) - 4, VALUE_BYTES)
        if rest or count < 1:
            raise ValueError(f"{len(data)} bytes are not a share")
        values = tuple(
            int.from_bytes(data[4 + i * VALUE_BYTES : 4 + (i + 1) * VALUE_BYTES], "big")
            for i in range(count)
        )
        return cls(int.from_bytes(data[:4], "big"), values)


def split_secret(
    secret: bytes,
    *,
    threshold: int,
    xs: Sequence[int],
    random_bytes: Callable[[int], bytes],
) -> list[Share]:
    """Shares of `secret` at the points `xs`, any `threshold` of which recover it.

    Args:
        secret: 32 bytes.
        xs: distinct holder points in [1, p).
        random_bytes: the coefficient source: `os.urandom` on a real phone, a
            seeded stream in the simulation.
    """
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a secret has {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}], got {threshold}")
    if len(set(xs)) != len(xs) or not all(0 < x < PRIME for x in xs):
        raise ValueError("share points must be distinct and in [1, p)")
    chunks = [
        int.from_bytes(secret[i : i + CHUNK_BYTES], "big")
        for i in range(0, SECRET_BYTES, CHUNK_BYTES)
    ]
    # 32 random bytes per coefficient: reduced mod p, the bias is below 2^-128.
    pool = random_bytes(32 * (threshold - 1) * len(chunks))
    polynomials = []
    for c, chunk in enumerate(chunks):
        start = 32 * (threshold - 1) * c
        coefficients = [
            int.from_bytes(pool[start + 32 * j : start + 32 * (j + 1)], "big") % PRIME
            for j in range(threshold - 1)
        ]
        polynomials.append([chunk, *coefficients])
    return [Share(x, tuple(_evaluate(f, x) for f in polynomials)) for x in xs]


def interpolate_at_zero(points: Sequence[tuple[int, int]]) -> int:
    """f(0) of the polynomial of degree < len(points) through `points` mod p."""
    total = 0
    for i, (x_i, y_i) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (x_j, _) in enumerate(points):
            if j != i:
                numerator = numerator * x_j % PRIME
                denominator = denominator * (x_j - x_i) % PRIME
        total += y_i * numerator * pow(denominator, -1, PRIME)
    return total % PRIME


def reconstruct_secret(shares: Sequence[Share]) -> bytes:
    """The 32-byte secret from its shares (at least the threshold many).

    Raises:
        ValueError: when the shares interpolate to no 32-byte secret, which is
            what t - 1 shares (or corrupted ones) almost always do.
    """
    if not shares or len({s.x for s in shares}) != len(shares):
        raise ValueError("need at least one share, at distinct points")
    sizes = [
        min(CHUNK_BYTES, SECRET_BYTES - i) for i in range(0, SECRET_BYTES, CHUNK_BYTES)
    ]
    if any(len(s.values) != len(sizes) for s in shares):
        raise ValueError(f"a share of a 32-byte secret has {len(sizes)} values")
    parts = []
    for c, size in enumerate(sizes):
        value = interpolate_at_zero([(s.x, s.values[c]) for s in shares])
        if value >= 1 << (8 * size):
            raise ValueError("the shares do not reconstruct a 32-byte secret")
        parts.append(value.to_bytes(size, "big"))
    return b"".join(parts)


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    """f(x) mod p by Horner's rule; `coefficients[0]` is the constant term."""
    y = 0
    for a in reversed(coefficients):
        y = (y * x + a) % PRIME
    return y
