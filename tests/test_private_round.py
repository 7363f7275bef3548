"""Secure aggregation and DP-FedAvg wrapped around a round's aggregation."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp
from helpers import (
    EVERY_PHONE_ONLINE,
    NewSimulation,
    dp_epsilon,
    record_sums,
    two_phone_round,
)

from cli.main import main
from coordinator.config import FederationConfig, FederationConfigError
from coordinator.privacy.budget import PrivacyBudgetSpent
from coordinator.privacy.dp import DPConfig, noise_rng
from coordinator.privacy.privacy_config import PrivacyConfig, default_delta
from coordinator.protections import PrivacyState, Release, protection_for
from coordinator.protections.state import RoundAsk
from coordinator.round.selection import poisson_select
from coordinator.round.server_choices import AggregationConfig
from coordinator.run.simulation import Simulation
from corpora.corpus import CorpusSplits
from device_sim.config import FleetConfig, LocalTrainingConfig
from device_sim.executor import TrainedRound
from models.rundir import RunDir
from models.seeding import numpy_rng


def private_delta(
    trained: TrainedRound,
    accepted: set[str],
    config: FederationConfig,
    state: PrivacyState,
    *,
    server_round: int,
    pool: int,
) -> Release:
    """The run's protection aggregating one round, as `run_round` calls it."""
    ask = RoundAsk(config, server_round, pool, state)
    return protection_for(config).aggregate(trained, accepted, ask)


def dp_federation(
    clients: int,
    *,
    rounds: int,
    fleet: FleetConfig = EVERY_PHONE_ONLINE,
    **privacy: Any,
) -> FederationConfig:
    """DP-FedAvg (C = 0.5, z = 1) for `clients` phones a round, one local step
    each, no evaluation; `privacy` adds to the `PrivacyConfig`."""
    dp = DPConfig(clip_norm=0.5, noise_multiplier=1.0, expected_clients=clients)
    return FederationConfig(
        rounds=rounds,
        clients_per_round=clients,
        eval_every=0,
        local=LocalTrainingConfig(max_local_steps=1),
        fleet=fleet,
        privacy=PrivacyConfig(dp=dp, **privacy),
    )


def test_private_delta_secagg_equals_the_plaintext_weighted_mean() -> None:
    # Prepare: with a local clip of 8 one step moves at most 8, above both
    # norms (3.74 and 7.07), so the clip (C = 16 x 8) changes nothing and the
    # server's check of the sum (coordinator.protections.sum_checks) passes.
    trained = two_phone_round()
    crossed = record_sums(trained)
    config = FederationConfig(
        clients_per_round=2,
        fleet=EVERY_PHONE_ONLINE,
        local=LocalTrainingConfig(grad_clip_norm=8.0),
        privacy=PrivacyConfig(secure_aggregation=True),
    )

    # Execute
    result = private_delta(
        trained, {"a", "b"}, config, PrivacyState(), server_round=1, pool=2
    )

    # Assert: (1*[1,2,3] + 3*[3,4,5]) / 4 = [2.5, 3.5, 4.5], within quantisation;
    # the count 4 and the mean losses (1.0 on both phones) come from the sum.
    assert result.delta[0].tolist() == pytest.approx([2.5, 3.5, 4.5], abs=1e-4)
    assert result.exact_sum[0].tolist() == pytest.approx([10.0, 14.0, 18.0], abs=1e-3)
    assert result.noisy_mean is None
    assert result.figures["secagg"]["degree"] == 1
    masked = result.figures["masked_sum"]
    assert masked["num_examples"] == 4
    for name in ("train_loss", "loss_before", "loss_after"):
        assert masked[name] == pytest.approx(1.0, abs=1e-4)
    (total,) = crossed
    # 3 coordinates, 3 weighted losses, the count: all masked uint32 values.
    assert total.dtype == np.int64 and total.shape == (7,)
    assert 0 <= total.min() and total.max() < 2 * 2**32  # two masked uint32 values
    scaled = 4 * 16 / 64  # 4 examples x loss 1 x loss_scale(16)
    plain = np.array([10.0, 14.0, 18.0, scaled, scaled, scaled, 4.0])
    assert not np.allclose(total % 2**32, plain)  # masked, not the sum itself


def test_private_delta_dp_is_the_noisy_fixed_denominator_mean() -> None:
    # Prepare: clip to C = 1, z = 1, m = 2; weight 1 per phone (DP-FedAvg); the
    # replayable noise stream, so that the noise can be compared exactly.
    trained = two_phone_round()
    dp = DPConfig(clip_norm=1.0, noise_multiplier=1.0, expected_clients=2)
    privacy = PrivacyConfig(dp=dp, delta=1e-5, replayable_noise=True)
    config = FederationConfig(clients_per_round=2, seed=7, privacy=privacy)

    # Execute
    result = private_delta(
        trained, {"a", "b"}, config, PrivacyState(), server_round=3, pool=10
    )

    # Assert: clipped [1,2,3]/sqrt(14) + [3,4,5]/sqrt(50), plus N(0, 1) noise
    # from the round's stream, over m = 2.
    clipped = np.array([1, 2, 3]) / math.sqrt(14) + np.array([3, 4, 5]) / math.sqrt(50)
    noise = noise_rng(7, 3).normal(0.0, 1.0, size=3)
    assert result.delta[0].numpy() == pytest.approx((clipped + noise) / 2)
    assert result.exact_sum[0].numpy() == pytest.approx(clipped)
    expected = dp_epsilon(0.2, 1.0, rounds=1, delta=1e-5)
    assert result.figures["epsilon"] == pytest.approx(expected, rel=1e-9)
    assert result.figures["sampling_probability"] == 0.2
    assert result.figures["noise_source"] == "replayable (no privacy)"


def test_private_delta_dp_noise_comes_from_the_os_by_default() -> None:
    # Prepare: the same round twice, with the default (OS) noise.
    dp = DPConfig(clip_norm=1.0, noise_multiplier=1.0, expected_clients=2)
    config = FederationConfig(
        clients_per_round=2, seed=7, privacy=PrivacyConfig(dp=dp, delta=1e-5)
    )

    # Execute
    first, second = (
        private_delta(
            two_phone_round(),
            {"a", "b"},
            config,
            PrivacyState(),
            server_round=3,
            pool=10,
        )  # fmt: skip
        for _ in range(2)
    )

    # Assert: neither is the seed's replayable stream, and they differ.
    clipped = np.array([1, 2, 3]) / math.sqrt(14) + np.array([3, 4, 5]) / math.sqrt(50)
    replayable = (clipped + noise_rng(7, 3).normal(0.0, 1.0, size=3)) / 2
    for result in (first, second):
        assert not np.allclose(result.delta[0].numpy(), replayable)
        assert result.figures["noise_source"] == "os"
    assert not np.allclose(first.delta[0].numpy(), second.delta[0].numpy())


def test_private_delta_adaptive_clip_sends_centred_bits() -> None:
    # Prepare: C = 1, z = 1, sigma_b = 1, m = 2: both norms (3.74, 7.07) exceed
    # C, so each phone's bit is b − ½ = −½ and their sum −1.
    trained = two_phone_round()
    crossed = record_sums(trained)
    dp = DPConfig(
        clip_norm=1.0,
        noise_multiplier=1.0,
        expected_clients=2,
        adaptive_clip_quantile=0.5,
        count_stddev=1.0,
    )
    privacy = PrivacyConfig(dp=dp, delta=1e-5, replayable_noise=True)
    config = FederationConfig(clients_per_round=2, seed=7, privacy=privacy)

    # Execute
    result = private_delta(
        trained, {"a", "b"}, config, PrivacyState(), server_round=3, pool=10
    )

    # Assert: the server adds ½ back after the noisy mean with m = 2, and the
    # accountant gets z_eff = (1 + (2 x 1)^-2)^(-1/2) = 0.8944, not the 0.7071
    # of uncentred bits.
    (total,) = crossed
    assert total[-1] == -1.0
    rng = noise_rng(7, 3)
    rng.normal(0.0, 1.0, size=3)  # the update's noise comes first
    fraction = (-1.0 + rng.normal(0.0, 1.0)) / 2 + 0.5
    assert result.figures["next_clip_norm"] == pytest.approx(
        math.exp(-0.2 * (fraction - 0.5))
    )
    z_eff = 1 / math.sqrt(1.25)
    assert result.figures["noise_multiplier"] == pytest.approx(z_eff)
    expected = dp_epsilon(0.2, z_eff, rounds=1, delta=1e-5)
    assert result.figures["epsilon"] == pytest.approx(expected, rel=1e-9)


def test_privacy_config_refuses_conflicts_and_resolves_delta() -> None:
    # Prepare
    secagg = PrivacyConfig(secure_aggregation=True)
    dp = PrivacyConfig(dp=DPConfig(expected_clients=20))

    # Execute / Assert
    with pytest.raises(FederationConfigError, match="needs every plain update"):
        FederationConfig(aggregation=AggregationConfig(name="median"), privacy=secagg)
    with pytest.raises(FederationConfigError, match="expected_clients 20"):
        FederationConfig(clients_per_round=6, privacy=dp)
    assert default_delta(966) == 1e-5 and default_delta(40_000) == 1e-6
    with pytest.raises(ValueError, match="below 1/population"):
        PrivacyConfig(dp=DPConfig(), delta=0.1).resolved(
            population=40, clients_per_round=20, rounds=2
        )
    old = FederationConfig().to_dict()
    del old["privacy"]
    assert FederationConfig.from_dict(old).privacy == PrivacyConfig()


def test_poisson_select_draws_each_phone_with_probability_q() -> None:
    # Prepare
    population = [f"p{i:03d}" for i in range(1000)]
    eligible = population[:500]

    # Execute
    chosen = poisson_select(
        population, eligible, sampling_probability=0.1, seed=0, server_round=1
    )

    # Assert: about 0.1 x 500 eligible phones, none ineligible, replayable.
    assert 30 <= len(chosen) <= 70 and set(chosen) <= set(eligible)
    again = poisson_select(
        population, eligible, sampling_probability=0.1, seed=0, server_round=1
    )
    assert chosen == again


def test_dp_simulation_epsilon_matches_dp_accounting_and_survives_resume(
    tmp_path: Path, small_splits: CorpusSplits, new_simulation: NewSimulation
) -> None:
    # Prepare: 30 phones, q = 6/30, every sampled phone eligible and online.
    federation = dp_federation(6, rounds=3, attack_phones=2)
    simulation = new_simulation(tmp_path / "run", federation)

    # Execute: two rounds, a resume, a third.
    simulation.run_round()
    simulation.run_round()
    simulation.close()
    resumed = Simulation.resume(tmp_path / "run", splits=small_splits)
    last = resumed.run_round()
    resumed.close()

    # Assert
    records = RunDir(tmp_path / "run").read_metrics()
    released = [r for r in records if not r["abandoned"]]
    assert len(released) >= 2
    q = 6 / len(resumed.fleet)
    expected = dp_epsilon(q, 1.0, rounds=3, delta=1e-5)
    assert records[-1]["epsilon"] == pytest.approx(expected, rel=1e-9)
    assert last["delta"] == 1e-5
    assert resumed.federation.privacy.dp == federation.privacy.dp
    epsilons = [r["epsilon"] for r in records]
    assert epsilons == sorted(epsilons)  # it never resets
    attack = released[0]["attack"]
    assert set(attack) == {"update", "sum", "noisy"}
    assert 0 <= attack["update"]["precision"] <= 1
    assert 0 <= attack["update"]["recall"] <= 1


def test_simulate_cli_secagg_two_workers_match_one_and_conflicts_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    common = ["--max-users", "40", "--clients-per-round", "6", "--rounds", "2",
              "--eval-every", "0", "--secure-aggregation"]  # fmt: skip
    common += ["--threads", "1"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")

    # Execute
    codes = [
        main(["simulate", "--out", one, *common]),
        main(["simulate", "--out", two, "--workers", "2", *common]),
        main(["simulate", "--out", str(tmp_path / "x"), "--noise-multiplier", "1"]),
        main(
            [
                "simulate",
                "--out",
                str(tmp_path / "y"),
                "--secure-aggregation",
                "--aggregator",
                "median",
            ]
        ),  # fmt: skip
        main(["simulate", "--resume", one, "--dp-clip", "0.5"]),
    ]

    # Assert: the same numbers but timings; only masked sums reached the server.
    err = capsys.readouterr().err
    assert codes == [0, 0, 2, 2, 2]
    assert "needs --dp-clip" in err and "needs every plain update" in err
    assert "--dp-clip: settings of a new run" in err
    a, b = RunDir(one).read_metrics(), RunDir(two).read_metrics()
    assert [without_timings(r) for r in a] == [without_timings(r) for r in b]
    assert all(r["secure_aggregation"] and "update" not in r["attack"] for r in a)
    assert all(r["attack"]["sum"]["recall"] > 0.5 for r in a if not r["abandoned"])


def test_dp_round_short_of_min_reports_is_released_and_charged_once(
    tmp_path: Path, new_simulation: NewSimulation
) -> None:
    # Prepare: q = 1/30 and min_reports 1, so most rounds' Poisson draw holds
    # fewer valid reports (none) than a round needs.
    federation = dp_federation(1, rounds=4)
    simulation = new_simulation(tmp_path / "run", federation)
    before = [p.clone() for p in simulation.global_model.parameters()]

    # Execute
    for _ in range(4):
        simulation.run_round()
    simulation.close()

    # Assert: the short rounds are released like any other (the noisy sum over
    # the fixed denominator m = 1), not abandoned, and each round is charged
    # exactly once: epsilon after round k is k rounds of (1/30, 1).
    records = RunDir(tmp_path / "run").read_metrics()
    short = [r for r in records if r["selected"] < federation.min_reports]
    assert short
    assert not any(r["abandoned"] or r["abandon_reason"] for r in records)
    q = 1 / len(simulation.fleet)
    for server_round, record in enumerate(records, start=1):
        expected = dp_epsilon(q, 1.0, rounds=server_round, delta=1e-5)
        assert record["epsilon"] == pytest.approx(expected, rel=1e-9)
        assert "charged_unreleased" not in record
    assert (
        PrivacyState.from_dict(RunDir(tmp_path / "run").read_state()["privacy"])
        .load_accountant()
        .rounds
        == 4
    )
    after = list(simulation.global_model.parameters())
    assert any(not (a == b).all() for a, b in zip(before, after, strict=True))


def test_target_epsilon_stops_before_the_round_that_would_exceed_it(
    tmp_path: Path, new_simulation: NewSimulation
) -> None:
    # Prepare: z = 1 fixed; the target lies between the epsilon of 2 and 3 rounds.
    q = 6 / 30
    two = dp_epsilon(q, 1.0, rounds=2, delta=1e-5)
    three = dp_epsilon(q, 1.0, rounds=3, delta=1e-5)
    target = (two + three) / 2
    federation = dp_federation(6, rounds=5, target_epsilon=target, attack_phones=0)
    simulation = new_simulation(tmp_path / "run", federation)
    assert len(simulation.fleet) == 30

    # Execute
    simulation.run_round()
    simulation.run_round()
    with pytest.raises(PrivacyBudgetSpent, match="past the target") as spent:
        simulation.run_round()
    simulation.close()

    # Assert: two rounds saved, each line with the spent epsilon and the target.
    records = RunDir(tmp_path / "run").read_metrics()
    assert [r["server_round"] for r in records] == [1, 2]
    assert records[-1]["epsilon"] == pytest.approx(two, rel=1e-9)
    assert all(r["target_epsilon"] == target for r in records)
    assert simulation.server_round == 2 and "after 2 rounds" in str(spent.value)


def test_dp_samples_among_the_eligible_and_accounts_each_round_at_its_q(
    tmp_path: Path, new_simulation: NewSimulation
) -> None:
    # Prepare: eligibility on, so each round's pool is the phones eligible then.
    federation = replace(
        dp_federation(
            4, rounds=3, fleet=FleetConfig(dropout_rate=0.0), attack_phones=0
        ),
        min_report_fraction=0.25,
    )
    simulation = new_simulation(tmp_path / "run", federation)

    # Execute
    records = [simulation.run_round() for _ in range(3)]
    simulation.close()

    # Assert: q_t = 4 / eligible_t, and epsilon composes exactly those events.
    accountant = rdp.RdpAccountant()
    for record in records:
        pool = record["eligible"]
        assert 4 < pool < len(simulation.fleet)
        assert record["sampling_probability"] == pytest.approx(4 / pool)
        event = dp_accounting.GaussianDpEvent(1.0)
        accountant.compose(dp_accounting.PoissonSampledDpEvent(4 / pool, event))
        assert record["epsilon"] == pytest.approx(accountant.get_epsilon(1e-5))
    selected = sum(r["selected"] for r in records)
    assert 0 < selected  # about 4 a round, not 4 x the eligible share


def without_timings(record: dict[str, object]) -> dict[str, object]:
    """A metrics line without the figures that depend on the machine's speed."""
    kept = {k: v for k, v in record.items() if "seconds" not in k}
    secagg = dict(kept.pop("secagg", {}))  # type: ignore[call-overload]
    kept["secagg"] = {k: v for k, v in secagg.items() if "seconds" not in k}
    for name in ("train_loss", "loss_before", "loss_after"):
        value = kept.pop(name, None)
        kept[name] = None if value is None else round(float(value), 4)  # type: ignore[arg-type]
    return kept


def test_private_delta_distributed_noise_comes_from_the_phones_shares() -> None:
    # Prepare: SecAgg + DP with distributed noise, z = 1, C = 1, m = n = 2.
    trained = two_phone_round()
    dp = DPConfig(
        clip_norm=1.0, noise_multiplier=1.0, expected_clients=2, placement="distributed"
    )
    privacy = PrivacyConfig(
        secure_aggregation=True, dp=dp, delta=1e-5, replayable_noise=True
    )
    config = FederationConfig(clients_per_round=2, seed=7, privacy=privacy)

    # Execute
    result = private_delta(
        trained, {"a", "b"}, config, PrivacyState(), server_round=3, pool=10
    )

    # Assert: each phone added N(0, 1/2) from its own stream before masking; the
    # server added nothing and never held the noiseless sum.
    clipped = np.array([1, 2, 3]) / math.sqrt(14) + np.array([3, 4, 5]) / math.sqrt(50)
    shares = sum(
        numpy_rng(7, 3, c, "dp-noise").normal(0.0, 1 / math.sqrt(2), size=3)
        for c in ("a", "b")
    )
    noisy = clipped + shares
    assert result.exact_sum[0].numpy() == pytest.approx(noisy, abs=1e-4)
    assert result.delta[0].numpy() == pytest.approx(noisy / 2, abs=1e-4)
    assert result.figures["noise_placement"] == "distributed"
    assert result.figures["noise_multiplier"] == pytest.approx(1.0)
    expected = dp_epsilon(0.2, 1.0, rounds=1, delta=1e-5)
    assert result.figures["epsilon"] == pytest.approx(expected, rel=1e-9)


def test_private_delta_distributed_noise_accounts_for_lost_shares() -> None:
    # Prepare: shares provisioned for n = 4 phones, but only 2 report.
    trained = two_phone_round()
    dp = DPConfig(
        clip_norm=1.0,
        noise_multiplier=1.0,
        expected_clients=2,
        placement="distributed",
        noise_shares=4,
    )
    privacy = PrivacyConfig(secure_aggregation=True, dp=dp, delta=1e-5)
    config = FederationConfig(clients_per_round=2, seed=7, privacy=privacy)

    # Execute
    result = private_delta(
        trained, {"a", "b"}, config, PrivacyState(), server_round=3, pool=10
    )

    # Assert: two shares of variance 1/4 carry stddev sqrt(1/2): z = 0.7071.
    assert result.figures["noise_multiplier"] == pytest.approx(math.sqrt(0.5))
    expected = dp_epsilon(0.2, math.sqrt(0.5), rounds=1, delta=1e-5)
    assert result.figures["epsilon"] == pytest.approx(expected, rel=1e-9)


def test_distributed_noise_without_secure_aggregation_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    dp = DPConfig(clip_norm=1.0, placement="distributed")

    # Execute / Assert: the config and the CLI both refuse it.
    with pytest.raises(ValueError, match="needs secure aggregation"):
        PrivacyConfig(dp=dp)
    code = main(
        [
            "simulate",
            "--out",
            str(tmp_path / "r"),
            "--dp-clip",
            "1",
            "--dp-noise",
            "distributed",
            "--rounds",
            "1",
        ]
    )
    assert code == 2
    assert "secure aggregation" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_dp_adaptive_clip_run_epsilon_is_dp_accounting_at_the_centred_z_eff(
    tmp_path: Path, new_simulation: NewSimulation
) -> None:
    # Prepare: z = 1, sigma_b = 1, the clip bound following the median; q = 6/30.
    federation = dp_federation(6, rounds=2, attack_phones=0)
    privacy = federation.privacy
    assert privacy.dp is not None
    dp = replace(privacy.dp, adaptive_clip_quantile=0.5, count_stddev=1.0)
    federation = replace(federation, privacy=replace(privacy, dp=dp))
    simulation = new_simulation(tmp_path / "run", federation)

    # Execute
    records = [simulation.run_round() for _ in range(2)]
    simulation.close()

    # Assert: centred bits (sensitivity 1/2) give z_eff = (1 + 1/4)^(-1/2), and
    # the logged epsilon is dp_accounting's at that z_eff; the clip bound moved.
    z_eff = 1 / math.sqrt(1.25)
    q = 6 / len(simulation.fleet)
    for server_round, record in enumerate(records, start=1):
        assert record["noise_multiplier"] == pytest.approx(z_eff)
        expected = dp_epsilon(q, z_eff, rounds=server_round, delta=1e-5)
        assert record["epsilon"] == pytest.approx(expected, rel=1e-9)
    assert any(r.get("next_clip_norm", 0.5) != 0.5 for r in records)
