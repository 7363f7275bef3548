"""Small helpers that several test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import dp_accounting
import pytest
import torch
from dp_accounting import rdp
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.main import main
from coordinator.config import FederationConfig
from coordinator.run.simulation import Simulation
from device_sim.config import FleetConfig, LocalTrainingConfig
from device_sim.executor import ClientSummary, TrainedRound
from device_sim.phone import ClientMetrics, ClientReport, Phone
from device_sim.profile import draw_profile
from device_sim.ranks import SingleRank
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


def run_cli(
    argv: list[str], capsys: pytest.CaptureFixture[str], *, stdout: bool = False
) -> tuple[int, str]:
    """Exit status and stderr of `fedtype ARGV` (with `stdout`: stdout, then
    stderr), argparse's own exits included; any other exception fails the test."""
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors and --help
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    return status, (captured.out if stdout else "") + captured.err


def tiny_run_options(*, eval_every: int, max_users: int | None = 12) -> list[str]:
    """`fedtype simulate` options of a run that takes seconds: three phones a
    round, every one eligible, an 8/8 model, one thread."""
    options = ["--clients-per-round", "3", "--hidden-dim", "8", "--embed-dim", "8",
               "--eval-every", str(eval_every), "--always-eligible",
               "--threads", "1"]  # fmt: skip
    if max_users is not None:
        options += ["--max-users", str(max_users)]
    return options


def central_argv(
    out: Path, corpus_file: str, *, workers: int, max_steps: int, eval_every: int
) -> list[str]:
    """`fedtype central` on `corpus_file` into `out`: one thread a worker, a 16/32
    model, batches of 16."""
    argv = ["central", "--out", str(out), "--workers", str(workers), "--threads", "1"]
    argv += ["--corpus", corpus_file, "--max-steps", str(max_steps)]
    argv += ["--eval-every", str(eval_every)]
    return argv + ["--embed-dim", "16", "--hidden-dim", "32", "--batch-size", "16"]


def corpus_bytes_examples(
    data: st.SearchStrategy[bytes], *, examples: int
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A test run on `examples` seeded draws of `data` (its `data` argument).

    Derandomised, so every run tries the same files; no deadline, since a draw
    writes a file.
    """

    def decorate(test: Callable[..., None]) -> Callable[..., None]:
        drawn = given(data=data)(test)
        return settings(max_examples=examples, deadline=None, derandomize=True)(drawn)

    return decorate


def bytes_corpus(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> Path:
    """`data` as corpus.jsonl in a fresh folder (for one hypothesis example)."""
    path = tmp_path_factory.mktemp("bytes") / "corpus.jsonl"
    path.write_bytes(data)
    return path


def make_phone(
    train: Sequence[str], future: Sequence[str] = (), *, client_id: str = "p"
) -> Phone:
    """A phone holding `train` and `future`, its profile drawn under seed 0."""
    profile = draw_profile(0, client_id, FleetConfig())
    return Phone(client_id, train=train, future=future, profile=profile, seed=0)


# Placeholder training metrics for hand-made reports.
METRICS = ClientMetrics(1.0, 1.0, 1.0, 1, 1)


def two_phone_round() -> TrainedRound:
    """FedAvg's textbook pair from a zero model: [1, 2, 3] with 1 example, [3, 4, 5]
    with 3."""
    reports = {
        "a": ClientReport("a", [torch.tensor([1.0, 2.0, 3.0])], 1, METRICS),
        "b": ClientReport("b", [torch.tensor([3.0, 4.0, 5.0])], 3, METRICS),
    }
    summaries = [
        ClientSummary(c, r.num_examples, 1.0, True, None, METRICS)
        for c, r in reports.items()
    ]
    return TrainedRound(summaries, [torch.zeros(3)], SingleRank(), reports)


def record_sums(trained: TrainedRound, crossed: list[Any] | None = None) -> list[Any]:
    """Make `trained.reduce_vectors` append each sum it returns to `crossed` (a new
    list when None); returns that list."""
    crossed = [] if crossed is None else crossed
    reduce = trained.reduce_vectors

    def recorded(*args: Any, **kwargs: Any) -> Any:
        total = reduce(*args, **kwargs)
        crossed.append(total)
        return total

    trained.reduce_vectors = recorded  # type: ignore[method-assign]
    return crossed


def dp_epsilon(q: float, z: float, *, rounds: int, delta: float) -> float:
    """epsilon of `rounds` Poisson-subsampled Gaussians, straight from dp_accounting
    (independent of coordinator.privacy.accountant)."""
    accountant = rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(accountant.get_epsilon(delta))


def f32(*values: float) -> torch.Tensor:
    """A float32 tensor of `values`."""
    return torch.tensor(values, dtype=torch.float32)


def seeded_parameters(model_config: ModelConfig) -> Parameters:
    """A fresh model's parameters under torch seed 0 (the RNG then moves on)."""
    torch.manual_seed(0)
    return parameters_of(NextWordModel(model_config))


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    """`script` in a fresh interpreter at the repository root, its output kept."""
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
