"""Personalisation: gains, the gate, the validation slice, the command end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from cli.main import main
from coordinator.personalization import gain_summary, relative_gain
from coordinator.simulation import Simulation
from corpora.corpus import CorpusConfig, CorpusSplits
from corpora.tokenizer import WordTokenizer
from device_sim.config import FleetConfig
from device_sim.personalize import (
    PersonalizationConfig,
    PhoneOutcome,
    personalize_phone,
    split_train,
)
from device_sim.phone import Phone
from device_sim.profile import draw_profile
from models.config import ModelConfig
from models.metrics import EvalCounts
from models.model import NextWordModel
from models.weights import parameters_of
from tests.test_simulation import SMALL

TRAIN = tuple(f"message number {i} says hello there how are you" for i in range(10))
FUTURE = ("how are you today", "hello there friend", "what are you doing")
GRID = PersonalizationConfig(
    client_lrs=(0.1, 1.0), steps=(1, 2), batch_size=4, precision="fp32"
)


def counts(top1: int, top3: int, targets: int = 10) -> EvalCounts:
    return EvalCounts(top1, top3, targets, 1.0, targets, 0, 0, 1)


def test_relative_gain_hand_computed() -> None:
    # Prepare / Execute / Assert
    assert relative_gain(0.25, 0.20) == pytest.approx(0.25)
    assert relative_gain(3, 4) == pytest.approx(-0.25)
    assert math.isnan(relative_gain(1, 0))


def test_gain_summary_mean_median_and_share_hurt() -> None:
    # Prepare: top-1 gains +100 %, 0 %, -50 %; top-3 gains +50 %, 0 %, -25 %
    pairs = [
        (counts(4, 6), counts(2, 4)),
        (counts(3, 5), counts(3, 5)),
        (counts(2, 3), counts(4, 4)),
    ]

    # Execute
    summary = gain_summary(pairs)

    # Assert
    assert summary.mean_top1 == pytest.approx((1.0 + 0.0 - 0.5) / 3)
    assert summary.median_top1 == pytest.approx(0.0)
    assert summary.mean_top3 == pytest.approx((0.5 + 0.0 - 0.25) / 3)
    assert summary.hurt_share == pytest.approx(1 / 3)
    assert summary.helped_share == pytest.approx(1 / 3)
    assert summary.phones == 3


def test_gate_keeps_the_global_model_where_personal_lost_on_validation() -> None:
    # Prepare
    global_future, personal_future = counts(5, 7), counts(2, 3)
    outcome = PhoneOutcome(
        client_id="p",
        client_lr=1.0,
        steps=2,
        kept=False,
        validation_global=counts(3, 4),
        validation_personal=counts(1, 2),
        future_global=global_future,
        future_personal=personal_future,
    )

    # Execute / Assert
    assert outcome.future_gated == global_future
    assert outcome.validation_gated == counts(3, 4)


def test_validation_slice_is_the_newest_train_messages() -> None:
    # Prepare
    texts = [f"m{i}" for i in range(10)]

    # Execute
    fit, validation = split_train(texts, 0.2)

    # Assert
    assert fit == texts[:8]
    assert validation == ["m8", "m9"]


def make_phone(future: tuple[str, ...]) -> Phone:
    profile = draw_profile(0, "p", FleetConfig())
    return Phone("p", train=TRAIN, future=future, profile=profile, seed=0)


def test_future_text_takes_no_part_in_the_choice(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare
    torch.manual_seed(0)
    model = NextWordModel(tiny_model_config)
    start = parameters_of(model)
    other_future = ("completely different words here", "zebra quantum", "x y z")

    # Execute
    chosen = [
        personalize_phone(
            make_phone(future),
            start,
            model=NextWordModel(tiny_model_config),
            tokenizer=tokenizer,
            config=GRID,
            seed=0,
            max_messages=3,
            keystroke_texts=0,
        )
        for future in (FUTURE, other_future)
    ]

    # Assert
    first, second = chosen
    assert first is not None and second is not None
    assert (first.client_lr, first.steps, first.kept) == (
        second.client_lr,
        second.steps,
        second.kept,
    )
    assert first.validation_personal == second.validation_personal
    assert first.future_global != second.future_global


@pytest.fixture
def tiny_run(
    tmp_path: Path,
    small_splits: CorpusSplits,
    small_config: CorpusConfig,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
) -> Path:
    path = tmp_path / "run"
    simulation = Simulation.create(
        path,
        federation=SMALL,
        corpus=small_config,
        model=tiny_model_config,
        tokenizer=tokenizer,
        splits=small_splits,
    )
    for _ in range(2):
        simulation.run_round()
    return path


def test_cli_personalize_writes_report_and_plot(tiny_run: Path) -> None:
    # Execute
    status = main(["personalize", "--run", str(tiny_run), "--steps", "2"])

    # Assert
    assert status == 0
    report = json.loads((tiny_run / "personalization.json").read_text())
    assert report["phones"] > 0
    assert set(report["gain"]) == {"personal", "gated"}
    assert report["settings"]["steps"] == [2]
    assert (tiny_run / "personalization.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "extra", [["--steps", "0"], ["--client-lr", "-1"], ["--client-lr", "nan"]]
)
def test_cli_personalize_bad_option_exits_2(
    tiny_run: Path, extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    status = main(["personalize", "--run", str(tiny_run), *extra])

    # Assert
    assert status == 2
    assert "error" in capsys.readouterr().err


def test_cli_personalize_missing_or_non_federated_run_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    central = tmp_path / "central"
    central.mkdir()
    (central / "config.json").write_text(json.dumps({"kind": "central"}))

    # Execute
    missing = main(["personalize", "--run", str(tmp_path / "nope")])
    wrong = main(["personalize", "--run", str(central)])

    # Assert
    assert (missing, wrong) == (2, 2)
    assert "federated" in capsys.readouterr().err
