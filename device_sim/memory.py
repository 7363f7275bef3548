"""A phone's own memory of what it typed, mixed into the global model's softmax.

kNN-LM (Khandelwal et al. 2020, arXiv 1911.00172) as kNN-Per uses it for
federated personalisation (Marfoq et al. 2022, arXiv 2111.09360): the phone runs
the model over its own history and keeps, for every position, the model's
feature there (the projected LSTM output, `NextWordModel.features`) as a key and
the word that followed as the value. At suggestion time the k keys nearest to the
current feature vote for their words with weights softmax(-d / T) over squared
L2 distances d, and the phone mixes

    p(w) = λ · p_kNN(w) + (1 − λ) · p_global(w).

The memory needs no training, holds only this phone's own vectors (the newest
`capacity` of them), and never leaves the phone; with λ = 0 `MemoryMixture`
returns the model's own logits, so it is exactly the global model. λ, k and T
are chosen per phone on its validation slice (`device_sim.personalize`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from corpora.tokenizer import WordTokenizer
from device_sim.memory_config import Mixing
from models.batching import encode_messages, pad_batch
from models.config import ModelConfig
from models.model import LSTMState, NextWordModel


@dataclass(frozen=True, eq=False)
class PhoneMemory:
    """Keys (features) and values (the next token ids), oldest first."""

    keys: torch.Tensor  # (N, E) float32
    values: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @classmethod
    def empty(cls, dim: int) -> PhoneMemory:
        """A memory with nothing in it."""
        return cls(torch.zeros(0, dim), torch.zeros(0, dtype=torch.int64))


@torch.no_grad()
def build_memory(
    model: NextWordModel,
    tokenizer: WordTokenizer,
    texts: Sequence[str],
    *,
    capacity: int,
    batch_size: int = 64,
) -> PhoneMemory:
    """The memory of `texts` (oldest first) under `model`: its newest `capacity`.

    Every real target of every message, end of message included, is one entry:
    the feature after the text before it, and the target's id.
    """
    dim = model.config.embed_dim
    sequences = encode_messages(tokenizer, list(texts), model.config.max_len)
    if not sequences or capacity < 1:
        return PhoneMemory.empty(dim)
    keys, values = [], []
    model.eval()
    for start in range(0, len(sequences), batch_size):  # in order: oldest first
        batch = pad_batch(sequences[start : start + batch_size], tokenizer.pad_id)
        targets = batch[:, 1:]  # (B, L)
        real = targets != tokenizer.pad_id
        features, _ = model.features(batch[:, :-1])  # (B, L, E)
        keys.append(features[real].float())
        values.append(targets[real])
    return PhoneMemory(torch.cat(keys)[-capacity:], torch.cat(values)[-capacity:])


def knn_probabilities(
    features: torch.Tensor, memory: PhoneMemory, mixing: Mixing, vocab_size: int
) -> torch.Tensor:
    """p_kNN over the vocabulary for each row of `features` (N, E): (N, V)."""
    k = min(mixing.neighbours, len(memory))
    distances = torch.cdist(features.float(), memory.keys).square()  # (N, M)
    nearest, index = distances.topk(k, dim=-1, largest=False)  # (N, k)
    votes = torch.softmax(-nearest / mixing.temperature, dim=-1)  # (N, k)
    probabilities = features.new_zeros(features.shape[0], vocab_size).float()
    return probabilities.scatter_add_(1, memory.values[index], votes)


def mix_log_probabilities(
    logits: torch.Tensor, knn: torch.Tensor, weight: float
) -> torch.Tensor:
    """log(λ·p_kNN + (1 − λ)·softmax(logits)), row by row; (N, V)."""
    model_part = F.log_softmax(logits.float(), dim=-1) + math.log1p(-weight)
    memory_part = torch.log(knn) + math.log(weight)  # -inf where no vote
    return torch.logaddexp(model_part, memory_part)


class MemoryMixture(nn.Module):
    """A next-word model whose distribution is mixed with a phone's memory.

    It maps token ids to ((B, T, V) scores, state) like `NextWordModel`, so the
    metrics, the keystroke simulation and the suggester take it unchanged: with
    λ > 0 the scores are log-probabilities of the mixture, with λ = 0 (or an
    empty memory) the model's own logits.
    """

    def __init__(
        self, *, model: NextWordModel, memory: PhoneMemory, mixing: Mixing
    ) -> None:
        super().__init__()
        self.model = model
        self.memory = memory
        self.mixing = mixing

    @property
    def config(self) -> ModelConfig:
        """The wrapped model's shape (the suggester reads its window)."""
        return self.model.config

    @property
    def active(self) -> bool:
        """Whether the memory changes anything (λ > 0 and something in it)."""
        return self.mixing.weight > 0 and len(self.memory) > 0

    def forward(
        self, tokens: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """Scores of the next token at every position, and the LSTM state."""
        features, state = self.model.features(tokens, state)  # (B, T, E)
        logits = self.model.output_logits(features)  # (B, T, V)
        if not self.active:
            return logits, state
        flat = features.reshape(-1, features.shape[-1])  # (B*T, E)
        knn = knn_probabilities(flat, self.memory, self.mixing, logits.shape[-1])
        mixed = mix_log_probabilities(
            logits.reshape(-1, logits.shape[-1]), knn, self.mixing.weight
        )
        return mixed.reshape(logits.shape), state
