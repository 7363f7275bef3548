"""DP-FedAvg's server math: fixed-denominator mean, adaptive clip, multipliers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coordinator.privacy.dp import (
    DPConfig,
    DPConfigError,
    adapt_clip_norm,
    effective_noise_multiplier,
    noise_rng,
    noisy_clip_fraction,
    noisy_mean,
    realised_noise_multiplier,
    update_noise_multiplier,
)


def seeded_noisy_mean(
    total: np.ndarray, *, m: int, c: float, z: float, seed: int
) -> np.ndarray:
    """noisy_mean of `total` for m expected phones, clip C and noise z, rng `seed`."""
    return noisy_mean(
        total,
        expected_clients=m,
        clip_norm=c,
        noise_multiplier=z,
        rng=np.random.default_rng(seed),
    )


def test_noisy_mean_without_noise_divides_by_the_expected_cohort() -> None:
    # Prepare: two clipped updates [1, 2] and [3, 4] summed; 4 phones expected.
    total = np.array([4.0, 6.0])

    # Execute: each phone weight 1, denominator m = 4, not the 2 that reported.
    mean = seeded_noisy_mean(total, m=4, c=1.0, z=0.0, seed=0)

    # Assert
    assert mean.tolist() == [1.0, 1.5]


def test_noisy_mean_noise_on_the_sum_has_stddev_z_times_c() -> None:
    # Prepare: z = 2, C = 0.5 -> stddev 1 on the sum, 1/10 on the mean of m = 10.
    total = np.zeros(200_000)

    # Execute
    mean = seeded_noisy_mean(total, m=10, c=0.5, z=2.0, seed=1)

    # Assert
    assert mean.std() == pytest.approx(0.1, rel=0.01)
    assert abs(mean.mean()) < 1e-3


def test_noisy_mean_replays_from_the_round_stream() -> None:
    # Prepare
    total = np.ones(5)

    # Execute
    def draw(server_round: int) -> np.ndarray:
        return noisy_mean(
            total,
            expected_clients=2,
            clip_norm=1.0,
            noise_multiplier=1.0,
            rng=noise_rng(7, server_round),
        )

    # Assert: one seed and round give one draw; another round another.
    assert np.array_equal(draw(3), draw(3))
    assert not np.array_equal(draw(3), draw(4))


def test_adapt_clip_norm_moves_toward_the_quantile() -> None:
    # Prepare: all updates within the bound (b = 1) with target median 0.5.
    clip_norm = 1.0

    # Execute
    shrunk = adapt_clip_norm(
        clip_norm, clip_fraction=1.0, target_quantile=0.5, clip_lr=0.2
    )
    grown = adapt_clip_norm(
        clip_norm, clip_fraction=0.0, target_quantile=0.5, clip_lr=0.2
    )
    still = adapt_clip_norm(
        clip_norm, clip_fraction=0.5, target_quantile=0.5, clip_lr=0.2
    )

    # Assert: exp(-0.1) = 0.904837, exp(0.1) = 1.105171.
    assert shrunk == pytest.approx(0.904837, abs=1e-6)
    assert grown == pytest.approx(1.105171, abs=1e-6)
    assert still == 1.0


def test_noisy_clip_fraction_exact_without_noise() -> None:
    # Prepare: 3 bits set among 4 phones, centred: 3 x ½ − 1 x ½ = 1.
    rng = np.random.default_rng(0)

    # Execute: 1 / 4 + ½.
    fraction = noisy_clip_fraction(1.0, expected_clients=4, count_stddev=0.0, rng=rng)

    # Assert
    assert fraction == 0.75


def test_adaptive_clipping_tracks_the_median_norm() -> None:
    # Prepare: norms uniform on [0, 2] (median 1) from a clip bound of 0.1.
    rng = np.random.default_rng(0)
    clip_norm = 0.1

    # Execute: 100 rounds of 100 phones, sigma_b = 100 / 20 = 5.
    for _ in range(100):
        bits = float((rng.uniform(0, 2, size=100) <= clip_norm).sum()) - 50
        fraction = noisy_clip_fraction(
            bits, expected_clients=100, count_stddev=5.0, rng=rng
        )
        clip_norm = adapt_clip_norm(
            clip_norm, clip_fraction=fraction, target_quantile=0.5, clip_lr=0.2
        )

    # Assert
    assert clip_norm == pytest.approx(1.0, rel=0.2)


def test_effective_noise_multiplier_follows_andrew_et_al() -> None:
    # Prepare / Execute: z = 1, sigma_b = 0.5 -> (1 + 1)^(-1/2).
    z_eff = effective_noise_multiplier(1.0, 0.5)

    # Assert: and the inverse recovers z; no noise gives no privacy.
    assert z_eff == pytest.approx(1 / math.sqrt(2))
    assert update_noise_multiplier(z_eff, 0.5) == pytest.approx(1.0)
    assert effective_noise_multiplier(0.0, 0.5) == 0.0
    assert effective_noise_multiplier(1.0, 0.0) == 0.0


def test_effective_noise_multiplier_counts_the_clip_bits_sensitivity() -> None:
    # Prepare / Execute: z = 1, sigma_b = 1; centred bits (sensitivity ½) and
    # uncentred ones (sensitivity 1).
    centred = effective_noise_multiplier(1.0, 1.0)
    uncentred = effective_noise_multiplier(1.0, 1.0, bit_sensitivity=1.0)

    # Assert: (1 + 1/4)^(-1/2) = 0.8944 and (1 + 1)^(-1/2) = 0.7071; the inverse
    # `--target-epsilon` uses is the centred one.
    assert centred == pytest.approx(1 / math.sqrt(1.25))
    assert uncentred == pytest.approx(0.70710678)
    assert update_noise_multiplier(centred, 1.0) == pytest.approx(1.0)


def test_update_noise_multiplier_rejects_a_too_small_count_noise() -> None:
    # Prepare / Execute / Assert: 2 * 0.4 <= 1.
    with pytest.raises(ValueError, match="too small"):
        update_noise_multiplier(1.0, 0.4)


def test_realised_noise_multiplier_after_dropouts() -> None:
    # Prepare / Execute: 1 of 4 shares survived -> z * sqrt(1/4).
    realised = realised_noise_multiplier(2.0, noise_shares=4, survivors=1)

    # Assert
    assert realised == 1.0
    assert realised_noise_multiplier(2.0, noise_shares=4, survivors=4) == 2.0


def test_dp_config_resolves_count_noise_and_accounting_multiplier() -> None:
    # Prepare: m = 40 -> sigma_b = 2; z = 1 -> z_eff = (1 + 1/16)^(-1/2).
    config = DPConfig(expected_clients=40, adaptive_clip_quantile=0.5)

    # Execute
    z_eff = config.accounting_noise_multiplier()

    # Assert
    assert config.resolved_count_stddev == 2.0
    assert z_eff == pytest.approx((1 + 1 / 16) ** -0.5)
    assert DPConfig(noise_multiplier=1.3).accounting_noise_multiplier() == 1.3


def test_dp_config_distributed_accounts_for_lost_shares() -> None:
    # Prepare: z = 1, 16 shares, 4 of them reached the sum.
    config = DPConfig(placement="distributed", noise_shares=16)

    # Execute
    z = config.accounting_noise_multiplier(shares_survived=4)

    # Assert: sqrt(4 / 16) = 0.5.
    assert z == 0.5


@pytest.mark.parametrize(
    "settings",
    [
        {"clip_norm": 0.0},
        {"clip_norm": 1e300},
        {"clip_norm": float("nan")},
        {"noise_multiplier": -1.0},
        {"noise_multiplier": 0.0},
        {"noise_multiplier": 1e300},
        {"expected_clients": 0},
        {"adaptive_clip_quantile": 1.0},
        {"clip_lr": 0.0},
        {"count_stddev": -1.0},
        {"placement": "nowhere"},
        {"noise_shares": 0},
    ],
)
def test_dp_config_rejects_bad_settings(settings: dict[str, object]) -> None:
    # Prepare / Execute / Assert
    with pytest.raises(DPConfigError):
        DPConfig(**settings)  # type: ignore[arg-type]
