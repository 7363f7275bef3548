"""The weights that travel: a model's parameters as a list, and the shared start.

What the server sends a phone, what a phone's update is and what a checkpoint holds
are `Parameters`: float tensors in `model.parameters()` order. Every run (federated,
central, local-only) starts from `initial_model`, drawn from the stream
`(seed, "init")`, so that the three corners begin at the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from corpora.tokenizer import WordTokenizer
from models.baseline import public_unigram_log_probs
from models.config import ModelConfig
from models.model import NextWordModel
from models.seeding import derive_seed

# Float tensors in `model.parameters()` order.
Parameters = list[torch.Tensor]


def parameters_of(model: torch.nn.Module) -> Parameters:
    """Detached copies of a model's parameters, in order."""
    return [p.detach().clone() for p in model.parameters()]


@torch.no_grad()
def load_parameters(model: torch.nn.Module, parameters: Sequence[torch.Tensor]) -> None:
    """Copy `parameters` into `model`'s parameters, in order."""
    for target, source in zip(model.parameters(), parameters, strict=True):
        target.copy_(source)


def initial_model(
    config: ModelConfig, seed: int, tokenizer: WordTokenizer | None = None
) -> NextWordModel:
    """The round-0 model, initialised from the stream `(seed, "init")`.

    With `config.output_bias_init == "unigram"` its output bias starts at the
    `tokenizer`'s public unigram log-frequencies (which needs the tokenizer).
    The global torch generator is left as it was, so that drawing the initial
    model changes nothing else a run does.
    """
    bias = None
    if config.output_bias_init == "unigram":
        if tokenizer is None:
            raise ValueError("a unigram output bias needs the run's tokenizer")
        bias = public_unigram_log_probs(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        return NextWordModel(config, output_bias=bias)


def check_like(
    reference: Sequence[torch.Tensor], tensors: Sequence[object], what: str
) -> None:
    """Raise ValueError unless `tensors` match `reference` in count, shape, dtype."""
    if len(tensors) != len(reference):
        raise ValueError(
            f"{what} has {len(tensors)} tensors, expected {len(reference)}"
        )
    for i, (t, r) in enumerate(zip(tensors, reference, strict=True)):
        if not isinstance(t, torch.Tensor) or t.shape != r.shape:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(
                f"{what}: tensor {i} is {shape}, expected {tuple(r.shape)}"
            )
        if t.dtype != r.dtype:
            raise ValueError(f"{what}: tensor {i} is {t.dtype}, expected {r.dtype}")
