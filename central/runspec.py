"""Creating a central run directory and handing its contents to every worker.

Rank 0 alone reads and writes the run directory; the other workers (possibly on
other machines, without the directory) get everything they need from it in one
broadcast: the config, the tokenizer and, when resuming, the counters, weights
and optimizer state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from central.config import CentralConfig
from central.errors import WorkerAbortedError
from central.state import Progress, load_optimizer_tensors
from corpora.corpus import CorpusConfig
from corpora.tokenizer import WordTokenizer
from models.config import ModelConfig
from models.distributed import WorkerContext, broadcast_object
from models.rundir import POOLED_KINDS, RunDir, RunDirError, RunKind


@dataclass
class RunSpec:
    """What a worker needs to start or resume a run."""

    config: dict[str, Any]  # config.json
    tokenizer_json: str  # tokenizer.json's text
    progress: Progress | None = None  # None for a fresh run
    weights: dict[str, torch.Tensor] | None = None  # the last checkpoint's tensors
    optimizer: dict[str, torch.Tensor] | None = None  # its optimizer state

    def tokenizer(self) -> WordTokenizer:
        return WordTokenizer(Tokenizer.from_str(self.tokenizer_json))

    def corpus(self) -> CorpusConfig:
        return CorpusConfig(**self.config["corpus"])

    def model(self) -> ModelConfig:
        return ModelConfig(**self.config["model"])

    def training(self) -> CentralConfig:
        return CentralConfig.from_dict(self.config["training"])


def create_run(
    path: str | Path,
    *,
    kind: RunKind,
    corpus: CorpusConfig,
    model: ModelConfig,
    training: CentralConfig,
    extra: dict[str, Any] | None = None,
    tokenizer: WordTokenizer | None = None,
) -> RunDir:
    """A new run directory with its config.json and tokenizer.json.

    Args:
        extra: more entries for config.json.
        tokenizer: the run's tokenizer (default: the public vocabulary's).

    Raises:
        RunDirError: `path` already holds a run (resume it instead).
    """
    run = RunDir(path)
    if run.config_path.exists():
        raise RunDirError(f"{run.path}: already a run directory; resume it instead")
    tokenizer = tokenizer or WordTokenizer.public()
    if model.vocab_size != tokenizer.vocab_size:
        raise RunDirError(
            f"model vocab_size {model.vocab_size} != tokenizer's {tokenizer.vocab_size}"
        )
    config = {
        "kind": RunKind(kind).value,
        "corpus": asdict(corpus),
        "model": asdict(model),
        "training": asdict(training),
        **(extra or {}),
    }
    run.create(config, tokenizer)
    return run


def read_spec(run: RunDir) -> RunSpec:
    """Rank 0: the run's spec from its directory, resuming from the last save."""
    config = run.config_of(POOLED_KINDS)
    try:
        tokenizer_json = run.tokenizer_path.read_text(encoding="utf-8")
        spec = RunSpec(config, tokenizer_json)
        spec.corpus(), spec.model(), spec.training()
    except FileNotFoundError:
        raise RunDirError(f"{run.tokenizer_path}: missing") from None
    except (KeyError, TypeError, ValueError) as error:
        raise RunDirError(f"{run.config_path}: invalid ({error})") from None
    state = run.read_state()
    if state is not None:
        spec.progress = Progress.from_state(state, run.state_path)
        spec.weights = _checkpoint_tensors(run, spec.progress.step)
        spec.optimizer = load_optimizer_tensors(run, spec.progress.step)
    return spec


def _checkpoint_tensors(run: RunDir, step: int) -> dict[str, torch.Tensor]:
    path = run.checkpoint_path(step)
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing, cannot resume") from None
    except Exception as error:  # safetensors raises its own error types
        raise RunDirError(f"{path}: unreadable ({error})") from None


def share_spec(run: RunDir, context: WorkerContext) -> RunSpec:
    """Rank 0 reads the spec and broadcasts it; a failure stops every worker."""
    payload: object = None
    error: Exception | None = None
    if context.is_main:
        try:
            payload = read_spec(run)
        except Exception as caught:  # re-raised below, after telling the others
            error = caught
            payload = f"{type(caught).__name__}: {caught}"
    payload = broadcast_object(payload, context)
    if error is not None:
        raise error
    if isinstance(payload, str):
        raise WorkerAbortedError(f"rank 0 could not read the run: {payload}")
    return cast(RunSpec, payload)
