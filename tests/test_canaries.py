"""Canaries: made from the vocabulary, dealt to users, planted in train text only."""

from __future__ import annotations

from collections import Counter

import pytest

from corpora.canaries import (
    CanaryConfig,
    CanaryConfigError,
    make_canaries,
    plant,
    vocabulary_words,
)
from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer


def test_vocabulary_words_are_the_tokenizers_words(tokenizer: WordTokenizer) -> None:
    # Prepare / Execute
    words = vocabulary_words(tokenizer)

    # Assert: the public 10,000, each one token of its own id.
    assert len(words) == 10_000
    assert tokenizer.encode(" ".join(words[:3])) == tokenizer.word_ids[:3]


def test_make_canaries_counts_shapes_and_users(tokenizer: WordTokenizer) -> None:
    # Prepare: 2 canaries for each of 3 repeat values, 2 users each, 3 controls.
    config = CanaryConfig(count=2, repeats=(1, 4, 16), phones_per_canary=2, controls=3)
    words = vocabulary_words(tokenizer)
    users = [f"u{k}" for k in range(20)]

    # Execute
    canaries = make_canaries(words, config, seed=0, users=users)

    # Assert
    planted = [c for c in canaries if c.planted]
    assert [c.repeats for c in canaries] == [1, 1, 4, 4, 16, 16, 0, 0, 0]
    assert all(len(c.text.split()) == 5 for c in canaries)
    assert all(w in set(words) for c in canaries for w in c.text.split())
    assert len({c.text for c in canaries}) == 9
    assert all(len(set(c.client_ids)) == 2 for c in planted)
    # 12 places dealt from 20 users: no user holds two canaries.
    assert len({u for c in planted for u in c.client_ids}) == 12
    assert all(c.client_ids == () for c in canaries[6:])


def test_make_canaries_replays_from_the_seed(tokenizer: WordTokenizer) -> None:
    # Prepare
    words, users = vocabulary_words(tokenizer), ["a", "b", "c"]

    # Execute
    first = make_canaries(words, CanaryConfig(), seed=3, users=users)
    again = make_canaries(words, CanaryConfig(), seed=3, users=users)
    other = make_canaries(words, CanaryConfig(), seed=4, users=users)

    # Assert
    assert first == again
    assert [c.text for c in first] != [c.text for c in other]


def test_make_canaries_needs_enough_users() -> None:
    # Prepare
    config = CanaryConfig(phones_per_canary=3)

    # Execute / Assert
    with pytest.raises(CanaryConfigError, match="3 users per canary"):
        make_canaries(["x", "y"], config, seed=0, users=["a", "b"])


def test_canary_config_rejects_zero_repeats() -> None:
    # Prepare / Execute / Assert
    with pytest.raises(CanaryConfigError):
        CanaryConfig(repeats=(0, 4))


def test_plant_inserts_copies_into_train_only(
    small_splits: CorpusSplits, tokenizer: WordTokenizer
) -> None:
    # Prepare: one canary of 4 copies and one of 1, on different users.
    config = CanaryConfig(count=1, repeats=(4, 1), controls=1)
    users = list(small_splits.training_users)
    canaries = make_canaries(vocabulary_words(tokenizer), config, seed=0, users=users)
    four, one, control = canaries

    # Execute
    planted = plant(small_splits, canaries, seed=0)

    # Assert: 4 and 1 copies where dealt, the original splits untouched.
    user4, user1 = four.client_ids[0], one.client_ids[0]
    before, after = small_splits.training_users[user4], planted.training_users[user4]
    assert Counter(after.train)[four.text] == 4
    assert Counter(planted.training_users[user1].train)[one.text] == 1
    assert len(after.train) == len(before.train) + 4
    assert after.future == before.future
    assert four.text not in small_splits.training_users[user4].train
    assert control.text not in planted.train_texts()
    assert planted.words_per_user[user4] == small_splits.words_per_user[user4] + 20
    assert planted.heldout_users == small_splits.heldout_users
    others = set(users) - {user4, user1}
    assert all(
        planted.training_users[u] == small_splits.training_users[u] for u in others
    )


def test_plant_keeps_the_users_own_messages_in_order(
    small_splits: CorpusSplits, tokenizer: WordTokenizer
) -> None:
    # Prepare
    users = list(small_splits.training_users)
    config = CanaryConfig(count=1, repeats=(16,), controls=0)
    (canary,) = make_canaries(vocabulary_words(tokenizer), config, seed=1, users=users)

    # Execute
    planted = plant(small_splits, [canary], seed=1)

    # Assert: removing the copies gives the user's history back.
    user = canary.client_ids[0]
    kept = tuple(t for t in planted.training_users[user].train if t != canary.text)
    assert kept == small_splits.training_users[user].train


def test_plant_rejects_an_unknown_user(small_splits: CorpusSplits) -> None:
    # Prepare
    config = CanaryConfig(count=1, repeats=(1,), controls=0)
    canaries = make_canaries(["x", "y", "z"], config, seed=0, users=["nobody"])

    # Execute / Assert
    with pytest.raises(KeyError, match="nobody"):
        plant(small_splits, canaries, seed=0)
