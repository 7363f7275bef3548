"""Checkpoints and run directories: round trips and clear errors for bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from corpora.tokenizer import WordTokenizer
from models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from models.config import ModelConfig
from models.model import NextWordModel, parameter_count
from models.rundir import RunDir, RunDirError

# A vocabulary fingerprint for tests that never build a tokenizer.
FINGERPRINT = "0123456789abcdef"


@pytest.fixture
def tiny_model(tiny_model_config: ModelConfig) -> NextWordModel:
    """The tiny model with seeded weights."""
    torch.manual_seed(0)
    return NextWordModel(tiny_model_config)


@pytest.fixture
def saved(tiny_model: NextWordModel, tmp_path: Path) -> Path:
    """The tiny model saved as a checkpoint."""
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, tiny_model, tiny_model.config, vocab_fingerprint=FINGERPRINT)
    return path


def load_error(path: Path, fingerprint: str | None = FINGERPRINT) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path, vocab_fingerprint=fingerprint)
    return str(caught.value)


def test_checkpoint_round_trip_gives_identical_outputs(
    tiny_model: NextWordModel, tmp_path: Path
) -> None:
    # Prepare
    path = tmp_path / "checkpoints" / "step_000001.safetensors"
    tokens = torch.tensor([[2, 10, 200, 3000], [2, 5, 0, 0]])  # (B, T)

    # Execute
    save_checkpoint(
        path,
        tiny_model,
        tiny_model.config,
        vocab_fingerprint=FINGERPRINT,
        extra={"server_round": "1"},
    )
    loaded, config, metadata = load_checkpoint(path, vocab_fingerprint=FINGERPRINT)

    # Assert
    with torch.no_grad():
        assert torch.equal(loaded(tokens)[0], tiny_model(tokens)[0])
    assert config == tiny_model.config
    assert metadata["server_round"] == "1"
    assert metadata["vocab_fingerprint"] == FINGERPRINT
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporaries


def test_checkpoint_truncated_file_is_checkpoint_error(saved: Path) -> None:
    # Prepare
    data = saved.read_bytes()
    cut_header = saved.with_name("header.safetensors")
    cut_header.write_bytes(data[:6])
    cut_weights = saved.with_name("weights.safetensors")
    cut_weights.write_bytes(data[: len(data) // 2])

    # Execute
    errors = [load_error(cut_header), load_error(cut_weights)]

    # Assert
    assert errors[0].startswith(f"{cut_header}: not a readable safetensors file")
    assert errors[1].startswith(f"{cut_weights}: ")


def test_checkpoint_not_safetensors_is_checkpoint_error(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "notes.safetensors"
    path.write_text("these are not weights\n")

    # Execute
    error = load_error(path)

    # Assert
    assert error.startswith(f"{path}: not a readable safetensors file")


def test_checkpoint_missing_file_is_checkpoint_error(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "absent.safetensors"

    # Execute
    error = load_error(path)

    # Assert
    assert error == f"{path}: no such checkpoint file"


def test_checkpoint_other_vocabulary_is_checkpoint_error(saved: Path) -> None:
    # Prepare
    other = WordTokenizer.from_words(["cat"]).fingerprint()

    # Execute
    error = load_error(saved, other)

    # Assert
    assert error == (
        f"{saved}: trained with another vocabulary (fingerprint {FINGERPRINT}, "
        f"tokenizer has {other})"
    )


def test_checkpoint_wrong_shapes_is_checkpoint_error(
    tiny_model: NextWordModel, tmp_path: Path
) -> None:
    # Prepare: weights of hidden width 32 recorded as width 48
    path = tmp_path / "model.safetensors"
    wider = replace(tiny_model.config, hidden_dim=48)
    save_checkpoint(path, tiny_model, wider, vocab_fingerprint=FINGERPRINT)

    # Execute
    error = load_error(path)

    # Assert: an LSTM tensor of 4 x 32 rows where 4 x 48 are needed
    assert error.startswith(f"{path}: tensor lstm.")
    assert "has shape (128" in error
    assert "the model needs (192" in error


def test_checkpoint_missing_tensor_is_checkpoint_error(
    tiny_model: NextWordModel,
) -> None:
    # Prepare
    tensors = dict(tiny_model.state_dict())
    tensors.pop("output_bias")
    tensors["extra.weight"] = torch.zeros(1)

    # Execute
    with pytest.raises(CheckpointError) as caught:
        load_weights(tiny_model, tensors, source="memory")

    # Assert
    assert str(caught.value) == (
        "memory: tensors missing ['output_bias'], unexpected ['extra.weight']"
    )


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"model_config": "{"},
        {"model_config": json.dumps({"layers": 2})},
        {"model_config": json.dumps({"vocab_size": "x"})},
        {"model_config": json.dumps({"vocab_size": -5})},
        {"model_config": json.dumps({"hidden_dim": 3.5})},
    ],
)
def test_checkpoint_bad_model_config_is_checkpoint_error(
    tiny_model: NextWordModel, tmp_path: Path, metadata: dict[str, str]
) -> None:
    # Prepare
    path = tmp_path / "model.safetensors"
    save_file(dict(tiny_model.state_dict()), str(path), metadata=metadata)

    # Execute
    error = load_error(path, None)

    # Assert
    assert error == f"{path}: metadata lacks a valid model_config"


def test_checkpoint_huge_claimed_vocabulary_fails_before_allocating(
    tiny_model: NextWordModel, tmp_path: Path
) -> None:
    # Prepare: 10^12 x 16 float32 weights would need 64 TB
    path = tmp_path / "model.safetensors"
    huge = replace(tiny_model.config, vocab_size=10**12)
    save_checkpoint(path, tiny_model, huge, vocab_fingerprint=FINGERPRINT)

    # Execute
    error = load_error(path)

    # Assert
    assert "the model needs (1000000000000" in error


def test_rundir_loads_latest_or_named_checkpoint(
    tiny_model: NextWordModel, tokenizer: WordTokenizer, tmp_path: Path
) -> None:
    # Prepare
    run = RunDir(tmp_path / "run")
    run.create({"kind": "train"}, tokenizer)
    for step in (3, 10):
        save_checkpoint(
            run.checkpoint_path(step),
            tiny_model,
            tiny_model.config,
            vocab_fingerprint=tokenizer.fingerprint(),
        )

    # Execute
    _, latest = run.load_model()
    _, named = run.load_model(3)
    with pytest.raises(RunDirError) as caught:
        run.load_model(5)

    # Assert
    assert (run.checkpoint_steps(), latest, named) == ([3, 10], 10, 3)
    assert str(caught.value) == f"{run.path}: no checkpoint for step 5 (have [3, 10])"


def test_rundir_checkpoint_of_other_vocabulary_is_rundir_error(
    tiny_model: NextWordModel, tokenizer: WordTokenizer, tmp_path: Path
) -> None:
    # Prepare
    run = RunDir(tmp_path / "run")
    run.create({"kind": "train"}, tokenizer)
    save_checkpoint(
        run.checkpoint_path(1),
        tiny_model,
        tiny_model.config,
        vocab_fingerprint=FINGERPRINT,
    )

    # Execute
    with pytest.raises(RunDirError) as caught:
        run.load_model()

    # Assert
    assert "trained with another vocabulary" in str(caught.value)


@pytest.mark.parametrize(
    ("vocab_size", "embed_dim", "hidden_dim"), [(10, 4, 6), (10_036, 64, 128)]
)
def test_parameter_count_is_the_models_own(
    vocab_size: int, embed_dim: int, hidden_dim: int
) -> None:
    # Prepare: V = 10, E = 4, H = 6 by hand: embedding 40, LSTM 4*6*(4+6) + 8*6
    # = 288, projection 6*4 + 4 = 28, output bias 10: 366
    config = ModelConfig(
        vocab_size=vocab_size, embed_dim=embed_dim, hidden_dim=hidden_dim
    )

    # Execute
    counted = parameter_count(config)

    # Assert
    built = sum(p.numel() for p in NextWordModel(config).parameters())
    assert counted == built
    if vocab_size == 10:
        assert counted == 366


def test_loading_a_checkpoint_builds_nothing_on_the_meta_device() -> None:
    # Prepare: a fresh interpreter (torch._dynamo, which the meta device
    # imports, costs 1.9 s and 74 MB in every process that loads a model)
    probe = (
        "import sys, tempfile, pathlib\n"
        "from models.checkpoint import save_checkpoint, load_checkpoint\n"
        "from models.config import ModelConfig\n"
        "from models.model import NextWordModel\n"
        "config = ModelConfig(vocab_size=10, embed_dim=4, hidden_dim=6)\n"
        "path = pathlib.Path(tempfile.mkdtemp()) / 'm.safetensors'\n"
        "save_checkpoint(path, NextWordModel(config), config, vocab_fingerprint='x')\n"
        "load_checkpoint(path, vocab_fingerprint='x')\n"
        "print('torch._dynamo' in sys.modules)\n"
    )

    # Execute
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Assert
    assert completed.stdout.strip().splitlines()[-1] == "False", completed.stderr
