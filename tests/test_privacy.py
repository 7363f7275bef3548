"""The privacy invariant: only parameters, example counts and metrics leave a phone.

A canary word is planted in every phone's history; whatever crosses from the phones
to the coordinator, every event and every file of the run is searched for it.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import NewSimulation, record_sums, small_federation

from coordinator.events import ClientDone
from coordinator.privacy.dp import DPConfig
from coordinator.privacy.privacy_config import PrivacyConfig
from coordinator.privacy.released import logged_line
from corpora.corpus import CorpusSplits, UserHistory
from corpora.tokenizer import WordTokenizer
from device_sim.config import FleetConfig, LocalTrainingConfig
from device_sim.executor import ClientSummary, FleetExecutor, TrainedRound
from device_sim.phone import ClientMetrics, ClientReport, Phone
from device_sim.profile import draw_profile
from models.config import ModelConfig
from models.metrics import EvalCounts
from models.model import NextWordModel
from models.rundir import RunDir

CANARY = "zqxcanary"
COORDINATOR = Path(__file__).resolve().parents[1] / "coordinator"


def record_crossings(
    executor: FleetExecutor, monkeypatch: pytest.MonkeyPatch
) -> list[object]:
    """Everything `executor` (the run's own, its settings kept) hands the
    coordinator from now on: summaries, the round's sums, evaluation counts."""
    crossed: list[object] = []
    train, evaluate = executor.train, executor.evaluate

    def recorded_train(*args: Any, **kwargs: Any) -> TrainedRound:
        trained = train(*args, **kwargs)
        crossed.extend(trained.summaries)
        record_sums(trained, crossed)
        return trained

    def recorded_evaluate(*args: Any, **kwargs: Any) -> list[tuple[str, EvalCounts]]:
        results = evaluate(*args, **kwargs)
        crossed.extend(results)
        return results

    monkeypatch.setattr(executor, "train", recorded_train)
    monkeypatch.setattr(executor, "evaluate", recorded_evaluate)
    return crossed


def with_canary(splits: CorpusSplits) -> CorpusSplits:
    """The splits with a secret message in each training user's train and future."""
    secret = f"my pin is {CANARY} 4711"
    users = {
        name: UserHistory(name, (*u.train, secret), (secret, *u.future))
        for name, u in splits.training_users.items()
    }
    return dataclasses.replace(splits, training_users=users)


def test_privacy_client_report_holds_only_update_count_and_metrics(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare
    phone = Phone(
        "p",
        train=["hello there", f"{CANARY} is my secret"],
        future=[],
        profile=draw_profile(0, "p", FleetConfig()),
        seed=0,
    )
    model = NextWordModel(tiny_model_config)
    global_parameters = [p.detach().clone() for p in model.parameters()]

    # Execute
    report = phone.train(
        model,
        global_parameters,
        tokenizer=tokenizer,
        config=LocalTrainingConfig(),
        server_round=1,
    )

    # Assert
    fields = [f.name for f in dataclasses.fields(ClientReport)]
    assert fields == ["client_id", "update", "num_examples", "metrics", "bytes_up"]
    assert report.bytes_up is None  # a count of bytes, set only when compressed
    assert isinstance(report.num_examples, int) and report.num_examples == 2
    kinds = [
        type(getattr(report.metrics, f.name)) for f in dataclasses.fields(ClientMetrics)
    ]
    assert kinds == [float, float, float, int, int]
    assert [t.shape for t in report.update] == [p.shape for p in global_parameters]
    assert all(t.dtype == torch.float32 for t in report.update)
    assert CANARY.encode() not in pickle.dumps(report)


@pytest.mark.parametrize("secure", [False, True])
def test_privacy_canary_never_reaches_coordinator_events_or_disk(
    secure: bool,
    tmp_path: Path,
    small_splits: CorpusSplits,
    new_simulation: NewSimulation,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: two rounds with evaluation on every phone's future text.
    federation = small_federation(
        heldout_messages=10,
        keystroke_texts=5,
        local=LocalTrainingConfig(max_local_steps=1),
        privacy=PrivacyConfig(secure_aggregation=secure),
    )
    events: list[object] = []
    simulation = new_simulation(
        tmp_path / "run",
        federation,
        splits=with_canary(small_splits),
        on_event=events.append,
    )
    crossed = record_crossings(simulation.executor, monkeypatch)

    # Execute
    simulation.run_round()
    simulation.run_round()

    # Assert: per-phone summaries, the round's sums and evaluation counts crossed,
    # and nothing else.
    kinds = {type(x).__name__ for x in crossed}
    assert kinds == {"ClientSummary", "ndarray", "tuple"}
    for item in crossed:
        if isinstance(item, tuple):
            assert isinstance(item[0], str) and isinstance(item[1], EvalCounts)
    assert CANARY.encode() not in pickle.dumps(crossed)
    summaries = [x for x in crossed if isinstance(x, ClientSummary)]
    sums = [x for x in crossed if isinstance(x, np.ndarray)]
    done = [e for e in events if isinstance(e, ClientDone)]
    lines = RunDir(tmp_path / "run").read_metrics()
    if secure:
        # Under SecAgg no single update's norm or direction (sketch) crosses,
        # nor its phone's losses or work, in a summary or an event; the sums
        # are the masked integers modulo 2^b, never float updates. The line's
        # count and losses are the masked sum's; tokens are the simulation's.
        assert all(math.isnan(s.norm) and s.sketch is None for s in summaries)
        assert all(s.metrics is None for s in summaries)
        assert all(e.num_examples is None and e.train_loss is None for e in done)
        assert all(x.dtype == np.int64 for x in sums)
        for line in lines:
            truth = line["simulation_truth"]
            assert "tokens" not in line and truth["tokens"] > 0
            assert line["num_examples"] == truth["num_examples"]
            assert line["train_loss"] == pytest.approx(truth["train_loss"], abs=1e-4)
    else:
        assert all(s.norm > 0 and s.sketch is not None for s in summaries)
        assert all(s.metrics is not None for s in summaries)
        assert all(e.num_examples and e.train_loss for e in done)
        assert all("simulation_truth" not in line for line in lines)
    assert CANARY not in repr(events)
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def test_privacy_phone_exposes_no_text_in_public_attributes() -> None:
    # Prepare
    phone = Phone(
        "p",
        train=[f"{CANARY} one"],
        future=[f"{CANARY} two"],
        profile=draw_profile(0, "p", FleetConfig()),
        seed=0,
    )

    # Execute
    public = {
        name: getattr(phone, name)
        for name in dir(phone)
        if not name.startswith("_") and not callable(getattr(phone, name))
    }

    # Assert
    assert set(public) == {"client_id", "profile"}
    assert CANARY not in repr(public)


def test_privacy_coordinator_code_never_touches_a_phone_history() -> None:
    # Prepare: the phone's private names and its device-side data method.
    private = {"_train", "_future", "_seed", "local_data", "evaluate_counts"}

    # Execute
    touched = {
        (path.name, node.attr)
        for path in COORDINATOR.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in private
    }

    # Assert
    assert touched == set()


# What the server never learns under DP: the phones' own figures, the screen's
# per-phone verdicts and the phones' evaluation on their own future text.
UNRELEASED_UNDER_DP = {
    "num_examples",
    "train_loss",
    "loss_before",
    "loss_after",
    "tokens",
    "tokens_total",
    "rejected",
    "rejections",
    "future",
}


@pytest.mark.parametrize("secure", [False, True])
def test_privacy_dp_line_holds_only_released_figures(
    secure: bool, tmp_path: Path, new_simulation: NewSimulation
) -> None:
    # Prepare: DP-FedAvg (with or without SecAgg), q = 10 / 30, evaluated.
    dp = DPConfig(clip_norm=0.5, noise_multiplier=1.0, expected_clients=10)
    federation = small_federation(
        clients_per_round=10,
        seed=2,
        local=LocalTrainingConfig(max_local_steps=1),
        privacy=PrivacyConfig(secure_aggregation=secure, dp=dp, attack_phones=0),
    )
    events: list[object] = []
    simulation = new_simulation(tmp_path / "run", federation, on_event=events.append)

    # Execute
    record = simulation.run_round()
    simulation.close()

    # Assert: the line (on disk and in the event) holds the accounted epsilon
    # and the held-out evaluation; the rest is filed as the simulation's truth.
    (line,) = RunDir(tmp_path / "run").read_metrics()
    assert not line["abandoned"] and line["epsilon"] > 0 and "heldout" in line
    assert not UNRELEASED_UNDER_DP & set(line)
    assert UNRELEASED_UNDER_DP <= set(line["simulation_truth"])
    assert line["simulation_truth"]["tokens"] > 0
    assert record == line


def test_privacy_attack_words_stay_out_of_the_run_log(
    tmp_path: Path, new_simulation: NewSimulation
) -> None:
    # Prepare: an unprotected round with the curious server attacking 3 phones.
    federation = small_federation(
        eval_every=0,
        local=LocalTrainingConfig(max_local_steps=1),
        privacy=PrivacyConfig(attack_phones=3),
    )
    simulation = new_simulation(tmp_path / "run", federation)

    # Execute
    record = simulation.run_round()
    simulation.close()

    # Assert: the round's line in memory (the live TUI's) has the recovered
    # words; metrics.jsonl keeps the scores and not one of the words.
    attack = record["attack"]
    words = {w for ws in attack["update"]["words"].values() for w in ws}
    words |= set(attack["sum"]["words"])
    assert words
    text = (tmp_path / "run" / "metrics.jsonl").read_text()
    (line,) = RunDir(tmp_path / "run").read_metrics()
    assert '"words"' not in text
    assert not words & set(string_values(line))
    assert line["attack"]["update"]["precision"] == attack["update"]["precision"]
    assert line["attack"]["sum"]["recall"] == attack["sum"]["recall"]


def test_logged_line_keeps_the_words_only_when_asked() -> None:
    # Prepare
    record = {
        "server_round": 1,
        "attack": {
            "update": {"precision": 0.5, "recall": 0.25, "words": {"p": ["hi"]}},
            "sum": {"precision": 1.0, "recall": 0.5, "words": ["hi", "there"]},
        },
    }

    # Execute
    dropped = logged_line(record, PrivacyConfig())
    kept = logged_line(record, PrivacyConfig(log_attack_words=True))

    # Assert
    assert dropped["attack"] == {
        "update": {"precision": 0.5, "recall": 0.25},
        "sum": {"precision": 1.0, "recall": 0.5},
    }
    assert kept == record
    assert record["attack"]["sum"]["words"] == ["hi", "there"]  # not changed


def string_values(value: object) -> list[str]:
    """Every string value in a JSON value (not the keys)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in string_values(v)]
    if isinstance(value, list):
        return [s for v in value for s in string_values(v)]
    return []
