"""One federated round: selection, deadlines, dropouts, screening, aggregation."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from coordinator.config import FederationConfig
from coordinator.events import ClientDone, Event, RoundStarted
from coordinator.round.rounds import (
    RoundEnvironment,
    ServerState,
    model_bytes,
    run_round,
)
from coordinator.round.selection import Arrival, plan_round, select_clients
from coordinator.round.server_choices import StrategyConfig
from coordinator.round.strategies import initial_state
from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer
from device_sim.config import FleetConfig, LocalTrainingConfig
from device_sim.executor import FleetExecutor
from device_sim.fleet import Fleet
from device_sim.phone import Phone
from device_sim.profile import draw_profile, drops_out
from models.batching import encode_messages, make_batches
from models.config import ModelConfig
from models.model import NextWordModel
from models.seeding import numpy_rng
from models.training import batch_loss
from models.weights import parameters_of


def federation(**changes: object) -> FederationConfig:
    """A small FedAvg round: 4 reports, 2 local steps, no daily pattern or dropouts."""
    base = FederationConfig(
        strategy=StrategyConfig(name="fedavg"),
        clients_per_round=4,
        local=LocalTrainingConfig(max_local_steps=2),
        fleet=FleetConfig(eligibility=False, dropout_rate=0.0),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def start(config: FederationConfig, model_config: ModelConfig) -> ServerState:
    torch.manual_seed(0)
    parameters = parameters_of(NextWordModel(model_config))
    return ServerState(
        server_round=0,
        parameters=parameters,
        strategy=initial_state(config.strategy, parameters),
        clock=0.0,
    )


def environment(
    fleet: Fleet,
    config: FederationConfig,
    tokenizer: WordTokenizer,
    model_config: ModelConfig,
) -> RoundEnvironment:
    executor = FleetExecutor(
        model_config=model_config,
        tokenizer=tokenizer,
        local=config.local,
        fault_kind=config.fleet.fault_kind,
    )
    return RoundEnvironment(fleet, executor, tokenizer, model_config.max_len)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_run_round_fedavg_one_phone_one_step_equals_sgd(
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
    precision: str,
) -> None:
    # Prepare: one phone with five messages (one batch), one local step, FedAvg
    # with server_lr 1; the reference takes that step by hand on the same batch.
    config = federation(
        clients_per_round=1,
        over_selection=0.0,
        local=LocalTrainingConfig(
            max_local_steps=1, client_lr=0.5, grad_clip_norm=1.0, precision=precision
        ),
    )
    texts = list(next(iter(small_splits.training_users.values())).train[:5])
    profile = draw_profile(0, "solo", config.fleet)
    phone = Phone("solo", train=texts, future=(), profile=profile, seed=0)
    fleet = Fleet([phone], config=config.fleet)
    state = start(config, tiny_model_config)
    reference = NextWordModel(tiny_model_config)
    for target, source in zip(reference.parameters(), state.parameters, strict=True):
        target.data.copy_(source)
    sequences = encode_messages(tokenizer, texts, tiny_model_config.max_len)
    rng = numpy_rng(0, 1, "solo", "train")
    (batch,) = make_batches(sequences, 16, pad_id=tokenizer.pad_id, rng=rng)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    batch_loss(reference, batch, tokenizer.pad_id, precision).backward()
    nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
    optimizer.step()

    # Execute
    env = environment(fleet, config, tokenizer, tiny_model_config)
    new_state, metrics = run_round(state, env, config)

    # Assert
    assert metrics.reported == 1 and not metrics.abandoned
    assert metrics.num_examples == len(sequences)
    for got, want in zip(new_state.parameters, reference.parameters(), strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=0, atol=1e-6)


def test_run_round_same_state_gives_identical_results(
    small_splits: CorpusSplits, tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare
    config = federation(fleet=FleetConfig(dropout_rate=0.5))
    fleet = Fleet.from_splits(small_splits, config.fleet, seed=0)
    state = replace(start(config, tiny_model_config), clock=22 * 3600.0)

    # Execute
    env = environment(fleet, config, tokenizer, tiny_model_config)
    first_state, first = run_round(state, env, config)
    second_state, second = run_round(state, env, config)

    # Assert
    assert first.reported > 0 and first.dropped > 0
    assert replace(first, wall_seconds=0) == replace(second, wall_seconds=0)
    for a, b in zip(first_state.parameters, second_state.parameters, strict=True):
        assert torch.equal(a, b)
    assert first_state.clock == second_state.clock


def test_run_round_all_dropped_abandons_and_keeps_model(
    small_splits: CorpusSplits, tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare: every selected phone drops out; 4 x 1.3 -> 6 selected.
    config = federation(fleet=FleetConfig(eligibility=False, dropout_rate=1.0))
    fleet = Fleet.from_splits(small_splits, config.fleet, seed=0)
    state = start(config, tiny_model_config)

    # Execute
    env = environment(fleet, config, tokenizer, tiny_model_config)
    new_state, metrics = run_round(state, env, config)

    # Assert: the round waited for the 120 s deadline, the clock moved 600 s.
    assert (metrics.selected, metrics.dropped, metrics.reported) == (6, 6, 0)
    assert metrics.abandoned
    assert metrics.abandon_reason == (
        "only 0 valid reports of 6 selected (6 dropped, 0 late, 0 rejected), 2 needed"
    )
    assert metrics.simulated_seconds == 120.0
    assert new_state.server_round == 1 and new_state.clock == 600.0
    assert new_state.strategy is state.strategy
    for a, b in zip(new_state.parameters, state.parameters, strict=True):
        assert torch.equal(a, b)


def test_run_round_nobody_eligible_abandons_before_selection(
    small_splits: CorpusSplits, tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare: no phone is ever on an unmetered network.
    config = federation(fleet=FleetConfig(unmetered_prob=0.0))
    fleet = Fleet.from_splits(small_splits, config.fleet, seed=0)
    state = start(config, tiny_model_config)

    # Execute
    env = environment(fleet, config, tokenizer, tiny_model_config)
    _, metrics = run_round(state, env, config)

    # Assert
    assert metrics.abandoned and metrics.selected == 0 and metrics.bytes_down == 0
    assert metrics.abandon_reason == "only 0 phones eligible, 2 reports needed"


def test_run_round_counts_the_phones_that_drop_out(
    small_splits: CorpusSplits, tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare: half the selected phones drop out; the expected ones are recomputed
    # from the same streams.
    config = federation(fleet=FleetConfig(eligibility=False, dropout_rate=0.5))
    fleet = Fleet.from_splits(small_splits, config.fleet, seed=0)
    selected = select_clients(fleet.client_ids, count=6, seed=0, server_round=1)
    expected = sum(drops_out(0, 1, c, 0.5) for c in selected)

    # Execute
    env = environment(fleet, config, tokenizer, tiny_model_config)
    _, metrics = run_round(start(config, tiny_model_config), env, config)

    # Assert
    assert metrics.selected == 6
    assert metrics.dropped == expected
    assert metrics.reported == min(4, 6 - expected)
    assert metrics.bytes_down == 6 * model_bytes(
        parameters_of(NextWordModel(tiny_model_config))
    )


@pytest.mark.parametrize(
    ("kind", "faulty", "reason"),
    [
        ("nan", {0, 1}, "non-finite values in tensor 0"),
        ("dtype", {0, 1}, "dtype float64"),
        ("scale", {3}, "norm "),  # the update times 1000
    ],
)
def test_run_round_rejects_faulty_updates_and_aggregates_the_rest(
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
    kind: str,
    faulty: set[int],
    reason: str,
) -> None:
    # Prepare: six phones, those at the `faulty` positions sending `kind` updates;
    # all six selected and reporting.
    config = federation(
        clients_per_round=6,
        over_selection=0.0,
        fleet=FleetConfig(eligibility=False, dropout_rate=0.0, fault_kind=kind),
    )
    users = list(small_splits.training_users.values())[:6]
    phones = [
        Phone(
            u.user,
            train=u.train,
            future=u.future,
            profile=replace(draw_profile(0, u.user, config.fleet), faulty=i in faulty),
            seed=0,
        )
        for i, u in enumerate(users)
    ]
    fleet = Fleet(phones, config=config.fleet)

    # Execute
    env = environment(fleet, config, tokenizer, tiny_model_config)
    new_state, metrics = run_round(start(config, tiny_model_config), env, config)

    # Assert
    assert not metrics.abandoned
    assert (metrics.reported, metrics.rejected) == (6, len(faulty))
    assert {r["client_id"] for r in metrics.rejections} == {
        users[i].user for i in faulty
    }
    assert all(r["reason"].startswith(reason) for r in metrics.rejections)
    assert all(torch.isfinite(p).all() for p in new_state.parameters)


def test_run_round_trains_only_eligible_phones(
    small_splits: CorpusSplits, tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare: the daily pattern on, at 23:00 UTC, with a lenient minimum.
    config = federation(
        clients_per_round=3,
        min_report_fraction=0.3,
        fleet=FleetConfig(dropout_rate=0.0, unmetered_prob=1.0, idle_prob=1.0),
    )
    fleet = Fleet.from_splits(small_splits, config.fleet, seed=0)
    state = replace(start(config, tiny_model_config), clock=23 * 3600.0)
    eligible = set(fleet.eligible(state.clock, 1))
    events: list[Event] = []

    # Execute
    env = environment(fleet, config, tokenizer, tiny_model_config)
    _, metrics = run_round(state, env, config, on_event=events.append)

    # Assert
    trained = {e.client_id for e in events if isinstance(e, ClientDone)}
    started = [e for e in events if isinstance(e, RoundStarted)]
    assert 0 < len(eligible) < len(fleet)
    assert trained and trained <= eligible
    assert started[0].eligible == len(eligible) == metrics.eligible


def test_plan_round_first_reports_before_deadline_are_used() -> None:
    # Prepare
    arrivals = [
        Arrival("a", 5.0, False),
        Arrival("b", 1.0, True),
        Arrival("c", 30.0, False),
        Arrival("d", 200.0, False),
        Arrival("e", 40.0, False),
    ]

    # Execute
    plan = plan_round(arrivals, goal=2, deadline=120.0)

    # Assert: "e" came after the goal was met, "d" after the deadline.
    assert plan.on_time == ["a", "c"]
    assert plan.dropped == ["b"]
    assert plan.late == ["e", "d"]
    assert plan.closes_after == 30.0


def test_plan_round_short_of_goal_waits_for_deadline() -> None:
    # Prepare
    arrivals = [Arrival("a", 5.0, False), Arrival("b", 1.0, True)]

    # Execute
    plan = plan_round(arrivals, goal=2, deadline=120.0)

    # Assert: "b" never reports, so the server waits until the deadline.
    assert plan.on_time == ["a"] and plan.closes_after == 120.0


def test_plan_round_with_nobody_selected_closes_at_once() -> None:
    # Prepare: DP's Poisson draw may select no phone; the goal is then 0.

    # Execute
    plan = plan_round([], goal=0, deadline=120.0)

    # Assert
    assert plan.on_time == [] and plan.late == [] and plan.closes_after == 0.0


def test_select_clients_pinned_first_then_seeded_draw() -> None:
    # Prepare
    eligible = [f"p{i}" for i in range(10)]

    # Execute
    first = select_clients(eligible, count=4, seed=1, server_round=3, pinned=["p7"])
    again = select_clients(eligible, count=4, seed=1, server_round=3, pinned=["p7"])
    other = select_clients(eligible, count=4, seed=1, server_round=4, pinned=["p7"])
    few = select_clients(eligible[:2], count=4, seed=1, server_round=3)

    # Assert
    assert first[0] == "p7" and len(set(first)) == 4 and set(first) <= set(eligible)
    assert first == again and first != other
    assert sorted(few) == ["p0", "p1"]
    assert math.isclose(FederationConfig(clients_per_round=4).selection_size, 6)
