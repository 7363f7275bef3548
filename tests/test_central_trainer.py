"""The central trainer on one worker: run directory, metrics, resume, CLI errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from central.config import CentralConfig
from central.errors import CentralConfigError
from central.events import Evaluated, Event, TrainingStarted
from central.launch import run_worker
from central.runspec import create_run
from central.state import Progress
from cli.main import main
from corpora.corpus import CorpusConfig
from corpora.tokenizer import WordTokenizer
from models.baseline import public_unigram_log_probs
from models.config import ModelConfig
from models.rundir import RunDir, RunDirError, RunKind
from models.weights import initial_model

# Small and fast: about 2,000 training sequences, 4 steps a shard.
TRAINING = CentralConfig(
    epochs=2,
    batch_size=64,
    lr=5e-3,
    eval_every=7,
    heldout_messages=40,
    future_messages=40,
    keystroke_texts=5,
    shard_messages=250,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> object:
    """One intra-op thread: on 2 shared cores a second one mostly waits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Interrupt(Exception):
    """Raised by a callback to kill a run mid-way."""


@pytest.fixture(scope="module")
def whole_run(
    tmp_path_factory: pytest.TempPathFactory,
    corpus_file: str,
    tiny_model_config: ModelConfig,
) -> tuple[RunDir, list[Event]]:
    """One tiny run trained straight through, and the events it reported."""
    run = new_run(
        tmp_path_factory.mktemp("whole") / "run", corpus_file, tiny_model_config
    )
    events: list[Event] = []
    run_worker(run.path, on_event=events.append)
    return run, events


def new_run(path: Path, corpus_file: str, model: ModelConfig) -> RunDir:
    return create_run(
        path,
        kind=RunKind.TRAIN,
        corpus=CorpusConfig(source=corpus_file),
        model=model,
        training=TRAINING,
    )


def test_run_worker_single_writes_run_dir_and_metric_lines(
    whole_run: tuple[RunDir, list[Event]],
) -> None:
    # Prepare / Execute: the module's run, trained straight through.
    run, events = whole_run
    progress = Progress.from_state(run.read_state() or {}, run.state_path)
    # Assert
    started = events[0]
    assert isinstance(started, TrainingStarted)
    per_epoch = started.total_steps // 2
    records = run.read_metrics()
    steps = [r["step"] for r in records]
    expected = sorted({*range(7, 2 * per_epoch + 1, 7), per_epoch, 2 * per_epoch})
    assert steps == expected
    assert progress.step == 2 * per_epoch and progress.epoch == 2
    last = records[-1]
    assert last["epoch"] == 2.0 and last["bytes_total"] == 0
    assert last["tokens_total"] == progress.tokens_total > 0
    assert set(last["heldout"]) >= {"top1", "top3", "perplexity", "keystroke_savings"}
    assert last["future"]["num_messages"] >= 40
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert run.read_config()["kind"] == "train"
    assert run.checkpoint_steps()[-1] == 2 * per_epoch
    assert [e.record["step"] for e in events if isinstance(e, Evaluated)] == steps


def test_run_worker_resume_after_kill_equals_uninterrupted_run(
    tmp_path: Path,
    corpus_file: str,
    tiny_model_config: ModelConfig,
    whole_run: tuple[RunDir, list[Event]],
) -> None:
    # Prepare: the module's uninterrupted run, and one killed after two saves.
    whole, _ = whole_run
    broken = new_run(tmp_path / "broken", corpus_file, tiny_model_config)
    saves = 0

    def kill_after_two_saves(event: Event) -> None:
        nonlocal saves
        saves += isinstance(event, Evaluated)
        if saves == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_worker(broken.path, on_event=kill_after_two_saves)
    # A torn write of a later line must not survive the resume.
    broken.append_metrics({"step": 10_000})
    # Execute
    run_worker(broken.path)
    # Assert
    expected, _ = whole.load_model()
    found, _ = broken.load_model()
    for name, tensor in expected.state_dict().items():
        assert torch.equal(found.state_dict()[name], tensor), name
    strip = ("wall_seconds_total",)
    assert [
        {k: v for k, v in r.items() if k not in strip} for r in broken.read_metrics()
    ] == [{k: v for k, v in r.items() if k not in strip} for r in whole.read_metrics()]


def test_create_run_refuses_an_existing_run(
    tmp_path: Path, corpus_file: str, tiny_model_config: ModelConfig
) -> None:
    # Prepare
    new_run(tmp_path / "run", corpus_file, tiny_model_config)
    # Execute / Assert
    with pytest.raises(RunDirError, match="already a run directory"):
        new_run(tmp_path / "run", corpus_file, tiny_model_config)


def test_run_worker_rejects_a_federated_run_dir(tmp_path: Path) -> None:
    # Prepare
    (tmp_path / "config.json").write_text('{"kind": "federated"}')
    # Execute / Assert
    with pytest.raises(RunDirError, match="not a central one"):
        run_worker(tmp_path)


def test_central_config_rejects_uneven_worker_split() -> None:
    # Execute / Assert
    with pytest.raises(CentralConfigError, match="multiple of 3"):
        CentralConfig(batch_size=32).check_workers(3)
    with pytest.raises(CentralConfigError, match="lr must be > 0"):
        CentralConfig(lr=0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--out", "{tmp}/a", "--epochs", "0"], "epochs must be >= 1"),
        (["train", "--out", "{tmp}/a", "--corpus", "{tmp}/no.jsonl"], "no such"),
        (["train", "--resume", "{tmp}/none"], "no such run directory"),
        (["central", "--out", "{tmp}/a", "--workers", "3"], "multiple of 3"),
        (["central", "--out", "{tmp}/a", "--workers", "0"], "must lie in [1, 64]"),
    ],
)
def test_cli_train_and_central_bad_input_one_line_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    # Prepare
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    # Execute
    status = main(argv)
    # Assert
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("bias_init", ["unigram", "zeros"])
def test_central_starts_from_the_fleets_initial_model(
    tmp_path: Path,
    corpus_file: str,
    tiny_model_config: ModelConfig,
    tokenizer: WordTokenizer,
    bias_init: str,
) -> None:
    # Prepare: one Adam step at lr 1e-3 moves each bias by at most about 1e-3.
    model = replace(tiny_model_config, output_bias_init=bias_init)
    training = replace(TRAINING, epochs=1, max_steps=1, lr=1e-3)
    run = create_run(
        tmp_path / "run",
        kind=RunKind.TRAIN,
        corpus=CorpusConfig(source=corpus_file),
        model=model,
        training=training,
    )
    start = initial_model(model, training.seed, tokenizer).output_bias.detach()

    # Execute
    run_worker(run.path)
    trained, _ = run.load_model()

    # Assert: the trained bias is the initial model's, one small step away.
    moved = (trained.output_bias.detach() - start).abs().max()
    assert float(moved) < 2e-3
    expected_start = (
        public_unigram_log_probs(tokenizer) if bias_init == "unigram" else 0
    )
    assert torch.allclose(start, torch.as_tensor(expected_start, dtype=start.dtype))
