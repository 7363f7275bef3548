"""Small helpers that several test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import torch

from coordinator.config import FederationConfig
from coordinator.simulation import Simulation
from device_sim.config import FleetConfig, LocalTrainingConfig
from device_sim.phone import Phone
from device_sim.profile import draw_profile
from models.config import ModelConfig
from models.model import NextWordModel
from models.weights import Parameters, parameters_of


class NewSimulation(Protocol):
    """The `new_simulation` fixture: `new_simulation(path, federation, **kwargs)`."""

    def __call__(
        self, path: Path, federation: FederationConfig, **kwargs: Any
    ) -> Simulation: ...


# No daily pattern and no dropouts: every phone can answer every round.
EVERY_PHONE_ONLINE = FleetConfig(eligibility=False, dropout_rate=0.0)


def small_federation(**changes: Any) -> FederationConfig:
    """Three phones a round, every phone always eligible, a tiny evaluation.

    `changes` replace fields of that config.
    """
    base = FederationConfig(
        clients_per_round=3,
        eval_every=1,
        heldout_messages=20,
        future_messages=20,
        keystroke_texts=4,
        fleet=EVERY_PHONE_ONLINE,
    )
    return replace(base, **changes)


# A run of four rounds of three phones, evaluated and checkpointed every second.
SMALL_RUN = FederationConfig(
    rounds=4,
    clients_per_round=3,
    eval_every=2,
    heldout_messages=30,
    future_messages=30,
    future_messages_per_phone=3,
    keystroke_texts=6,
    checkpoint_every=2,
    keep_last=2,
    local=LocalTrainingConfig(max_local_steps=2),
    fleet=FleetConfig(dropout_rate=0.2),
)


def make_phone(
    train: Sequence[str], future: Sequence[str] = (), *, client_id: str = "p"
) -> Phone:
    """A phone holding `train` and `future`, its profile drawn under seed 0."""
    profile = draw_profile(0, client_id, FleetConfig())
    return Phone(client_id, train=train, future=future, profile=profile, seed=0)


def f32(*values: float) -> torch.Tensor:
    """A float32 tensor of `values`."""
    return torch.tensor(values, dtype=torch.float32)


def seeded_parameters(model_config: ModelConfig) -> Parameters:
    """A fresh model's parameters under torch seed 0 (the RNG then moves on)."""
    torch.manual_seed(0)
    return parameters_of(NextWordModel(model_config))
