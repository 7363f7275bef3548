"""Evaluation: next-word accuracy, perplexity and keystroke savings.

Top-k accuracy follows FedJAX's `accuracy_no_eos` with out-of-vocabulary targets
dropped, and goes one step further towards the keyboard: only targets the
keyboard could ever suggest count (`tokenizer.word_ids`: not `<pad>`, `<unk>`,
`<bos>`, `<eos>` or punctuation), and the prediction is the best *word*, since the
suggestion strip shows nothing else. Perplexity is over every non-padding target,
`<eos>`, `<unk>` and punctuation included, so it equals `exp` of the training
loss (`models.training.batch_loss`).

The keystroke savings rate (KSR) is that of Trnka & McCoy 2008 ("Evaluating word
prediction: framing keystroke savings", ACL): an ideal user who taps a suggestion
the moment the intended word shows among the three of the strip. Its exact rules
are in `message_keystrokes`.

Every corner measures through one core, FedJAX's additive `Stat` idea: `count_metrics`
counts one model on some texts (`EvalCounts`: hits, targets, summed loss, keys),
counts add up exactly, and `combine` turns the pooled counts into `EvalMetrics`.
`evaluate` is `combine([count_metrics(...)])`; the fleet pools its phones' counts
and the local-only baseline its users' counts through the same `combine`, so the
federated, central and local-only figures are computed by the same arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from corpora.samples import evenly_spaced
from corpora.tokenizer import WordTokenizer
from models.batching import encode_messages, make_batches, pad_batch
from models.suggest import WORD, WordIndex

# Suggestions the strip shows: the keystroke-savings user sees this many words.
STRIP_SIZE = 3
# Most (message x position) rows whose logits one keystroke-savings pass holds:
# 4,096 rows of a 10,036-word vocabulary are 164 MB of float32.
_KSR_ROWS = 4096
# A message as the keystroke simulation reads it: its pieces and their token ids.
_Message = tuple[list[str], list[int]]


@dataclass(frozen=True)
class EvalMetrics:
    """The model's quality on one set of messages."""

    top1: float  # next-word accuracy, in [0, 1]
    top3: float  # the target among the three best words, in [0, 1]
    perplexity: float  # exp(mean cross-entropy) over all non-padding targets
    keystroke_savings: float  # share of keystrokes the strip saves, in [0, 1]
    num_targets: int  # targets counted for top-k
    num_messages: int  # messages evaluated (the KSR uses a fixed sample of them)

    def as_dict(self) -> dict[str, float | int]:
        """The metrics as a JSON-ready dict (metrics.jsonl rows)."""
        return asdict(self)


@dataclass(frozen=True)
class EvalCounts:
    """Additive counts behind `EvalMetrics`: what a phone or a user reports."""

    top1_hits: int
    top3_hits: int
    word_targets: int  # targets counted for top-k (suggestible words)
    loss_sum: float  # summed cross-entropy over every non-padding target
    loss_targets: int
    keys_without: int  # keystrokes of the keystroke sample without the strip
    keys_with: int  # and with it
    num_messages: int


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


@torch.inference_mode()
def accuracy_and_loss(
    model: nn.Module,
    tokenizer: WordTokenizer,
    sequences: list[list[int]],
    *,
    batch_size: int,
) -> tuple[int, int, int, float, int]:
    """Top-1 hits, top-3 hits, word targets, summed cross-entropy, loss targets."""
    pad = tokenizer.pad_id
    is_word = _word_mask(tokenizer)
    top1 = top3 = words = 0
    loss_sum, loss_count = 0.0, 0
    for batch in make_batches(sequences, batch_size, pad_id=pad):
        logits, _ = model(batch[:, :-1])  # (B, L, V)
        targets = batch[:, 1:]  # (B, L)
        loss_sum += float(
            F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(),
                targets.reshape(-1),
                ignore_index=pad,
                reduction="sum",
            )
        )
        loss_count += int((targets != pad).sum())
        hits = _strip_hits(logits, targets, is_word)  # (N, 2)
        top1 += int(hits[:, 0].sum())
        top3 += int(hits[:, 1].sum())
        words += hits.shape[0]
    return top1, top3, words, loss_sum, loss_count


def _word_mask(tokenizer: WordTokenizer) -> torch.Tensor:
    """(V,) True where a token is a suggestible word."""
    is_word = torch.zeros(tokenizer.vocab_size, dtype=torch.bool)
    is_word[tokenizer.word_ids] = True
    return is_word


def _strip_hits(
    logits: torch.Tensor, targets: torch.Tensor, is_word: torch.Tensor
) -> torch.Tensor:
    """(N, 2) booleans of each word target, in row-major order: top-1, top-3."""
    counted = is_word[targets]  # (B, L)
    best = logits[counted].masked_fill(~is_word, -torch.inf)  # (N, V)
    best = best.topk(STRIP_SIZE, dim=-1).indices  # (N, 3)
    hits = best == targets[counted].unsqueeze(-1)  # (N, 3)
    return torch.stack([hits[:, 0], hits.any(dim=-1)], dim=-1)


@torch.inference_mode()
def word_hits(
    model: nn.Module,
    tokenizer: WordTokenizer,
    texts: list[str],
    *,
    max_len: int,
    batch_size: int = 128,
) -> torch.Tensor:
    """(N, 2) booleans, top-1 and top-3, for every word target of `texts`.

    The targets come in a fixed order that depends on the texts alone, so two
    models' rows pair target by target (a paired test of two models).
    """
    model.eval()
    is_word = _word_mask(tokenizer)
    sequences = encode_messages(tokenizer, texts, max_len)
    rows = [torch.zeros(0, 2, dtype=torch.bool)]
    for batch in make_batches(sequences, batch_size, pad_id=tokenizer.pad_id):
        logits, _ = model(batch[:, :-1])  # (B, L, V)
        rows.append(_strip_hits(logits, batch[:, 1:], is_word))
    return torch.cat(rows)


def message_keystrokes(
    pieces: list[str], ids: list[int], scores: np.ndarray, index: WordIndex
) -> tuple[int, int]:
    """Keystrokes of one message without and with the suggestion strip.

    Rules (lower case throughout: the tokenizer lowercases, the user never shifts):
    - Text is typed piece by piece, as the tokenizer cuts it. A word is preceded
      by one space, except the message's first piece; a punctuation mark is not
      ("hello, how are you?" is 19 keys, exactly its characters).
    - Without the strip every character and every such space is a key.
    - With it, before each letter of a word (the empty prefix included) the strip
      shows the 3 best vocabulary words starting with the letters typed so far,
      from the model's one distribution at that word position. As soon as the
      word shows, the user taps it: one key. The keyboard then inserts the space
      after it, so the space before the next word costs nothing; a punctuation
      mark typed next swallows that space, as Gboard and iOS do, and costs its
      one key.
    - Out-of-vocabulary words and punctuation are typed in full.

    Args:
        pieces: The message's normalised pieces (`WordTokenizer.tokenize`).
        ids: Their token ids, one each.
        scores: (len(pieces), W): the model's scores over `index`, the row of a
            piece computed from the pieces before it.
        index: The sorted suggestible words.

    Returns:
        (keys without the strip, keys with it).
    """
    without = with_strip = 0
    space_inserted = False
    for i, (piece, token) in enumerate(zip(pieces, ids, strict=True)):
        if WORD.fullmatch(piece) is None:
            without += len(piece)
            with_strip += len(piece)
            space_inserted = False
            continue
        space = 1 if i > 0 else 0
        without += space + len(piece)
        with_strip += 0 if space_inserted else space
        typed = _letters_before_tap(
            piece, int(index.position_of[token]), scores[i], index
        )
        space_inserted = typed is not None
        with_strip += len(piece) if typed is None else typed + 1
    return without, with_strip


def _letters_before_tap(
    word: str, position: int, scores: np.ndarray, index: WordIndex
) -> int | None:
    """Letters typed before `word` shows in the strip, or None if it never does."""
    if position < 0:
        return None
    for typed in range(len(word)):
        if index.rank(scores, word[:typed], position) < STRIP_SIZE:
            return typed
    return None


def _chunks(messages: list[_Message], batch_size: int) -> list[list[_Message]]:
    """Length-sorted messages cut into batches of at most `_KSR_ROWS` positions."""
    chunks: list[list[_Message]] = []
    for message in messages:
        last = chunks[-1] if chunks else None
        if (
            last is None
            or len(last) >= batch_size
            or (len(last) + 1) * len(message[1]) > _KSR_ROWS
        ):
            chunks.append([message])
        else:
            last.append(message)
    return chunks


@torch.inference_mode()
def keystroke_counts(
    model: nn.Module, tokenizer: WordTokenizer, texts: list[str], *, batch_size: int
) -> tuple[int, int]:
    """Total keystrokes of `texts` without and with the strip (one pass a batch)."""
    index = WordIndex(tokenizer)
    messages = [
        (pieces, ids)
        for pieces, ids in zip(
            (tokenizer.tokenize(t) for t in texts),
            tokenizer.encode_batch(texts),
            strict=True,
        )
        if ids
    ]
    messages.sort(key=lambda m: len(m[1]))
    without = with_strip = 0
    for chunk in _chunks(messages, batch_size):
        rows = [[tokenizer.bos_id, *ids[:-1]] for _, ids in chunk]
        logits, _ = model(pad_batch(rows, tokenizer.pad_id))  # (B, L, V)
        scores = logits.float()[..., index.ids_tensor]  # (B, L, W): row t -> piece t
        scores = torch.nan_to_num(scores, nan=-torch.inf).numpy()
        for row, (pieces, ids) in enumerate(chunk):
            a, b = message_keystrokes(pieces, ids, scores[row, : len(ids)], index)
            without, with_strip = without + a, with_strip + b
    return without, with_strip


def count_metrics(
    model: nn.Module,
    tokenizer: WordTokenizer,
    texts: list[str],
    *,
    max_len: int,
    keystroke_texts: int,
    batch_size: int = 128,
) -> EvalCounts:
    """The additive counts of `model` on `texts`.

    Args:
        model: Maps (B, T) token ids to ((B, T, V) logits, state).
        tokenizer: The tokenizer the model was trained with.
        texts: Messages, one a string.
        max_len: Window length for accuracy and perplexity, as in training.
        keystroke_texts: Size of the fixed, evenly spaced sample of `texts` the
            keystrokes are simulated on (each message whole, unwindowed).
        batch_size: Messages per forward pass.
    """
    model.eval()
    sequences = encode_messages(tokenizer, texts, max_len)
    top1, top3, words, loss_sum, loss_count = accuracy_and_loss(
        model, tokenizer, sequences, batch_size=batch_size
    )
    sample = evenly_spaced(texts, keystroke_texts) if keystroke_texts > 0 else []
    without, with_strip = keystroke_counts(
        model, tokenizer, sample, batch_size=batch_size
    )
    return EvalCounts(
        top1_hits=top1,
        top3_hits=top3,
        word_targets=words,
        loss_sum=loss_sum,
        loss_targets=loss_count,
        keys_without=without,
        keys_with=with_strip,
        num_messages=len(texts),
    )


def combine(counts: Sequence[EvalCounts]) -> EvalMetrics:
    """The metrics of pooled counts (rates are nan where nothing was counted)."""
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


def evaluate(
    model: nn.Module,
    tokenizer: WordTokenizer,
    texts: list[str],
    *,
    max_len: int = 32,
    batch_size: int = 128,
    keystroke_texts: int = 400,
) -> EvalMetrics:
    """Top-1/top-3 word accuracy, perplexity and keystroke savings on `texts`.

    `combine([count_metrics(...)])`: see `count_metrics` for the arguments.

    Returns:
        The metrics; rates are nan when `texts` has nothing to count.
    """
    counts = count_metrics(
        model,
        tokenizer,
        texts,
        max_len=max_len,
        keystroke_texts=keystroke_texts,
        batch_size=batch_size,
    )
    return combine([counts])
