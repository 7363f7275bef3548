"""A simulated deployment: a large cohort's DP noise while a small one trains."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import dp_epsilon, two_phone_round
from test_private_round import private_delta

from cli.main import main
from coordinator.config import FederationConfig
from coordinator.privacy.dp import DPConfig, noise_rng
from coordinator.privacy.privacy_config import PrivacyConfig, PrivacyConfigError
from coordinator.protections import PrivacyState
from coordinator.protections.charge import epsilon_budget_left


def simulated_config(**privacy: object) -> FederationConfig:
    """C = 1, z = 1, 2 phones training; noise of a cohort of 8 of a million."""
    dp = DPConfig(clip_norm=1.0, noise_multiplier=1.0, expected_clients=2)
    settings = PrivacyConfig(
        dp=dp,
        delta=1e-5,
        simulated_population=1_000_000,
        noise_cohort_size=8,
        **privacy,  # type: ignore[arg-type]
    )
    return FederationConfig(clients_per_round=2, seed=7, privacy=settings)


def test_simulated_noise_is_the_large_cohorts_and_both_epsilons_are_reported() -> None:
    # Prepare: the replayable stream, so the noise can be compared exactly.
    config = simulated_config(replayable_noise=True)

    # Execute
    result = private_delta(
        two_phone_round(), {"a", "b"}, config, PrivacyState(), server_round=3, pool=10
    )

    # Assert: the sum gets N(0, (z C m / M)^2) = N(0, 0.25^2), over m = 2, so
    # the mean's noise is z C / M = 1/8 a coordinate, as a cohort of 8 would.
    clipped = np.array([1, 2, 3]) / math.sqrt(14) + np.array([3, 4, 5]) / math.sqrt(50)
    noise = noise_rng(7, 3).normal(0.0, 0.25, size=3)
    assert result.delta[0].numpy() == pytest.approx((clipped + noise) / 2)
    # This fleet's own epsilon, at the z it really got: 0.25 at q = 2/10.
    assert result.figures["noise_multiplier"] == 0.25
    own = dp_epsilon(0.2, 0.25, rounds=1, delta=1e-5)
    assert result.figures["epsilon"] == pytest.approx(own, rel=1e-9)
    # The deployment's, labelled apart: z = 1 at q = 8 / 1e6, delta 1e-7.
    simulated = result.figures["simulated_privacy"]
    assert simulated["simulated"] is True
    assert (simulated["population"], simulated["cohort_size"]) == (1_000_000, 8)
    assert simulated["delta"] == 1e-7 and simulated["noise_multiplier"] == 1.0
    deployment = dp_epsilon(8e-6, 1.0, rounds=1, delta=1e-7)
    assert simulated["epsilon"] == pytest.approx(deployment, rel=1e-9)
    assert simulated["epsilon"] < result.figures["epsilon"]
    assert "target_epsilon" not in result.figures


def test_a_simulated_target_calibrates_and_checks_the_deployments_epsilon() -> None:
    # Prepare: a target of 2 over 50 rounds at q = 8 / 1e6.
    base = simulated_config(target_epsilon=2.0, calibrate_noise=True).privacy

    # Execute
    resolved = base.resolved(population=100, clients_per_round=2, rounds=50)
    config = FederationConfig(clients_per_round=2, seed=7, privacy=resolved)
    left = epsilon_budget_left(config, PrivacyState(), pool=10)

    # Assert: the calibrated z spends at most 2 in 50 simulated rounds (and a
    # hair less noise would not), so 50 rounds are left before the first.
    assert resolved.dp is not None
    z = resolved.dp.noise_multiplier
    assert dp_epsilon(8e-6, z, rounds=50, delta=1e-7) <= 2.0
    assert dp_epsilon(8e-6, z * 0.99, rounds=50, delta=1e-7) > 2.0
    assert left == 50


def test_simulated_deployment_settings_are_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    dp = DPConfig(expected_clients=20)
    out = str(tmp_path / "run")

    # Execute / Assert
    with pytest.raises(PrivacyConfigError, match="needs both"):
        PrivacyConfig(dp=dp, simulated_population=1000)
    with pytest.raises(PrivacyConfigError, match="needs DP"):
        PrivacyConfig(simulated_population=1000, noise_cohort_size=100)
    with pytest.raises(PrivacyConfigError, match="must lie above the cohort"):
        PrivacyConfig(dp=dp, simulated_population=1000, noise_cohort_size=20)
    with pytest.raises(PrivacyConfigError, match="at most simulated_population"):
        PrivacyConfig(dp=dp, simulated_population=1000, noise_cohort_size=2000)
    code = main(["simulate", "--out", out, "--noise-cohort-size", "100"])
    assert code == 2 and "needs --dp-clip" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_simulate_cli_writes_the_simulated_deployment_beside_the_real_epsilon(
    tmp_path: Path,
) -> None:
    # Prepare
    run = tmp_path / "run"
    options = ["--max-users", "40", "--clients-per-round", "6", "--rounds", "1",
               "--eval-every", "0", "--threads", "1", "--always-eligible",
               "--dp-clip", "0.5", "--noise-multiplier", "1.0",
               "--simulated-population", "1000000",
               "--noise-cohort-size", "10000"]  # fmt: skip

    # Execute
    code = main(["simulate", "--out", str(run), *options])

    # Assert: the run's own z is 1 x 6 / 10,000; the deployment's is 1.
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert code == 0
    assert line["noise_multiplier"] == pytest.approx(6 / 10_000)
    assert line["simulated_privacy"]["noise_multiplier"] == 1.0
    assert line["simulated_privacy"]["population"] == 1_000_000
    assert line["epsilon"] > line["simulated_privacy"]["epsilon"]
