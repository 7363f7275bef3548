"""Federated evaluation: each phone measures the global model on its own future text.

A phone reports raw counts (hits, targets, summed loss, keystrokes), never text.
Counts add up exactly, so the coordinator's `combine` gives the same accuracy and
perplexity as `models.metrics.evaluate` on the pooled messages would; keystroke
savings are simulated on each phone's own fixed share of the keystroke sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from corpora.samples import evenly_spaced
from corpora.tokenizer import WordTokenizer
from models.batching import encode_messages
from models.metrics import EvalMetrics, accuracy_and_loss, keystroke_counts


@dataclass(frozen=True)
class EvalCounts:
    """What a phone reports after measuring a model on its future messages."""

    top1_hits: int
    top3_hits: int
    word_targets: int  # targets counted for top-k (suggestible words)
    loss_sum: float  # summed cross-entropy over every non-padding target
    loss_targets: int
    keys_without: int  # keystrokes of the keystroke sample without the strip
    keys_with: int  # and with it
    num_messages: int


def count_metrics(
    model: nn.Module,
    tokenizer: WordTokenizer,
    texts: list[str],
    *,
    max_len: int,
    keystroke_texts: int,
    batch_size: int = 128,
) -> EvalCounts:
    """The additive counts behind `EvalMetrics` for `texts`."""
    model.eval()
    sequences = encode_messages(tokenizer, texts, max_len)
    top1, top3, words, loss_sum, loss_count = accuracy_and_loss(
        model, tokenizer, sequences, batch_size=batch_size
    )
    sample = evenly_spaced(texts, keystroke_texts) if keystroke_texts > 0 else []
    without, with_strip = (
        keystroke_counts(model, tokenizer, sample, batch_size=batch_size)
        if sample
        else (0, 0)
    )
    return EvalCounts(
        top1, top3, words, loss_sum, loss_count, without, with_strip, len(texts)
    )


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def combine(counts: Sequence[EvalCounts]) -> EvalMetrics:
    """The metrics of the pooled counts of many phones (nan where nothing counted)."""
    words = sum(c.word_targets for c in counts)
    loss_targets = sum(c.loss_targets for c in counts)
    without = sum(c.keys_without for c in counts)
    mean_loss = _ratio(sum(c.loss_sum for c in counts), loss_targets)
    return EvalMetrics(
        top1=_ratio(sum(c.top1_hits for c in counts), words),
        top3=_ratio(sum(c.top3_hits for c in counts), words),
        perplexity=math.exp(min(mean_loss, 709.0)) if loss_targets else math.nan,
        keystroke_savings=_ratio(without - sum(c.keys_with for c in counts), without),
        num_targets=words,
        num_messages=sum(c.num_messages for c in counts),
    )
