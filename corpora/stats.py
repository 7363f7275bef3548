"""Statistics of a corpus as fedtype cuts it: users, words, splits, vocabulary cover.

Words are whitespace-separated pieces, the unit `CorpusConfig`'s caps count in.
The out-of-vocabulary rate counts the tokenizer's word tokens instead (punctuation
left out): the share of them that become `<unk>`, which the model can never
suggest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from corpora.corpus import CorpusSplits
from corpora.messages import Message
from corpora.tokenizer import WORD, WordTokenizer

# Users whose share of all words `WordDistribution.top_share` reports.
TOP_USERS = 10


@dataclass(frozen=True)
class WordDistribution:
    """How words are spread over users."""

    users: int
    minimum: int
    median: float
    p90: float  # 90th percentile, linearly interpolated
    maximum: int
    top_share: float  # share of all words held by the `TOP_USERS` wordiest users


@dataclass(frozen=True)
class PartStats:
    """Size and vocabulary cover of one part of the split."""

    messages: int
    words: int
    word_tokens: int  # the tokenizer's word tokens, punctuation not counted
    unknown_tokens: int  # of which map to <unk>

    @property
    def oov_rate(self) -> float:
        """Share of word tokens that map to <unk> (nan for an empty part)."""
        if not self.word_tokens:
            return float("nan")
        return self.unknown_tokens / self.word_tokens


@dataclass(frozen=True)
class CorpusStats:
    """Everything `fedtype corpus stats` shows."""

    source: str
    users: int  # distinct authors of at least one non-empty message
    training_users: int
    heldout_users: int
    dropped_users: int  # below `min_words_per_user` after the cap
    messages: int  # non-empty messages read
    words: int  # their words, before the cap
    skipped_empty: int  # JSONL lines skipped for empty text
    before_cap: WordDistribution  # over every user, uncapped
    after_cap: WordDistribution  # over kept users, capped
    train: PartStats  # training users' older messages
    future: PartStats  # training users' newest messages
    heldout: PartStats  # held-out users' messages
    vocab_size: int  # the tokenizer's, specials and punctuation included

    @property
    def kept(self) -> PartStats:
        """The three parts together: what is left after the cap and the minimum."""
        parts = (self.train, self.future, self.heldout)
        return PartStats(
            messages=sum(p.messages for p in parts),
            words=sum(p.words for p in parts),
            word_tokens=sum(p.word_tokens for p in parts),
            unknown_tokens=sum(p.unknown_tokens for p in parts),
        )


def word_count(text: str) -> int:
    """Whitespace-separated words of `text`, as the per-user cap counts them."""
    return len(text.split())


def word_distribution(counts: Iterable[int]) -> WordDistribution:
    """Min, median, p90, max and top-user share of per-user word counts."""
    values = np.array(sorted(counts, reverse=True), dtype=np.int64)
    if values.size == 0:
        nan = float("nan")
        return WordDistribution(0, 0, nan, nan, 0, nan)
    total = int(values.sum())
    top = int(values[:TOP_USERS].sum())
    return WordDistribution(
        users=int(values.size),
        minimum=int(values.min()),
        median=float(np.median(values)),
        p90=float(np.percentile(values, 90)),
        maximum=int(values.max()),
        top_share=top / total if total else float("nan"),
    )


def word_token_counts(tokenizer: WordTokenizer, texts: Iterable[str]) -> Counter[str]:
    """How often each word token occurs in `texts` after normalisation."""
    normalizer = tokenizer.backend.normalizer
    counts: Counter[str] = Counter()
    for text in texts:
        # `WORD` over the normalised text finds the tokenizer's own words, several
        # times faster than pre-tokenizing message by message.
        counts.update(WORD.findall(normalizer.normalize_str(text)))
    return counts


def part_stats(tokenizer: WordTokenizer, texts: list[str]) -> PartStats:
    """Message, word and out-of-vocabulary counts of `texts`."""
    # One normalisation call over the joined texts: a newline never joins words.
    tokens = word_token_counts(tokenizer, ["\n".join(texts)])
    vocabulary = tokenizer.backend.get_vocab()
    return PartStats(
        messages=len(texts),
        words=sum(word_count(t) for t in texts),
        word_tokens=sum(tokens.values()),
        unknown_tokens=sum(n for w, n in tokens.items() if w not in vocabulary),
    )


def corpus_stats(
    messages: list[Message], splits: CorpusSplits, tokenizer: WordTokenizer
) -> CorpusStats:
    """Statistics of `messages` as `splits` cut them, with `tokenizer`'s OOV rate.

    Args:
        messages: Every non-empty message read, before grouping and the cap.
        splits: `split_corpus(messages, ...)`.
        tokenizer: The vocabulary whose out-of-vocabulary rate to measure.
    """
    uncapped: Counter[str] = Counter()
    for message in messages:
        uncapped[message.user] += word_count(message.text)
    return CorpusStats(
        source=splits.config.source,
        users=len(uncapped),
        training_users=len(splits.training_users),
        heldout_users=len(splits.heldout_users),
        dropped_users=splits.dropped_users,
        messages=len(messages),
        words=sum(uncapped.values()),
        skipped_empty=splits.skipped_empty,
        before_cap=word_distribution(uncapped.values()),
        after_cap=word_distribution(splits.words_per_user.values()),
        train=part_stats(tokenizer, splits.train_texts()),
        future=part_stats(tokenizer, splits.future_texts()),
        heldout=part_stats(tokenizer, splits.heldout_texts()),
        vocab_size=tokenizer.vocab_size,
    )
