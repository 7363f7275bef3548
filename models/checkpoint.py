"""Checkpoints: safetensors weights with the model config and vocabulary fingerprint.

A checkpoint is one `.safetensors` file whose metadata carries the `ModelConfig` as
JSON and the fingerprint of the tokenizer it was trained with; `tokenizer.json`
lies beside it in the run directory. Nothing is pickled.

A checkpoint is written to a temporary sibling, flushed to disk and renamed, and a
loaded one is refused when any weight is NaN or infinite: a model that diverged is
no model to suggest with, evaluate or resume from.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from models.config import ModelConfig
from models.files import atomic_write
from models.model import NextWordModel, parameter_count


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and the reason."""


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: ModelConfig,
    *,
    vocab_fingerprint: str,
    extra: dict[str, str] | None = None,
) -> None:
    """Write `model`'s weights atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "model_config": json.dumps(asdict(config)),
        "vocab_fingerprint": vocab_fingerprint,
        **(extra or {}),
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda out: save_file(tensors, str(out), metadata=metadata))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a checkpoint file, with a clear error for a bad file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({error})"
        ) from None


def load_checkpoint(
    path: str | Path, *, vocab_fingerprint: str | None = None
) -> tuple[NextWordModel, ModelConfig, dict[str, str]]:
    """A model rebuilt from a checkpoint; checks shapes and vocabulary.

    Raises:
        CheckpointError: the file is missing, truncated, of other shapes, or was
            trained with another vocabulary than `vocab_fingerprint`.
    """
    metadata = read_metadata(path)
    config = _model_config(metadata, source=str(path))
    found = metadata.get("vocab_fingerprint")
    if vocab_fingerprint is not None and found != vocab_fingerprint:
        raise CheckpointError(
            f"{path}: trained with another vocabulary (fingerprint {found}, "
            f"tokenizer has {vocab_fingerprint})"
        )
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: cannot read the weights ({error})") from None
    if sum(t.numel() for t in tensors.values()) != parameter_count(config):
        # Name the mismatch on a weightless skeleton, so that a config claiming
        # a huge vocabulary fails here instead of allocating it. (Only here:
        # building on the meta device imports torch._dynamo, 1.9 s and 74 MB.)
        with torch.device("meta"):
            check_tensors(NextWordModel(config), tensors, source=str(path))
    model = NextWordModel(config)
    check_tensors(model, tensors, source=str(path))
    check_finite(tensors, source=str(path))
    model.load_state_dict(tensors)
    return model, config, metadata


def _model_config(metadata: dict[str, str], *, source: str) -> ModelConfig:
    """The `ModelConfig` in a checkpoint's metadata: its sizes positive ints."""
    invalid = CheckpointError(f"{source}: metadata lacks a valid model_config")
    try:
        config = ModelConfig(**json.loads(metadata["model_config"]))
    except (KeyError, TypeError, ValueError):
        raise invalid from None
    sizes = [v for k, v in asdict(config).items() if k != "output_bias_init"]
    if not all(type(value) is int and value > 0 for value in sizes):
        raise invalid
    return config


def load_weights(
    model: nn.Module, tensors: dict[str, torch.Tensor], *, source: str
) -> None:
    """Copy `tensors` into `model`, naming any missing, extra or misshapen tensor."""
    check_tensors(model, tensors, source=source)
    check_finite(tensors, source=source)
    model.load_state_dict(tensors)


def check_tensors(
    model: nn.Module, tensors: dict[str, torch.Tensor], *, source: str
) -> None:
    """Raise a `CheckpointError` naming any missing, extra or misshapen tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{source}: tensors missing {missing}, unexpected {extra}"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(tensor.shape)}, "
                f"the model needs {tuple(expected[name].shape)}"
            )


def check_finite(tensors: dict[str, torch.Tensor], *, source: str) -> None:
    """Raise a `CheckpointError` naming the first tensor with NaN or Inf values."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{source}: tensor {name} holds {bad:,} non-finite value(s) "
                "(NaN or Inf); the model diverged before it was saved"
            )
