"""A whole federated run: the run directory, determinism, resume, the demo's phone."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import SMALL_RUN, NewSimulation

from cli.main import main
from coordinator.config import FederationConfig, FederationConfigError
from coordinator.events import ClientDone, Event, RoundFinished, RoundStarted
from coordinator.privacy.released import logged_line
from coordinator.round.server_choices import StrategyConfig
from coordinator.run.simulation import Simulation
from corpora.corpus import CorpusConfig, CorpusSplits
from device_sim.config import FleetConfig
from models.config import ModelConfig
from models.rundir import RunDir, RunDirError

# Fields that measure the machine, not the run.
WALL_FIELDS = ("wall_seconds", "wall_seconds_total", "eval_seconds")


def machine_free(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in WALL_FIELDS} for r in records]


def test_simulation_run_dir_follows_the_contract(
    tmp_path: Path, new_simulation: NewSimulation
) -> None:
    # Prepare
    simulation = new_simulation(tmp_path / "run", SMALL_RUN)

    # Execute
    records = [simulation.run_round() for _ in range(2)]

    # Assert
    run = RunDir(tmp_path / "run")
    config = run.read_config()
    assert config["kind"] == "federated"
    assert config["model"]["hidden_dim"] == 32
    assert config["federation"]["strategy"]["server_lr"] == 1.0  # resolved for FedAvgM
    assert config["federation"]["local"]["max_local_steps"] == 2
    # The log is the returned lines less the attack's words (kept in memory).
    logged = [logged_line(r, SMALL_RUN.privacy) for r in records]
    assert run.read_metrics() == logged == simulation.history()
    assert all("words" in r["attack"]["sum"] for r in records)
    required = {
        "server_round", "selected", "reported", "dropped", "rejected", "rejections",
        "abandoned", "abandon_reason", "num_examples", "train_loss", "tokens",
        "tokens_total", "bytes_down", "bytes_up", "bytes_total", "wall_seconds",
        "wall_seconds_total", "simulated_seconds",
    }  # fmt: skip
    assert required <= set(records[0]) and "heldout" not in records[0]
    assert set(records[1]["heldout"]) == {
        "top1", "top3", "perplexity", "keystroke_savings", "num_targets",
        "num_messages",
    }  # fmt: skip
    assert records[1]["heldout"]["num_messages"] == 30
    assert records[1]["future"]["num_messages"] >= 30
    assert records[1]["tokens_total"] == records[0]["tokens"] + records[1]["tokens"]
    model, step = run.load_model()
    assert step == 2 and simulation.server_round == 2
    for a, b in zip(
        model.parameters(), simulation.global_model.parameters(), strict=True
    ):
        assert torch.equal(a, b)


def test_simulation_create_defaults_the_model_to_the_tokenizers_vocabulary(
    tmp_path: Path, small_splits: CorpusSplits, small_config: CorpusConfig
) -> None:
    # Prepare: no model given, and no tokenizer (the public one)
    federation = replace(SMALL_RUN, rounds=1)

    # Execute
    Simulation.create(
        tmp_path / "run",
        federation=federation,
        corpus=small_config,
        splits=small_splits,
    ).close()

    # Assert: the default model over the public vocabulary
    config = RunDir(tmp_path / "run").read_config()
    assert config["model"] == asdict(ModelConfig(vocab_size=10_036))


def test_simulation_resume_after_a_kill_replays_identically(
    tmp_path: Path, new_simulation: NewSimulation, small_splits: CorpusSplits
) -> None:
    # Prepare: an uninterrupted run of 4 rounds, and one "killed" during round 3
    # after its model and metrics line were written but before state.json was.
    whole = new_simulation(tmp_path / "whole", SMALL_RUN)
    for _ in range(4):
        whole.run_round()
    killed = new_simulation(tmp_path / "killed", SMALL_RUN)
    killed.run_round()
    killed.run_round()
    state_after_2 = (tmp_path / "killed" / "state.json").read_text()
    killed.run_round()
    (tmp_path / "killed" / "state.json").write_text(state_after_2)
    del killed

    # Execute
    resumed = Simulation.resume(tmp_path / "killed", splits=small_splits)
    start = resumed.server_round
    resumed.run_round()
    resumed.run_round()

    # Assert: the same metrics, round for round, and the same final model.
    assert start == 2
    assert machine_free(resumed.history()) == machine_free(whole.history())
    assert [r["server_round"] for r in resumed.history()] == [1, 2, 3, 4]
    for a, b in zip(
        resumed.global_model.parameters(), whole.global_model.parameters(), strict=True
    ):
        assert torch.equal(a, b)
    assert resumed.history()[3]["wall_seconds_total"] > 0


def test_simulation_same_seed_same_run_other_seed_other_run(
    tmp_path: Path, new_simulation: NewSimulation
) -> None:
    # Prepare
    federation = replace(SMALL_RUN, eval_every=0, fleet=FleetConfig(eligibility=False))
    runs = [
        new_simulation(tmp_path / name, replace(federation, seed=seed))
        for name, seed in (("a", 0), ("b", 0), ("c", 1))
    ]

    # Execute
    for run in runs:
        run.run_round()
        run.run_round()

    # Assert
    a, b, c = (machine_free(run.history()) for run in runs)
    assert a == b and a != c


def test_simulation_events_describe_each_round(
    tmp_path: Path, new_simulation: NewSimulation
) -> None:
    # Prepare
    events: list[Event] = []
    federation = replace(
        SMALL_RUN, fleet=FleetConfig(eligibility=False, dropout_rate=0)
    )
    simulation = new_simulation(tmp_path / "run", federation, on_event=events.append)

    # Execute
    record = simulation.run_round()

    # Assert
    assert isinstance(events[0], RoundStarted) and events[0].training == 3
    done = [e for e in events if isinstance(e, ClientDone)]
    assert [e.done for e in done] == [1, 2, 3] and done[0].total == 3
    assert events[-1] == RoundFinished(1, record)


def test_simulation_model_at_kept_rounds_only(
    tmp_path: Path, new_simulation: NewSimulation
) -> None:
    # Prepare: keep the last 2 rounds and every 2nd.
    federation = replace(SMALL_RUN, eval_every=0, checkpoint_every=2, keep_last=2)
    simulation = new_simulation(tmp_path / "run", federation)

    # Execute
    for _ in range(5):
        simulation.run_round()

    # Assert
    assert RunDir(tmp_path / "run").checkpoint_steps() == [0, 2, 4, 5]
    assert simulation.model_at(1) is None and simulation.model_at(3) is None
    assert simulation.model_at(2) is not None and simulation.model_at(5) is not None
    servers = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("server*"))
    assert servers == ["server_000004.safetensors", "server_000005.safetensors"]


def test_simulation_added_phone_trains_and_survives_resume(
    tmp_path: Path, new_simulation: NewSimulation, small_splits: CorpusSplits
) -> None:
    # Prepare: no corpus phone is ever on Wi-Fi; the added phone always is.
    federation = replace(
        SMALL_RUN,
        eval_every=0,
        min_report_fraction=0.3,
        fleet=FleetConfig(unmetered_prob=0, dropout_rate=0),
    )
    events: list[Event] = []
    simulation = new_simulation(tmp_path / "run", federation, on_event=events.append)

    # Execute
    simulation.add_phone("me", ["see you at the station", "on my way"])
    simulation.add_phone("me", ["running late sorry"])
    record = simulation.run_round()
    resumed = Simulation.resume(tmp_path / "run", splits=small_splits)

    # Assert
    trained = [e.client_id for e in events if isinstance(e, ClientDone)]
    assert trained == ["me"] and record["num_examples"] == 3
    assert not record["abandoned"]
    assert "me" in resumed.fleet and resumed.fleet.eligible(0.0, 9) == ["me"]
    index = json.loads((tmp_path / "run" / "phones" / "index.json").read_text())
    assert index == {
        "phones": [{"client_id": "me", "file": "phone_000.json", "pinned": True}]
    }


def test_simulation_create_refuses_an_existing_run(
    tmp_path: Path, new_simulation: NewSimulation
) -> None:
    # Prepare
    new_simulation(tmp_path / "run", SMALL_RUN)

    # Execute / Assert
    with pytest.raises(RunDirError, match="already holds a run"):
        new_simulation(tmp_path / "run", SMALL_RUN)
    with pytest.raises(RunDirError, match="no such run directory"):
        Simulation.resume(tmp_path / "nothing")
    with pytest.raises(FederationConfigError, match="unknown strategy"):
        FederationConfig(strategy=StrategyConfig(name="fedmagic"))


def test_simulate_cli_runs_resumes_and_reports_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: a tiny model on 20 users, no evaluation until the last round.
    out = str(tmp_path / "run")
    common = ["--max-users", "20", "--hidden-dim", "16", "--embed-dim", "8"]
    first = ["simulate", "--out", out, "--rounds", "2", "--clients-per-round", "3",
             "--eval-every", "0", "--strategy", "fedadam", *common]  # fmt: skip

    # Execute
    created = main(first)
    resumed = main(["simulate", "--resume", out, "--rounds", "3"])
    again = main(first)
    bad = main(["simulate", "--out", str(tmp_path / "x"), "--local-epochs", "0"])

    # Assert
    err = capsys.readouterr().err
    records = RunDir(out).read_metrics()
    assert (created, resumed, again, bad) == (0, 0, 2, 2)
    assert [r["server_round"] for r in records] == [1, 2, 3]
    assert "already holds a run" in err and "local_epochs must be >= 1" in err
    assert RunDir(out).read_config()["federation"]["strategy"]["server_lr"] == 0.01
