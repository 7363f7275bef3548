"""Per-user histories, caps, held-out users and chronological splits.

Splits depend only on `(seed, user)`, never on which other users exist, so adding
users to a corpus leaves every earlier user's side of the split unchanged.
"""

from __future__ import annotations

import gc
import hashlib
import math
import os
import pickle
import re
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import metadata
from typing import cast

from corpora.chitchat import load_chitchat
from corpora.jsonl import load_jsonl, read_bounded
from corpora.messages import CorpusError, Message


@dataclass(frozen=True)
class CorpusConfig:
    """Which corpus to read and how to cut it."""

    # "chitchat" for the Chit-Chat corpus in the installed wheel, else a JSONL path.
    # (Each `help` makes a command-line option: `models.settings`, `cli.options`.)
    source: str = field(
        default="chitchat",
        metadata={
            "help": "'chitchat' (the Chit-Chat corpus in the installed wheel) or a "
            'JSONL path with one {"user", "text", "timestamp"} message a line '
            "(default: %(default)s)",
            "flag": "corpus",
        },
    )
    # Words kept per user, oldest first: the top 10 Chit-Chat users hold 42 % of
    # all words, and an uncapped user would dominate both training and the metrics.
    max_words_per_user: int = field(
        default=4000, metadata={"help": "words kept per user, oldest first"}
    )
    # Users with fewer words have too little history to split or to learn from.
    min_words_per_user: int = field(
        default=30, metadata={"help": "users with fewer words are left out"}
    )
    # Users who never train; they measure generalisation to new people.
    heldout_fraction: float = field(
        default=0.1, metadata={"help": "share of users who never train"}
    )
    # The newest share of each training user's messages: their "future" text.
    future_fraction: float = field(
        default=0.2,
        metadata={"help": "newest share of each user's messages kept as future text"},
    )
    # Seeds the held-out draw.
    seed: int = 0
    # Training users kept, the first this many by id (None: all), for small runs
    # of any kind: the fleet's phones, the pooled data and the local-only users
    # all come from these. Held-out users are drawn before and keep their number.
    max_users: int | None = field(
        default=None,
        metadata={
            "help": "train on the first N training users by id, for a small run; "
            "the held-out users stay as they are (default: all)"
        },
    )

    def __post_init__(self) -> None:
        # Out-of-range settings would otherwise split silently into nonsense.
        checks = {
            "max_words_per_user": (self.max_words_per_user >= 1, "at least 1"),
            "min_words_per_user": (self.min_words_per_user >= 0, "at least 0"),
            "heldout_fraction": (0 <= self.heldout_fraction <= 1, "in [0, 1]"),
            "future_fraction": (0 <= self.future_fraction < 1, "in [0, 1)"),
            "max_users": (self.max_users is None or self.max_users >= 1, "at least 1"),
        }
        for name, (valid, expected) in checks.items():
            if not valid:
                raise CorpusError(
                    f"must be {expected}, not {getattr(self, name)}",
                    path=self.source,
                    field=name,
                )


@dataclass(frozen=True)
class UserHistory:
    """One training user's messages, oldest first, split at a point in time."""

    user: str
    train: tuple[str, ...]
    future: tuple[str, ...]


@dataclass
class CorpusSplits:
    """The corpus as the rest of fedtype sees it."""

    config: CorpusConfig
    training_users: dict[str, UserHistory]
    heldout_users: dict[str, tuple[str, ...]]
    # Users dropped by `min_words_per_user`, and JSONL lines skipped for empty text.
    dropped_users: int = 0
    skipped_empty: int = 0
    words_per_user: dict[str, int] = field(default_factory=dict)

    def train_texts(self) -> list[str]:
        """Every training user's train part: exactly the pooled central data set."""
        return [text for user in self.training_users.values() for text in user.train]

    def future_texts(self) -> list[str]:
        """Every training user's future part."""
        return [text for user in self.training_users.values() for text in user.future]

    def heldout_texts(self) -> list[str]:
        """Every held-out user's messages."""
        return [text for texts in self.heldout_users.values() for text in texts]


def load_messages(source: str) -> tuple[list[Message], int]:
    """Messages of a corpus source and the number of empty lines skipped."""
    if source == "chitchat":
        messages = load_chitchat()
        return [m for m in messages if m.text.strip()], 0
    loaded = load_jsonl(source)
    return loaded.messages, loaded.skipped_empty


def resolve_source(source: str) -> str:
    """A corpus source as a run stores it: "chitchat", or an absolute path."""
    return source if source == "chitchat" else os.path.abspath(source)


def corpus_fingerprint(source: str) -> str:
    """A short name of a corpus's contents: its SHA-256, or Chit-Chat's version.

    The Chit-Chat corpus is pinned by its wheel's version, so it is not hashed.
    """
    if source == "chitchat":
        try:
            return f"chitchat-dataset=={metadata.version('chitchat-dataset')}"
        except metadata.PackageNotFoundError:
            raise CorpusError(
                "the package chitchat-dataset==0.9.0 is not installed",
                path="chitchat",
            ) from None
    return "sha256:" + hashlib.sha256(read_bounded(source)).hexdigest()


def group_by_user(messages: list[Message]) -> dict[str, list[str]]:
    """Each user's texts ordered by timestamp (stable: ties keep file order)."""
    grouped: dict[str, list[Message]] = defaultdict(list)
    for message in messages:
        grouped[message.user].append(message)
    return {
        user: [m.text for m in sorted(items, key=lambda m: m.timestamp)]
        for user, items in sorted(grouped.items())
    }


_WORD = re.compile(r"\S+")


def first_words(text: str, count: int) -> str:
    """`text` up to the end of its `count`-th word (its own spacing kept)."""
    end = 0
    for number, match in enumerate(_WORD.finditer(text), start=1):
        end = match.end()
        if number == count:
            break
    return text[:end]


def cap_history(texts: list[str], max_words: int) -> list[str]:
    """The oldest messages whose words fit under `max_words`.

    Whole messages are kept while they fit; a first message that alone is longer
    than the cap is cut after its `max_words`-th word, so that no user, however
    long one of their messages, holds more than `max_words` words.
    """
    kept: list[str] = []
    words = 0
    for text in texts:
        count = len(text.split())
        if not kept and count > max_words:
            return [first_words(text, max_words)]
        if words + count > max_words:
            break
        kept.append(text)
        words += count
    return kept


def is_heldout(user: str, *, seed: int, fraction: float) -> bool:
    """Whether a user is held out: a hash of (seed, user), independent of others."""
    digest = hashlib.sha256(f"{seed}:{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def chronological_split(
    texts: list[str], future_fraction: float
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Oldest messages for training, the newest `future_fraction` as future."""
    n_future = math.floor(len(texts) * future_fraction + 0.5) if len(texts) > 1 else 0
    cut = len(texts) - n_future
    return tuple(texts[:cut]), tuple(texts[cut:])


def split_corpus(messages: list[Message], config: CorpusConfig) -> CorpusSplits:
    """Group, cap, filter and split messages as `config` says."""
    training: dict[str, UserHistory] = {}
    heldout: dict[str, tuple[str, ...]] = {}
    words: dict[str, int] = {}
    dropped = 0
    for user, texts in group_by_user(messages).items():
        texts = cap_history(texts, config.max_words_per_user)
        count = sum(len(t.split()) for t in texts)
        if count < config.min_words_per_user:
            dropped += 1
            continue
        words[user] = count
        if is_heldout(user, seed=config.seed, fraction=config.heldout_fraction):
            heldout[user] = tuple(texts)
        else:
            train, future = chronological_split(texts, config.future_fraction)
            training[user] = UserHistory(user=user, train=train, future=future)
    if config.max_users is not None:  # users come sorted by id: the first N stay
        training = dict(list(training.items())[: config.max_users])
    return CorpusSplits(
        config=config,
        training_users=training,
        heldout_users=heldout,
        dropped_users=dropped,
        words_per_user=words,
    )


def load_corpus(config: CorpusConfig) -> CorpusSplits:
    """Read `config.source` and split it.

    The split keeps part of the messages, scattered among the parse's freed
    objects, so the allocator could not hand that memory back (Chit-Chat: 160 MB
    resident for 16 MB of kept text); the splits are copied once into fresh
    memory after the parse's objects are gone.
    """
    packed = pickle.dumps(_read_and_split(config), protocol=pickle.HIGHEST_PROTOCOL)
    gc.collect()  # the parse leaves reference cycles behind
    return cast(CorpusSplits, pickle.loads(packed))


def _read_and_split(config: CorpusConfig) -> CorpusSplits:
    messages, skipped = load_messages(config.source)
    splits = split_corpus(messages, config)
    splits.skipped_empty = skipped
    return splits
