"""What an honest-but-curious server learns from an update: the bag of words.

The server holds a phone's update (or, under secure aggregation, only the sum of
the cohort's) and the global weights it sent. Two parts of the next-word model
give the words of the phone's text away without any optimisation:

  - The output bias. The loss's gradient w.r.t. the output bias is
    Σ_t (softmax_t − onehot(target_t)), so after SGD (update = −lr·gradient) a
    token that was a target moves up by lr·(its count − its predicted mass) and
    every other token moves down by its predicted mass alone. A positive bias
    delta marks a word the phone typed. It misses only words the model already
    predicted more often than the phone typed them ("of", "to", "and").
  - The embedding rows. A token that was an input gets the input gradient in
    its row; but the output layer is tied to the embedding, so every row also
    moves by its predicted mass times the features, and frequent words move
    even when absent. Rows are therefore ranked, not thresholded: the top k,
    with k the number of positive bias deltas, an estimate of the bag's size.

This is the bag-of-words leakage of Melis et al. 2019 (arXiv 1805.04049) and the
first step of FILM (Gupta et al. 2022, arXiv 2205.08514), which then orders the
recovered words into sentences by beam search over the updated model's
memorisation; that second step is not implemented here. A sum over a cohort
reveals the union of its words but not who typed which: attribution to one
phone is what secure aggregation takes away, and DP noise what blurs the union.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch

# The model's parameter names for the two parts the attack reads.
OUTPUT_BIAS = "output_bias"
EMBEDDING = "embedding.weight"

# What the attack reads: parameters in order, or a state dict by name.
UpdateOrState = Sequence[torch.Tensor] | Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class AttackScore:
    """How well a recovered bag matches the true one, over word tokens only."""

    precision: float  # recovered words that were typed / recovered words (nan: none)
    recall: float  # typed words recovered / typed words (nan: none typed)
    recovered: int  # word tokens recovered
    truth: int  # word tokens typed


def update_parts(
    update: UpdateOrState, *, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The output-bias delta (V,) and embedding delta (V, E) of an update.

    A mapping is read by parameter name; a list in parameter order is read by
    shape (the one (V,) tensor and the one (V, E) tensor), so the attack does
    not depend on the order in which the model registers its parameters.
    """
    if isinstance(update, Mapping):
        return update[OUTPUT_BIAS], update[EMBEDDING]
    biases = [t for t in update if t.dim() == 1 and t.shape[0] == vocab_size]
    tables = [t for t in update if t.dim() == 2 and t.shape[0] == vocab_size]
    if len(biases) != 1 or len(tables) != 1:
        raise ValueError(
            f"expected one ({vocab_size},) and one ({vocab_size}, E) tensor, found "
            f"{len(biases)} and {len(tables)}"
        )
    return biases[0], tables[0]


def bias_tokens(bias_delta: torch.Tensor, *, fraction: float = 0.0) -> set[int]:
    """Tokens whose output bias rose by more than `fraction` of the largest rise.

    `fraction` 0 keeps every rise (all targets but over-predicted ones); a small
    positive value guards against noise when the update carries DP noise.
    """
    delta = bias_delta.detach().to(torch.float64)
    top = float(delta.max()) if delta.numel() else 0.0
    threshold = max(0.0, fraction * top)
    return set(torch.nonzero(delta > threshold).flatten().tolist())


def moved_rows(embedding_delta: torch.Tensor, *, count: int) -> set[int]:
    """The `count` tokens whose embedding rows moved farthest (L2 norm)."""
    norms = embedding_delta.detach().to(torch.float64).norm(dim=1)  # (V,)
    count = min(count, norms.shape[0])
    if count <= 0:
        return set()
    return set(torch.topk(norms, count).indices.tolist())


def recover_tokens(
    update: UpdateOrState,
    *,
    vocab_size: int,
    bias_fraction: float = 0.0,
    use_embedding: bool = False,
) -> set[int]:
    """The token ids an update (or a sum of updates) reveals as typed.

    The rising output biases and, with `use_embedding`, also the k rows that
    moved farthest, k being how many biases rose. On five Chit-Chat phones of
    60 messages each (tests/test_attack.py) the bias alone gave precision 1.00
    and recall 0.94 (mean); adding the rows gave 0.94 and 0.97, trading more
    precision for recall, so it is off by default.
    """
    bias_delta, embedding_delta = update_parts(update, vocab_size=vocab_size)
    recovered = bias_tokens(bias_delta, fraction=bias_fraction)
    if use_embedding:
        recovered |= moved_rows(embedding_delta, count=len(recovered))
    return recovered


def score(
    recovered: Collection[int], truth: Collection[int], *, word_ids: Collection[int]
) -> AttackScore:
    """Precision and recall of `recovered` against `truth`, words only.

    Specials and punctuation are left out of both sets: every message holds
    <bos> and <eos>, so counting them would flatter the attack.

    Args:
        recovered: Token ids the attack returned.
        truth: Token ids the phone (or cohort) really trained on.
        word_ids: Ids of the vocabulary's words (`WordTokenizer.word_ids`).
    """
    words = set(word_ids)
    found, typed = set(recovered) & words, set(truth) & words
    hits = len(found & typed)
    precision = hits / len(found) if found else math.nan
    recall = hits / len(typed) if typed else math.nan
    return AttackScore(precision, recall, len(found), len(typed))
