"""A phone's own memory of what it typed, mixed into the global model's softmax.

kNN-LM (Khandelwal et al. 2020, arXiv 1911.00172) as kNN-Per uses it for
federated personalisation (Marfoq et al. 2022, arXiv 2111.09360): the phone runs
the model over its own history and keeps, for every position, the model's
feature there (the projected LSTM output, `NextWordModel.features`) as a key and
the word that followed as the value. At suggestion time the k keys nearest to the
current feature vote for their words with weights softmax(-d / T) over squared
L2 distances d, and the phone mixes

    p(w) = λ · p_kNN(w) + (1 − λ) · p_global(w).

Each entry also keeps the word before its value, so the memory has a second,
exact reading: the phrase reading p_phrase(w | v), the share of the phone's own
entries after the previous word v whose next word was w (zero everywhere when v
never came before), a cache of the phone's own word pairs (the cache model of
Kuhn & De Mori 1990 over the phone's history). With μ its weight,

    p(w) = λ · p_kNN(w) + μ · p_phrase(w | v) + (1 − λ − μ) · p_global(w).

The memory needs no training, holds only this phone's own entries (the newest
`capacity` of them), and never leaves the phone; with λ = μ = 0 `MemoryMixture`
returns the model's own logits, so it is exactly the global model. λ, k, T and μ
are chosen per phone on its validation slice (`device_sim.personal_model`).
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
    """Keys (features), values (the next token ids) and the token before each
    value, oldest first."""

    keys: torch.Tensor  # (N, E) float32
    values: torch.Tensor  # (N,) int64
    previous: torch.Tensor  # (N,) int64: the input token the value followed

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @classmethod
    def empty(cls, dim: int) -> PhoneMemory:
        """A memory with nothing in it."""
        none = torch.zeros(0, dtype=torch.int64)
        return cls(torch.zeros(0, dim), none, none)


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
    the feature after the text before it, the target's id and the id before it.
    """
    dim = model.config.embed_dim
    sequences = encode_messages(tokenizer, list(texts), model.config.max_len)
    if not sequences or capacity < 1:
        return PhoneMemory.empty(dim)
    keys, values, previous = [], [], []
    model.eval()
    for start in range(0, len(sequences), batch_size):  # in order: oldest first
        batch = pad_batch(sequences[start : start + batch_size], tokenizer.pad_id)
        targets = batch[:, 1:]  # (B, L)
        real = targets != tokenizer.pad_id
        features, _ = model.features(batch[:, :-1])  # (B, L, E)
        keys.append(features[real].float())
        values.append(targets[real])
        previous.append(batch[:, :-1][real])
    return PhoneMemory(
        torch.cat(keys)[-capacity:],
        torch.cat(values)[-capacity:],
        torch.cat(previous)[-capacity:],
    )


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


def phrase_probabilities(
    previous: torch.Tensor, memory: PhoneMemory, vocab_size: int
) -> torch.Tensor:
    """p_phrase over the vocabulary after each token of `previous` (N,): (N, V).

    Row n splits 1 evenly over the memory's entries whose token before was
    `previous[n]`, each vote going to its value; a token the memory never saw
    before a value gets a row of zeros.
    """
    seen, row_of = torch.unique(previous, return_inverse=True)  # (U,), (N,)
    match = (seen.unsqueeze(1) == memory.previous.unsqueeze(0)).float()  # (U, M)
    votes = match / match.sum(dim=1, keepdim=True).clamp(min=1.0)
    table = torch.zeros(seen.shape[0], vocab_size)
    table.scatter_add_(1, memory.values.expand(seen.shape[0], -1), votes)
    return table[row_of]


def mix_log_probabilities(
    logits: torch.Tensor, parts: Sequence[tuple[torch.Tensor, float]]
) -> torch.Tensor:
    """log(Σ w_i·p_i + (1 − Σ w_i)·softmax(logits)) row by row, for the
    (probabilities (N, V), weight w_i > 0) `parts`; (N, V)."""
    rest = 1.0 - sum(weight for _, weight in parts)
    mixed = F.log_softmax(logits.float(), dim=-1) + math.log(rest)
    for probabilities, weight in parts:
        part = torch.log(probabilities) + math.log(weight)  # -inf where no vote
        mixed = torch.logaddexp(mixed, part)
    return mixed


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
        """Whether the memory changes anything (λ or μ > 0, something in it)."""
        return self.mixing.mixes and len(self.memory) > 0

    def forward(
        self, tokens: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """Scores of the next token at every position, and the LSTM state."""
        features, state = self.model.features(tokens, state)  # (B, T, E)
        logits = self.model.output_logits(features)  # (B, T, V)
        if not self.active:
            return logits, state
        vocab, mixing = logits.shape[-1], self.mixing
        parts = []
        if mixing.weight > 0:
            flat = features.reshape(-1, features.shape[-1])  # (B*T, E)
            knn = knn_probabilities(flat, self.memory, mixing, vocab)
            parts.append((knn, mixing.weight))
        if mixing.phrase_weight > 0:
            after = phrase_probabilities(tokens.reshape(-1), self.memory, vocab)
            parts.append((after, mixing.phrase_weight))
        mixed = mix_log_probabilities(logits.reshape(-1, vocab), parts)
        return mixed.reshape(logits.shape), state
