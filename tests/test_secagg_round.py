"""Phones dropping out inside secure aggregation, in a round and in a run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import EVERY_PHONE_ONLINE, METRICS, NewSimulation, small_federation
from test_private_round import private_delta

from coordinator.config import FederationConfig
from coordinator.events import ClientDone, Event
from coordinator.privacy.privacy_config import PrivacyConfig
from coordinator.protections import PrivacyState
from coordinator.protections.state import AggregationAborted
from device_sim.config import LocalTrainingConfig
from device_sim.executor import ClientSummary, TrainedRound
from device_sim.masked_figures import loss_scale, mean_losses, weighted_losses
from device_sim.phone import ClientMetrics, ClientReport
from device_sim.profile import drops_out
from device_sim.ranks import SingleRank
from models.rundir import RunDir

# One example each; e and a are the phones seed 1 drops (see the test).
UPDATES = {
    "a": [1.0, 0.0, 0.0],
    "b": [0.0, 1.0, 0.0],
    "c": [0.0, 0.0, 1.0],
    "d": [1.0, 1.0, 1.0],
    "e": [5.0, 5.0, 5.0],
    "f": [2.0, 0.0, 0.0],
}


def six_phone_round() -> TrainedRound:
    """Six phones of one example each from a zero model, all on this rank."""
    reports = {
        c: ClientReport(c, [torch.tensor(u)], 1, METRICS) for c, u in UPDATES.items()
    }
    summaries = [ClientSummary(c, 1, float("nan"), True, None, None) for c in reports]
    return TrainedRound(summaries, [torch.zeros(3)], SingleRank(), reports)


def secagg_config(seed: int, dropout_rate: float) -> FederationConfig:
    fleet = replace(EVERY_PHONE_ONLINE, dropout_rate=dropout_rate)
    return FederationConfig(
        clients_per_round=6,
        seed=seed,
        fleet=fleet,
        # One step may move 10, so that e's 8.66 is within an honest phone's
        # reach and the server's check of the sum
        # (coordinator.protections.sum_checks) passes.
        local=LocalTrainingConfig(grad_clip_norm=10.0),
        privacy=PrivacyConfig(secure_aggregation=True),
    )


def test_secagg_phone_dropping_after_masking_is_recovered_exactly() -> None:
    # Prepare: at rate 0.25, seed 1 drops e after the key exchange and a after
    # masking in round 1 (six phones: the complete graph, threshold 3).
    config = secagg_config(seed=1, dropout_rate=0.25)
    stage = {
        s: [c for c in UPDATES if drops_out(1, 1, c, 0.25, stage=s)]
        for s in ("secagg-keys", "secagg-masking")
    }
    assert stage["secagg-keys"] == ["e"] and "a" in stage["secagg-masking"]

    # Execute
    result = private_delta(
        six_phone_round(), set(UPDATES), config, PrivacyState(), server_round=1, pool=6
    )

    # Assert: the survivors b, c, d, f sum to [3, 2, 2] (their mean [0.75, 0.5,
    # 0.5]) once a's pairwise masks are removed; e never masked.
    assert result.included == {"b", "c", "d", "f"}
    assert result.exact_sum[0].tolist() == pytest.approx([3.0, 2.0, 2.0], abs=1e-4)
    assert result.delta[0].tolist() == pytest.approx([0.75, 0.5, 0.5], abs=1e-4)
    assert result.figures["masked_sum"]["num_examples"] == 4
    secagg = result.figures["secagg"]
    assert secagg["dropped_after_keys"] == 1
    assert secagg["dropped_after_masking"] == 1
    assert secagg["recovered"] == 1
    assert secagg["survivors"] == 4


def test_secagg_too_few_survivors_abort_with_the_stage_counts() -> None:
    # Prepare: every phone drops after the key exchange.
    config = secagg_config(seed=1, dropout_rate=1.0)

    # Execute / Assert
    with pytest.raises(
        AggregationAborted, match="6 of 6 dropped after the key exchange"
    ):
        private_delta(
            six_phone_round(),
            set(UPDATES),
            config,
            PrivacyState(),
            server_round=1,
            pool=6,
        )


def test_simulate_secagg_line_counts_the_stage_dropouts(
    tmp_path: Path, new_simulation: NewSimulation
) -> None:
    # Prepare: ten phones a round under SecAgg, a fifth of them dropping at
    # each stage (before training too).
    federation = small_federation(
        clients_per_round=10,
        eval_every=0,
        seed=4,
        local=LocalTrainingConfig(max_local_steps=1),
        fleet=replace(EVERY_PHONE_ONLINE, dropout_rate=0.2),
        privacy=PrivacyConfig(secure_aggregation=True, attack_phones=0),
    )
    events: list[Event] = []
    simulation = new_simulation(tmp_path / "run", federation, on_event=events.append)

    # Execute
    records = [simulation.run_round() for _ in range(2)]
    simulation.close()

    # Assert: each line counts the phones its cohort's draws drop at each stage
    # (seed 4: three in each round), and the dropped-after-masking ones were
    # recovered; the logged lines say the same.
    logged = RunDir(tmp_path / "run").read_metrics()
    assert [r["secagg"] for r in logged] == [r["secagg"] for r in records]
    for record in records:
        r = record["server_round"]
        cohort = [
            e.client_id
            for e in events
            if isinstance(e, ClientDone) and e.server_round == r
        ]
        keys = [c for c in cohort if drops_out(4, r, c, 0.2, stage="secagg-keys")]
        masking = [
            c
            for c in cohort
            if c not in keys and drops_out(4, r, c, 0.2, stage="secagg-masking")
        ]
        assert not record["abandoned"]
        secagg = record["secagg"]
        assert secagg["dropped_after_keys"] == len(keys)
        assert secagg["dropped_after_masking"] == len(masking)
        assert secagg["survivors"] == len(cohort) - len(keys) - len(masking)
        assert secagg["recovered"] == len(masking)
    assert sum(r["secagg"]["recovered"] for r in records) > 0


def test_masked_losses_are_clamped_scaled_and_recovered() -> None:
    # Prepare: 3 examples; a NaN and a diverged loss are clamped to 64 nats;
    # C = 16 scales by 16 / 64 = 0.25.
    metrics = ClientMetrics(
        loss_before=float("nan"),
        loss_after=100.0,
        train_loss=2.0,
        steps=1,
        num_tokens=9,
    )
    scale = loss_scale(16.0)

    # Execute
    appended = weighted_losses(metrics, 3, scale=scale)
    means = mean_losses(appended, 3.0, scale=scale)

    # Assert: (train, before, after) x 3 x 0.25, and back.
    assert scale == 0.25
    assert appended.tolist() == [1.5, 48.0, 48.0]
    assert means == {"train_loss": 2.0, "loss_before": 64.0, "loss_after": 64.0}
    assert set(mean_losses(appended, 0.0, scale=scale).values()) == {None}
