"""The fleet: phones from corpus users, shards, the daily pattern, flat memory."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from coordinator.config import FederationConfig
from coordinator.round.rounds import RoundEnvironment, ServerState, run_round
from coordinator.round.strategies import initial_state
from corpora.corpus import CorpusSplits, UserHistory
from corpora.tokenizer import WordTokenizer
from device_sim.config import FleetConfig, LocalTrainingConfig
from device_sim.executor import FleetExecutor
from device_sim.fleet import Fleet, shards
from device_sim.profile import draw_profile, hashed_uniform
from models.config import ModelConfig
from models.model import NextWordModel
from models.weights import parameters_of


def test_fleet_from_splits_one_phone_per_training_user(
    small_splits: CorpusSplits,
) -> None:
    # Prepare / Execute
    fleet = Fleet.from_splits(small_splits, FleetConfig(), seed=0)
    limited = Fleet.from_splits(small_splits, FleetConfig(max_users=5), seed=0)

    # Assert: the slice has 30 training users.
    assert len(fleet) == 30
    assert fleet.client_ids == list(small_splits.training_users)
    assert limited.client_ids == fleet.client_ids[:5]


def test_shards_cut_train_and_deal_out_future() -> None:
    # Prepare
    user = UserHistory("u", train=("a", "b", "c", "d", "e"), future=("x", "y", "z"))

    # Execute
    cut = shards(user, 2)
    whole = shards(user, None)

    # Assert
    assert cut == [
        ("u#0", ("a", "b"), ("x",)),
        ("u#1", ("c", "d"), ("y",)),
        ("u#2", ("e",), ("z",)),
    ]
    assert whole == [("u", user.train, user.future)]


def test_fleet_eligible_share_follows_the_clock(small_splits: CorpusSplits) -> None:
    # Prepare: a few hundred phones from shards of the slice.
    fleet = Fleet.from_splits(small_splits, FleetConfig(messages_per_phone=2), seed=0)

    # Execute: the share at each hour of one day.
    shares = [fleet.eligible_share(hour * 3600.0, hour) for hour in range(24)]

    # Assert: keyboards train at night, so the share swings through the day.
    assert len(fleet) > 500
    assert min(shares) < 0.5 * max(shares)
    assert 0.0 < max(shares) < 0.6


def test_fleet_without_eligibility_has_everyone_eligible(
    small_splits: CorpusSplits,
) -> None:
    # Prepare
    fleet = Fleet.from_splits(small_splits, FleetConfig(eligibility=False), seed=0)

    # Execute / Assert
    assert fleet.eligible(12 * 3600.0, 7) == fleet.client_ids


def test_fleet_put_always_eligible_phone(small_splits: CorpusSplits) -> None:
    # Prepare: nobody is ever on Wi-Fi, but the demo's phone is on the desk.
    config = FleetConfig(unmetered_prob=0.0)
    fleet = Fleet.from_splits(small_splits, config, seed=0)
    user = next(iter(small_splits.training_users.values()))
    first = fleet.phone(user.user)

    # Execute
    fleet.put(first.with_texts(["new"]), always_eligible=True)

    # Assert
    assert fleet.eligible(3 * 3600.0, 1) == [user.user]
    assert len(fleet) == 30


def test_draw_profile_depends_only_on_seed_and_client() -> None:
    # Prepare / Execute
    a = draw_profile(0, "alice", FleetConfig())
    b = draw_profile(0, "alice", FleetConfig())
    c = draw_profile(1, "alice", FleetConfig())

    # Assert
    assert a == b and a != c
    assert -14 <= a.timezone_hours <= 14 and a.speed_factor > 0


def test_hashed_uniform_is_deterministic_and_spread() -> None:
    # Prepare
    keys = np.arange(10_000, dtype=np.uint64) * np.uint64(7919)

    # Execute
    first = hashed_uniform(keys, 3)
    again = hashed_uniform(keys, 3)
    other = hashed_uniform(keys, 4)

    # Assert
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert first.min() >= 0.0 and first.max() < 1.0
    assert abs(first.mean() - 0.5) < 0.02


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_fleet_memory_stays_flat_over_rounds(
    small_splits: CorpusSplits, tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare: 60 small rounds on a sharded fleet, one reused model instance. In
    # fp32: bf16's oneDNN kernels keep a cache of primitives per matrix shape that
    # fills over the first hundreds of steps; benchmarks/fleet.py measures it.
    config = FederationConfig(
        clients_per_round=3,
        local=LocalTrainingConfig(max_local_steps=1, precision="fp32"),
        fleet=FleetConfig(messages_per_phone=4, dropout_rate=0.1, eligibility=False),
    )
    fleet = Fleet.from_splits(small_splits, config.fleet, seed=0)
    executor = FleetExecutor(
        model_config=tiny_model_config, tokenizer=tokenizer, local=config.local
    )
    env = RoundEnvironment(fleet, executor, tokenizer, tiny_model_config.max_len)
    torch.manual_seed(0)
    parameters = parameters_of(NextWordModel(tiny_model_config))
    state = ServerState(0, parameters, initial_state(config.strategy, parameters), 0.0)

    # Execute
    for _ in range(15):
        state, _ = run_round(state, env, config)
    after_warmup = _rss_bytes()
    for _ in range(45):
        state, metrics = run_round(state, env, config)
    after = _rss_bytes()

    # Assert
    assert state.server_round == 60 and not metrics.abandoned
    assert after < 1.05 * after_warmup, (after_warmup, after)
    assert replace(metrics, wall_seconds=0).reported == 3
