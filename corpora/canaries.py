"""Canaries: random secret phrases planted in training text to measure memorisation.

The Secret Sharer (Carlini et al. 2019, arXiv 1802.08232) inserts random
sequences into the training data and asks how much more likely the trained model
finds them than sequences of the same shape it never saw (their exposure,
`models.exposure`). Gboard ran it in federated training (Ramaswamy et al. 2020,
arXiv 2009.10031): canaries of random words from the vocabulary, each given to a
few users and repeated a chosen number of times in each one's data, so that the
exposure can be read against how often and by how many users a secret was typed.

Here a canary is `words_per_canary` words drawn uniformly (with replacement) from
the public vocabulary, so every word is in vocabulary and the candidates it is
ranked against can be drawn from exactly the same distribution. Canaries go into
the TRAIN part of the chosen training users only (never the future text, so the
metrics stay clean); controls are made the same way and never planted, and their
exposure is the baseline a planted one must beat. Planting adds words beyond
`max_words_per_user`. Every choice derives from the seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from corpora.corpus import CorpusSplits, UserHistory
from corpora.tokenizer import WordTokenizer

# Most canaries per repeat value: 1,000 already plants 21,000 messages with the
# default repeats, and the exposure probe scores every one at each evaluation.
MAX_COUNT = 1000


class CanaryConfigError(ValueError):
    """A canary setting that cannot work; the message says which."""


@dataclass(frozen=True)
class CanaryConfig:
    """How many canaries, how long, how often repeated and by how many users."""

    # Canaries planted for each value of `repeats`.
    count: int = 5
    # Copies of a canary in each chosen user's train text; Ramaswamy et al. 2020
    # vary this to see where memorisation starts.
    repeats: tuple[int, ...] = (1, 4, 16)
    # Random vocabulary words per canary: 5 gives 10,000^5 possible phrases.
    words_per_canary: int = 5
    # Training users given each canary (each gets all `repeats` copies).
    phones_per_canary: int = 1
    # Canaries made the same way but never planted: the exposure baseline.
    controls: int = 5

    def __post_init__(self) -> None:
        if not 0 <= self.count <= MAX_COUNT or not 0 <= self.controls <= MAX_COUNT:
            raise CanaryConfigError(
                f"count and controls must lie in [0, {MAX_COUNT}]: "
                f"{self.count}, {self.controls}"
            )
        if any(r < 1 for r in self.repeats):
            raise CanaryConfigError(f"every repeat count must be >= 1: {self.repeats}")
        if self.words_per_canary < 1 or self.phones_per_canary < 1:
            raise CanaryConfigError("words_per_canary and phones_per_canary >= 1")


@dataclass(frozen=True)
class Canary:
    """One secret phrase and where it was planted."""

    text: str  # the words joined by single spaces
    repeats: int  # copies in each of its users' train text; 0 for a control
    # Training users holding it: each is the client_id of its phone when phones
    # are not sharded (FleetConfig.messages_per_phone); empty for a control.
    client_ids: tuple[str, ...]

    @property
    def planted(self) -> bool:
        """Whether the canary is in some training text (not a control)."""
        return self.repeats > 0 and bool(self.client_ids)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: text, repeats and client_ids (a list)."""
        return {
            "text": self.text,
            "repeats": self.repeats,
            "client_ids": list(self.client_ids),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Canary:
        """The canary `to_dict` wrote (KeyError, TypeError or ValueError if not)."""
        client_ids = data["client_ids"]
        if not isinstance(data["text"], str) or not isinstance(client_ids, list):
            raise TypeError("text must be a string and client_ids a list")
        return cls(str(data["text"]), int(data["repeats"]), tuple(map(str, client_ids)))


def vocabulary_words(tokenizer: WordTokenizer) -> list[str]:
    """The tokenizer's word tokens (no specials, no punctuation), in id order."""
    return [tokenizer.id_to_token[i] for i in tokenizer.word_ids]


def _rng(seed: int, *keys: object) -> np.random.Generator:
    text = ":".join(str(k) for k in (seed, *keys))
    return np.random.default_rng(
        int.from_bytes(hashlib.sha256(text.encode()).digest()[:8])
    )


def make_canaries(
    vocabulary_words: Sequence[str],
    config: CanaryConfig,
    *,
    seed: int,
    users: Sequence[str],
) -> list[Canary]:
    """`config.count` canaries per repeat value, then `config.controls` controls.

    Users are dealt from a seeded shuffle of `users`, so canaries fall on
    different users while there are enough of them.

    Raises:
        CanaryConfigError: with fewer users than `phones_per_canary`, or too
            small a vocabulary for distinct canaries.
    """
    planted = config.count * len(config.repeats)
    if planted and len(users) < config.phones_per_canary:
        raise CanaryConfigError(
            f"{config.phones_per_canary} users per canary, {len(users)} available"
        )
    texts = _distinct_texts(
        vocabulary_words, config.words_per_canary, planted + config.controls, seed
    )
    dealt = _deal(list(users), planted * config.phones_per_canary, seed)
    canaries = []
    repeats = [r for r in config.repeats for _ in range(config.count)]
    for k, r in enumerate(repeats):
        chosen = dealt[
            k * config.phones_per_canary : (k + 1) * config.phones_per_canary
        ]
        canaries.append(Canary(texts[k], r, tuple(chosen)))
    canaries.extend(Canary(text, 0, ()) for text in texts[planted:])
    return canaries


def _distinct_texts(
    words: Sequence[str], length: int, count: int, seed: int
) -> list[str]:
    if len(words) ** length < 2 * count:
        raise CanaryConfigError("too small a vocabulary for distinct canaries")
    rng = _rng(seed, "canary-words")
    texts: list[str] = []
    while len(texts) < count:
        text = " ".join(words[i] for i in rng.integers(0, len(words), size=length))
        if text not in texts:
            texts.append(text)
    return texts


def _deal(users: list[str], count: int, seed: int) -> list[str]:
    """`count` users from seeded shuffles of `users`, one shuffle after another."""
    rng = _rng(seed, "canary-users")
    dealt: list[str] = []
    while len(dealt) < count:
        dealt.extend(users[i] for i in rng.permutation(len(users)))
    return dealt[:count]


def plant(
    splits: CorpusSplits, canaries: Sequence[Canary], *, seed: int
) -> CorpusSplits:
    """New splits with each canary's copies inserted into its users' train text.

    Copies go in at seeded random places among the user's messages; future
    text, held-out users and `splits` itself are left unchanged.

    Raises:
        KeyError: when a canary names a user who is not a training user.
    """
    copies: dict[str, list[str]] = {}
    for canary in canaries:
        for user in canary.client_ids:
            if user not in splits.training_users:
                raise KeyError(f"canary user {user!r} is not a training user")
            copies.setdefault(user, []).extend([canary.text] * canary.repeats)
    users = dict(splits.training_users)
    words = dict(splits.words_per_user)
    for user, texts in copies.items():
        users[user] = _with_copies(users[user], texts, _rng(seed, "plant", user))
        if user in words:
            words[user] += sum(len(t.split()) for t in texts)
    return dataclasses.replace(splits, training_users=users, words_per_user=words)


def _with_copies(
    history: UserHistory, texts: list[str], rng: np.random.Generator
) -> UserHistory:
    train = list(history.train)
    for text in texts:
        train.insert(int(rng.integers(0, len(train) + 1)), text)
    return dataclasses.replace(history, train=tuple(train))
