"""Tests of models.suggest: next words, completions, case, the cache, odd input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from corpora.tokenizer import WordTokenizer
from models.baseline import UnigramModel
from models.config import ModelConfig
from models.model import NextWordModel
from models.suggest import Suggester, WordIndex

WORDS = ["the", "they", "then", "cat", "can", "hi", "i", "i'm", "how", "hope"]


class BigramStub(nn.Module):
    """Logits `table[token]`, with a dummy state; records the tokens it is fed."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table  # (V, V)
        self.calls: list[list[int]] = []

    def forward(
        self, tokens: torch.Tensor, state: object = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(tokens[0].tolist())
        return self.table[tokens], torch.zeros(1)  # (B, T, V)


def bigram(tokenizer: WordTokenizer, rows: dict[str, dict[str, float]]) -> BigramStub:
    """A stub whose logits after token `a` are `rows[a]` (0 for tokens not given)."""
    size = tokenizer.vocab_size
    table = torch.zeros(size, size)
    for previous, logits in rows.items():
        for token, logit in logits.items():
            table[tokenizer.backend.token_to_id(previous)][
                tokenizer.backend.token_to_id(token)
            ] = logit
    return BigramStub(table)


@pytest.fixture
def words() -> WordTokenizer:
    return WordTokenizer.from_words(WORDS)


@pytest.fixture
def stub(words: WordTokenizer) -> BigramStub:
    """After <bos>: how, hi, i'm; after "the": can, then, they; after "hi": i, i'm."""
    return bigram(
        words,
        {
            "<bos>": {"how": 3.0, "hi": 2.0, "i'm": 1.0},
            "the": {"can": 3.0, "then": 2.0, "they": 1.5, "cat": 1.0},
            "hi": {"i": 3.0, "i'm": 2.0},
            ".": {"the": 3.0, "how": 2.0, "hi": 1.0},
        },
    )


@pytest.fixture
def tiny_model(tiny_model_config: ModelConfig) -> NextWordModel:
    torch.manual_seed(0)
    return NextWordModel(tiny_model_config)


@pytest.mark.parametrize(
    "expected",
    [
        pytest.param(
            {"the ": ["can", "then", "they"]}, id="predicts_next_word_after_space"
        ),
        # Only can and cat start with "c"; can scores 3, cat 1.
        pytest.param({"the c": ["can", "cat"]}, id="completes_typed_prefix"),
        pytest.param(
            {
                "": ["How", "Hi", "I'm"],
                "hi. ": ["The", "How", "Hi"],
                "the ": ["can", "then", "they"],
            },
            id="capitalises_at_sentence_start",
        ),
        # How (3) beats hope (0) after <bos>; then 2 > they 1.5 > the 0.
        pytest.param(
            {
                "Ho": ["How", "Hope"],
                "HO": ["HOW", "HOPE"],
                "the TH": ["THEN", "THEY", "THE"],
            },
            id="keeps_typed_case",
        ),
        pytest.param(
            {"hi ": ["I", "I'm", "can"], "hi i": ["I", "I'm"]},
            id="writes_i_upper_case",
        ),
    ],
)
def test_suggester_suggests(words, stub, expected: dict[str, list[str]]):
    # Prepare
    suggester = Suggester(stub, words)

    # Execute: each text in turn, as typed.
    result = {text: suggester.suggest(text) for text in expected}

    # Assert
    assert result == expected


def test_suggester_respects_k(words, stub):
    # Prepare
    suggester = Suggester(stub, words)

    # Execute
    one, none = suggester.suggest("the ", k=1), suggester.suggest("the ", k=0)

    # Assert
    assert (one, none) == (["can"], [])


def test_suggester_breaks_ties_alphabetically(words):
    # Prepare: every word ties, so the strip is the alphabetical first three.
    suggester = Suggester(bigram(words, {}), words)

    # Execute
    result = suggester.suggest("the ")

    # Assert
    assert result == ["can", "cat", "hi"]


def test_suggester_never_suggests_specials_or_punctuation(words):
    # Prepare: after "the", specials and marks outscore every word; "hi" is 5th.
    model = bigram(
        words,
        {"the": {",": 9.0, "<eos>": 8.0, "<unk>": 7.0, "<pad>": 6.0, "hi": 5.0}},
    )
    suggester = Suggester(model, words)

    # Execute
    result = suggester.suggest("the ")

    # Assert: hi, then alphabetical ties can, cat.
    assert result == ["hi", "can", "cat"]


def test_suggester_reuses_cached_context_while_typing_a_word(words, stub):
    # Prepare
    suggester = Suggester(stub, words)

    # Execute: four keystrokes in one word, then a space.
    for text in ("the ", "the c", "the ca", "the cat"):
        suggester.suggest(text)
    suggester.suggest("the cat ")

    # Assert: one pass for <bos> the; the next word feeds only "cat" (id 39).
    assert stub.calls == [[words.bos_id, 36], [39]]


def test_suggester_set_model_drops_the_cache(words, stub):
    # Prepare
    other = bigram(words, {"the": {"they": 5.0, "hi": 4.0, "cat": 3.0}})
    suggester = Suggester(stub, words)
    before = suggester.suggest("the ")

    # Execute
    suggester.set_model(other)
    after = suggester.suggest("the ")

    # Assert
    assert before == ["can", "then", "they"]
    assert after == ["they", "hi", "cat"]


def test_suggester_incremental_typing_matches_fresh_suggester(
    tokenizer: WordTokenizer, tiny_model: NextWordModel
):
    # Prepare: a message longer than the 16-token window, typed key by key.
    message = "so what do you think about the new place , is it good or not ? i am"
    typing = Suggester(tiny_model, tokenizer)
    prefixes = [message[:end] for end in range(0, len(message) + 1, 3)]

    # Execute
    typed = [typing.suggest(text) for text in prefixes]
    fresh = [Suggester(tiny_model, tokenizer).suggest(text) for text in prefixes]

    # Assert
    assert typed == fresh


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\n\t\x00",
        "\ud800 lone surrogate ",
        "😀😀😀 ",
        "héllo wörld ñ",
        "你好 世界",
        "xqzv qwrtz plmkj ",
        "don\u2019",
        "’",
        "a" * 100_000,
        "how are you " * 5_000,
        "ﬁ",
    ],
)
def test_suggester_survives_odd_input(
    tokenizer: WordTokenizer, tiny_model: NextWordModel, text: str
):
    # Prepare
    suggester = Suggester(tiny_model, tokenizer)
    vocabulary = {tokenizer.id_to_token[i] for i in tokenizer.word_ids}

    # Execute
    result = suggester.suggest(text)

    # Assert
    assert len(result) <= 3
    # A typed curly apostrophe is kept as typed: "don’" completes to "don’t".
    assert all(w.lower().replace("\u2019", "'") in vocabulary for w in result)


def test_suggester_odd_input_cases_with_known_answers(tokenizer, tiny_model):
    # Prepare
    suggester = Suggester(tiny_model, tokenizer)

    # Execute
    cjk = suggester.suggest("你好")
    long_word = suggester.suggest("a" * 100_000)
    pending_apostrophe = suggester.suggest("don\u2019")

    # Assert: no word starts with these; "don’" completes to the only "don'"
    # word, "don't", in the user's apostrophe.
    assert cjk == [] and long_word == []
    assert pending_apostrophe == ["don\u2019t"]


def test_suggester_works_with_stateless_unigram_model(words):
    # Prepare: add-one counts: the 3, cat 2, hi 2, every other word 1.
    model = UnigramModel.fit(words, ["the cat", "the hi"])
    suggester = Suggester(model, words)

    # Execute: the second context extends the first, with no state to reuse.
    at_start = suggester.suggest("")
    after_the = suggester.suggest("the ")

    # Assert: cat and hi tie and sort alphabetically.
    assert at_start == ["The", "Cat", "Hi"]
    assert after_the == ["the", "cat", "hi"]


def test_word_index_span_and_top_k(words):
    # Prepare: sorted: can cat hi hope how i i'm the then they.
    index = WordIndex(words)
    scores = np.array([0.0, 1.0, 0.0, 4.0, 5.0, 0.0, 0.0, 2.0, 2.0, 3.0])

    # Execute
    span = index.span("th")
    best = [index.words[p] for p in index.top_k(scores, "", 4)]
    with_t = [index.words[p] for p in index.top_k(scores, "t", 3)]

    # Assert: the and then tie at 2; "the" sorts first.
    assert index.words[:5] == ["can", "cat", "hi", "hope", "how"]
    assert span == (7, 10)
    assert best == ["how", "hope", "they", "the"]
    assert with_t == ["they", "the", "then"]
