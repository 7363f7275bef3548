"""Tests of models.metrics: accuracy, perplexity and keystroke savings by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer
from models.batching import encode_messages, pad_batch
from models.config import ModelConfig
from models.metrics import (
    EvalMetrics,
    accuracy_and_loss,
    evaluate,
    message_keystrokes,
)
from models.model import NextWordModel
from models.suggest import WordIndex
from models.training import batch_loss

WORDS = ["the", "they", "then", "cat", "can", "hi"]


class BigramStub(nn.Module):
    """Logits that depend only on the current token: `table[token]`."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table  # (V, V)

    def forward(
        self, tokens: torch.Tensor, state: object = None
    ) -> tuple[torch.Tensor, None]:
        return self.table[tokens], None  # (B, T, V)


def bigram(tokenizer: WordTokenizer, rows: dict[str, dict[str, float]]) -> BigramStub:
    """A stub whose next-token probabilities after token `a` are `rows[a]`.

    The probability mass left over is shared evenly by every other token; rows
    not given are uniform.
    """
    size = tokenizer.vocab_size
    table = torch.zeros(size, size)
    for previous, masses in rows.items():
        probs = torch.full((size,), (1 - sum(masses.values())) / (size - len(masses)))
        for token, mass in masses.items():
            probs[tokenizer.backend.token_to_id(token)] = mass
        table[tokenizer.backend.token_to_id(previous)] = probs.log()
    return BigramStub(table)


@pytest.fixture
def words() -> WordTokenizer:
    """Specials 0-3, the 32 ASCII marks 4-35, then the=36 ... hi=41."""
    return WordTokenizer.from_words(WORDS)


# The next-word probabilities of `cat_model`.
CAT_ROWS = {
    "<bos>": {"the": 0.5},
    "the": {"can": 0.3, "then": 0.2, "they": 0.15, "cat": 0.25},
    "cat": {".": 0.5},
    ".": {"<eos>": 0.25},
}


@pytest.fixture
def cat_model(words: WordTokenizer) -> BigramStub:
    """On "the cat .": p(the)=1/2, the best; p(cat)=1/4, 2nd after can."""
    return bigram(words, CAT_ROWS)


def test_evaluate_topk_counts_only_word_targets(words, cat_model):
    # Prepare: targets the, cat, ".", <eos>; only "the" and "cat" are words.
    # "the" is the best word after <bos>; "cat" is 2nd after "the" (can .3 > .25).
    texts = ["the cat ."]

    # Execute
    metrics = evaluate(cat_model, words, texts)

    # Assert
    assert metrics.num_targets == 2
    assert metrics.top1 == 0.5
    assert metrics.top3 == 1.0
    assert metrics.num_messages == 1


@pytest.fixture
def fourth_cat_model(words: WordTokenizer) -> BigramStub:
    """After <bos> "the" is best; after "the", "cat" (0.1) is 4th of all words."""
    the = {**CAT_ROWS["the"], "cat": 0.1}
    return bigram(words, {"<bos>": CAT_ROWS["<bos>"], "the": the})


def test_evaluate_topk_misses_a_word_ranked_fourth(words, fourth_cat_model):
    # Prepare: after "the", cat trails can, then and they.
    texts = ["the cat"]

    # Execute
    metrics = evaluate(fourth_cat_model, words, texts)

    # Assert: "the" hits top-1 and top-3, "cat" neither.
    assert metrics.top1 == 0.5
    assert metrics.top3 == 0.5


def test_evaluate_top1_ignores_punctuation_and_special_predictions(words):
    # Prepare: after <bos> the comma and <eos> outrank "the", the best word.
    model = bigram(words, {"<bos>": {",": 0.4, "<eos>": 0.3, "the": 0.2}})

    # Execute
    metrics = evaluate(model, words, ["the"])

    # Assert: the strip shows words only, so "the" is the top-1 prediction.
    assert metrics.num_targets == 1
    assert metrics.top1 == 1.0


def test_evaluate_perplexity_hand_computed(words, cat_model):
    # Prepare: target probabilities 1/2, 1/4, 1/2, 1/4 (the, cat, ".", <eos>),
    # so mean cross-entropy is 1.5 ln 2 and perplexity 2 ** 1.5.
    texts = ["the cat ."]

    # Execute
    metrics = evaluate(cat_model, words, texts)

    # Assert
    assert metrics.perplexity == pytest.approx(2**1.5, rel=1e-5)


def test_evaluate_perplexity_of_uniform_model_is_vocab_size(words):
    # Prepare: every row uniform over the 42 tokens.
    model = bigram(words, {})

    # Execute
    metrics = evaluate(model, words, ["the cat .", "hi , hi"])

    # Assert
    assert metrics.perplexity == pytest.approx(42.0, rel=1e-5)


def test_accuracy_and_loss_is_token_weighted_mean(words):
    # Prepare: a seeded micro model; per-target cross-entropy over two sequences
    # of unequal length (3 and 2 targets), pooled.
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=words.vocab_size, embed_dim=4, hidden_dim=5)
    model = NextWordModel(config).eval()
    sequences = [[2, 5, 6, 3], [2, 7, 3]]
    with torch.no_grad():
        losses = [
            F.cross_entropy(model(torch.tensor([s[:-1]]))[0][0], torch.tensor(s[1:]))
            * (len(s) - 1)
            for s in sequences
        ]
    expected = float(sum(losses)) / 5

    # Execute: both sequences in one padded batch
    *_, loss_sum, loss_targets = accuracy_and_loss(
        model, words, sequences, batch_size=64
    )

    # Assert
    assert loss_targets == 5
    assert loss_sum / loss_targets == pytest.approx(expected, rel=1e-6)


def test_evaluate_perplexity_equals_exp_of_training_loss(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig, small_splits: CorpusSplits
):
    # Prepare: a seeded random model on the held-out users of the small slice,
    # including messages longer than a window; the training loss of all their
    # windows as one batch.
    torch.manual_seed(0)
    model = NextWordModel(tiny_model_config).eval()
    texts = small_splits.heldout_texts()[:60]
    sequences = encode_messages(tokenizer, texts, tiny_model_config.max_len)
    with torch.no_grad():
        batch = pad_batch(sequences, tokenizer.pad_id)
        loss = float(batch_loss(model, batch, tokenizer.pad_id))

    # Execute
    metrics = evaluate(
        model, tokenizer, texts, max_len=tiny_model_config.max_len, batch_size=16
    )

    # Assert
    assert metrics.perplexity == pytest.approx(math.exp(loss), rel=1e-4)
    assert 0 <= metrics.top1 <= metrics.top3 <= 1
    assert 0 <= metrics.keystroke_savings <= 1


def test_evaluate_keystroke_savings_hand_computed(words, fourth_cat_model):
    # Prepare: "the cat ." is 3 + (1 + 3) + 1 = 8 keys typed out. With the strip:
    # "the" shows at once (1 tap, space inserted); "cat" is 4th until "c" is
    # typed, then 2nd of can/cat (c + tap = 2); "." 1 key. 4 keys: saves 4/8.
    texts = ["the cat ."]

    # Execute
    metrics = evaluate(fourth_cat_model, words, texts)

    # Assert
    assert metrics.keystroke_savings == 0.5


def test_evaluate_keystroke_savings_sums_keys_over_messages(words, cat_model):
    # Prepare: "the cat ." takes 3 keys (the, cat at once, "."), of 8. "hi hi"
    # is 2 + 3 = 5 keys typed out. After <bos>, "the" leads and the other words
    # tie, so can, cat, hi (alphabetical) follow: hi shows after "h" (2 keys).
    # After "hi" all words tie and hi is 3rd: 1 tap, its space already there.
    texts = ["the cat .", "hi hi"]

    # Execute
    metrics = evaluate(cat_model, words, texts)

    # Assert: (8 + 5 - 3 - 3) / (8 + 5) = 7 / 13.
    assert metrics.keystroke_savings == pytest.approx(7 / 13)


def test_evaluate_keystroke_savings_of_empty_sample_is_nan(words, cat_model):
    # Prepare
    texts = ["the cat ."]

    # Execute
    metrics = evaluate(cat_model, words, texts, keystroke_texts=0)

    # Assert
    assert math.isnan(metrics.keystroke_savings)
    assert metrics.top1 == 0.5


def test_evaluate_empty_texts_gives_nan_rates(words, cat_model):
    # Execute
    metrics = evaluate(cat_model, words, [])

    # Assert
    assert math.isnan(metrics.top1) and math.isnan(metrics.perplexity)
    assert (metrics.num_targets, metrics.num_messages) == (0, 0)


def test_message_keystrokes_oov_word_and_punctuation_typed_in_full(words):
    # Prepare: "hi , dog hi": "dog" is out of vocabulary. Scores (sorted order
    # can, cat, hi, the, then, they) put "hi" first everywhere.
    index = WordIndex(words)
    pieces = ["hi", ",", "dog", "hi"]
    ids = words.encode("hi , dog hi")
    scores = np.tile(np.array([0.0, 0.0, 5.0, 1.0, 1.0, 1.0]), (4, 1))

    # Execute
    without, with_strip = message_keystrokes(pieces, ids, scores, index)

    # Assert: without: 2 + 1 + (1 + 3) + (1 + 2) = 10. With: "hi" 1 tap, ","
    # 1 (swallows the space), " dog" 4, " " 1 + "hi" 1 tap = 8.
    assert (without, with_strip) == (10, 8)


def test_message_keystrokes_word_shown_after_its_first_letter(words):
    # Prepare: sorted order can, cat, hi, the, then, they. "then" (0) trails the
    # five others at "", and among the, then, they at "t" it is 3rd.
    index = WordIndex(words)
    scores = np.array([[3.0, 3.0, 3.0, 2.0, 0.0, 1.0]])

    # Execute
    without, with_strip = message_keystrokes(["then"], [38], scores, index)

    # Assert: "t" + tap = 2 of 4 letters.
    assert (without, with_strip) == (4, 2)


def test_message_keystrokes_ties_break_alphabetically(words):
    # Prepare: all six words tie; alphabetically can, cat, hi come first.
    index = WordIndex(words)
    scores = np.zeros((1, 6))

    # Execute
    hi = message_keystrokes(["hi"], [41], scores, index)
    the = message_keystrokes(["the"], [36], scores, index)

    # Assert: "hi" shows at once (1); "the" after "t" (t + tap = 2).
    assert hi == (2, 1)
    assert the == (3, 2)


def test_eval_metrics_as_dict_has_every_field():
    # Prepare
    fields = {
        "top1": 0.25,
        "top3": 0.5,
        "perplexity": 80.0,
        "keystroke_savings": 0.3,
        "num_targets": 4,
        "num_messages": 2,
    }
    metrics = EvalMetrics(**fields)

    # Execute
    row = metrics.as_dict()

    # Assert: every field, under its own name, and nothing else
    assert row == fields
