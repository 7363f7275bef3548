"""Shamir sharing over GF(2^127 - 1): interpolation, thresholds, wire format."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from secagg.shamir import (
    PRIME,
    Share,
    interpolate_at_zero,
    reconstruct_secret,
    split_secret,
)

SECRET = hashlib.sha256(b"a phone's self-mask seed").digest()


def seeded(n: int) -> bytes:
    return hashlib.shake_256(b"coefficients").digest(n)


def test_interpolate_at_zero_hand_computed() -> None:
    # Prepare: f(x) = 5 + 3x + 2x^2 -> f(1) = 10, f(2) = 19, f(3) = 32
    points = [(1, 10), (2, 19), (3, 32)]

    # Execute
    value = interpolate_at_zero(points)

    # Assert
    assert value == 5


def test_interpolate_at_zero_wraps_mod_prime() -> None:
    # Prepare: f(x) = (p - 1) + x -> f(1) = 0 mod p, f(2) = 1
    # Execute
    value = interpolate_at_zero([(1, 0), (2, 1)])

    # Assert
    assert value == PRIME - 1


def test_split_secret_any_threshold_subset_reconstructs() -> None:
    # Prepare
    shares = split_secret(SECRET, threshold=3, xs=[1, 2, 3, 4, 5], random_bytes=seeded)

    # Execute
    recovered = {
        reconstruct_secret(list(subset)) for subset in itertools.combinations(shares, 3)
    }

    # Assert
    assert recovered == {SECRET}
    assert reconstruct_secret(shares) == SECRET


def test_split_secret_below_threshold_gives_wrong_value() -> None:
    # Prepare
    shares = split_secret(SECRET, threshold=3, xs=[1, 2, 3, 4, 5], random_bytes=seeded)
    secret_chunk = int.from_bytes(SECRET[:15], "big")

    # Execute: each pair of shares interpolates the first chunk to some value
    guesses = {
        interpolate_at_zero([(s.x, s.values[0]) for s in pair])
        for pair in itertools.combinations(shares, 2)
    }

    # Assert: never the secret, and pairs disagree among themselves
    assert secret_chunk not in guesses
    assert len(guesses) == 10
    with pytest.raises(ValueError, match="do not reconstruct"):
        reconstruct_secret(shares[:2])


def test_split_secret_threshold_one_is_the_secret_itself() -> None:
    # Prepare
    shares = split_secret(SECRET, threshold=1, xs=[7], random_bytes=seeded)

    # Execute
    recovered = reconstruct_secret(shares)

    # Assert
    assert recovered == SECRET
    assert shares[0].values[2] == int.from_bytes(SECRET[30:], "big")


def test_split_secret_rejects_bad_points_and_sizes() -> None:
    with pytest.raises(ValueError, match="distinct"):
        split_secret(SECRET, threshold=2, xs=[1, 1], random_bytes=seeded)
    with pytest.raises(ValueError, match="distinct"):
        split_secret(SECRET, threshold=1, xs=[0], random_bytes=seeded)
    with pytest.raises(ValueError, match="32 bytes"):
        split_secret(b"short", threshold=1, xs=[1], random_bytes=seeded)


def test_share_bytes_round_trip() -> None:
    # Prepare
    share = Share(x=3, values=(1, PRIME - 1, 65535))

    # Execute
    data = share.to_bytes()

    # Assert
    assert len(data) == 4 + 3 * 16
    assert Share.from_bytes(data) == share
