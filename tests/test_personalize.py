"""Personalisation: gains, the gate, the validation slice, the command end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import SMALL_RUN, NewSimulation, make_phone, seeded_parameters

from cli.main import main
from coordinator.run import personalization
from coordinator.run.personal_gains import gain_summary, relative_gain
from corpora.tokenizer import WordTokenizer
from device_sim.personal_model import VARIANTS
from device_sim.personal_outcome import PhoneOutcome, personalize_phone
from device_sim.personalize import (
    PersonalizationConfig,
    split_train,
    trainable_only,
)
from models.batching import encode_messages
from models.config import ModelConfig, TrainingConfig
from models.metrics import EvalCounts
from models.model import NextWordModel
from models.seeding import numpy_rng
from models.training import train_local

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


def test_validation_slice_is_the_newest_train_messages() -> None:
    # Prepare
    texts = [f"m{i}" for i in range(10)]

    # Execute
    fit, validation = split_train(texts, 0.2)

    # Assert
    assert fit == texts[:8]
    assert validation == ["m8", "m9"]


def test_future_text_takes_no_part_in_the_choice(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare
    start = seeded_parameters(tiny_model_config)
    other_future = ("completely different words here", "zebra quantum", "x y z")

    # Execute
    chosen = [
        personalize_phone(
            make_phone(TRAIN, future),
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


def test_trainable_only_moves_only_the_named_layers(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare: two SGD steps on a few messages, only the head taking gradients.
    model = NextWordModel(tiny_model_config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sequences = encode_messages(tokenizer, list(TRAIN), 16)
    config = TrainingConfig(lr=1.0, epochs=1, batch_size=4, max_steps=2)

    # Execute
    with trainable_only(model, "head"):
        train_local(
            model, sequences, config, pad_id=tokenizer.pad_id, rng=numpy_rng(0, "t")
        )
    after = dict(model.named_parameters())

    # Assert: the projection and the output bias moved, nothing else did, and
    # every weight takes gradients again after the block.
    moved = {name for name in before if not before[name].equal(after[name])}
    assert moved and all(n.startswith(("projection.", "output_bias")) for n in moved)
    assert "output_bias" in moved
    assert all(p.requires_grad for p in model.parameters())


@pytest.fixture(scope="module")
def tiny_run(
    tmp_path_factory: pytest.TempPathFactory, new_simulation: NewSimulation
) -> Path:
    """A small federated run after two rounds, shared by the module's tests
    (they write only its personalisation report, each its own)."""
    path = tmp_path_factory.mktemp("personalize") / "run"
    simulation = new_simulation(path, SMALL_RUN)
    for _ in range(2):
        simulation.run_round()
    return path


def test_cli_personalize_writes_report_and_plot(tiny_run: Path) -> None:
    # Execute
    status = main(
        ["personalize", "--run", str(tiny_run), "--steps", "2", "--phones", "4"]
    )

    # Assert
    assert status == 0
    report = json.loads((tiny_run / "personalization.json").read_text())
    assert report["phones"] == 4
    assert set(report["gain"]) == set(VARIANTS)
    assert report["settings"]["steps"] == [2]
    assert (tiny_run / "personalization.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_personalize_phones_and_layers(tiny_run: Path) -> None:
    # Execute: two of the cohort's phones, only the output bias fine-tuned.
    status = main(
        [
            "personalize",
            "--run",
            str(tiny_run),
            "--steps",
            "1",
            "--phones",
            "2",
            "--train",
            "bias",
            "--validation-fraction",
            "0.3",
        ]
    )

    # Assert
    assert status == 0
    report = json.loads((tiny_run / "personalization.json").read_text())
    assert report["phones"] == 2
    assert report["cohort_phones"] >= 2
    assert report["settings"]["trained"] == "bias"
    assert report["settings"]["validation_fraction"] == 0.3


def test_personalize_cohort_measures_long_futures_whole(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: "long" from 3 future messages, so that the small slice has some.
    monkeypatch.setattr(personalization, "LONG_FUTURE_MESSAGES", 3)
    run = personalization.open_federated_run(str(tiny_run))
    config = PersonalizationConfig(client_lrs=(0.1,), steps=(1,), batch_size=4)
    sizes = {c: run.fleet.phone(c).future_size(10_000) for c in run.cohort.client_ids}

    # Execute: the first two phones of each selection.
    long = personalization.personalize_cohort(run, config, long_future=True, phones=2)
    capped = personalization.personalize_cohort(
        run, config, future_messages=2, phones=2
    )

    # Assert: the cohort's first phones with 3 or more, each on all of its
    # future; with a cap of 2, the cohort's first phones on at most 2.
    assert [o.client_id for o in long] == [c for c, n in sizes.items() if n >= 3][:2]
    assert [o.future_global.num_messages for o in long] == [
        sizes[o.client_id] for o in long
    ]
    assert [o.client_id for o in capped] == list(sizes)[:2]
    assert [o.future_global.num_messages for o in capped] == [
        min(2, sizes[o.client_id]) for o in capped
    ]


@pytest.mark.parametrize(
    "extra",
    [
        ["--steps", "0"],
        ["--client-lr", "-1"],
        ["--client-lr", "nan"],
        ["--phones", "0"],
        ["--validation-fraction", "1"],
        ["--future-messages", "0"],
        ["--long-future", "--future-messages", "29"],
    ],
)
def test_cli_personalize_bad_option_exits_2(
    tiny_run: Path, extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    status = main(["personalize", "--run", str(tiny_run), *extra])

    # Assert
    assert status == 2
    assert "error" in capsys.readouterr().err


def test_cli_personalize_unknown_layers_exits_2(
    tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute: argparse refuses the choice itself, exiting with status 2.
    with pytest.raises(SystemExit) as exit_:
        main(["personalize", "--run", str(tiny_run), "--train", "lstm"])

    # Assert
    assert exit_.value.code == 2
    assert "--train" in capsys.readouterr().err


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
