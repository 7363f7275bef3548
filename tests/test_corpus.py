"""Per-user histories: grouping, the cap, the minimum, held-out users and splits."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from corpora.corpus import (
    CorpusConfig,
    CorpusSplits,
    cap_history,
    chronological_split,
    group_by_user,
    is_heldout,
    load_corpus,
    split_corpus,
)
from corpora.messages import CorpusError, Message


def message(user: str, text: str, timestamp: float) -> Message:
    return Message(user=user, text=text, timestamp=timestamp)


def sides(splits: CorpusSplits) -> dict[str, object]:
    """Each kept user's side of the split: their held-out texts or train/future."""
    result: dict[str, object] = dict(splits.heldout_users)
    for user, history in splits.training_users.items():
        result[user] = (history.train, history.future)
    return result


def test_group_by_user_orders_by_timestamp_and_keeps_ties_in_file_order() -> None:
    # Prepare
    messages = [
        message("b", "late", 9.0),
        message("a", "tie one", 5.0),
        message("a", "early", 1.0),
        message("a", "tie two", 5.0),
    ]

    # Execute
    grouped = group_by_user(messages)

    # Assert
    assert grouped == {"a": ["early", "tie one", "tie two"], "b": ["late"]}


def test_chronological_split_ten_messages_is_eight_and_two() -> None:
    # Prepare
    texts = [f"m{i}" for i in range(10)]

    # Execute
    train, future = chronological_split(texts, 0.2)

    # Assert
    assert train == ("m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7")
    assert future == ("m8", "m9")


@pytest.mark.parametrize(
    ("count", "fraction", "expected"),
    # 3 x 0.2 = 0.6 rounds to 1; 7 x 0.25 = 1.75 rounds to 2; one message stays
    # in train; a zero fraction keeps everything in train.
    [(3, 0.2, (2, 1)), (7, 0.25, (5, 2)), (1, 0.5, (1, 0)), (4, 0.0, (4, 0))],
)
def test_chronological_split_rounds_the_future_share(
    count: int, fraction: float, expected: tuple[int, int]
) -> None:
    # Prepare
    texts = [f"m{i}" for i in range(count)]

    # Execute
    train, future = chronological_split(texts, fraction)

    # Assert
    assert (len(train), len(future)) == expected
    assert train + future == tuple(texts)


def test_cap_history_keeps_oldest_words() -> None:
    # Prepare: 3 + 2 + 4 words
    texts = ["a b c", "d e", "f g h i"]

    # Execute
    capped = [cap_history(texts, limit) for limit in (9, 8, 5, 4, 1)]

    # Assert
    assert capped == [
        ["a b c", "d e", "f g h i"],
        ["a b c", "d e"],
        ["a b c", "d e"],
        ["a b c"],
        ["a"],  # a first message past the cap is cut after the cap's last word
    ]


def test_split_corpus_cap_keeps_each_users_oldest_messages() -> None:
    # Prepare: timestamps out of file order
    messages = [
        message("u", "newest message here", 3.0),
        message("u", "oldest words", 1.0),
        message("u", "middle one", 2.0),
    ]
    config = CorpusConfig(
        max_words_per_user=4, min_words_per_user=0, heldout_fraction=0.0
    )

    # Execute
    splits = split_corpus(messages, config)

    # Assert: 2 messages x 0.2 = 0.4 rounds to no future message
    assert sides(splits) == {"u": (("oldest words", "middle one"), ())}
    assert splits.words_per_user == {"u": 4}


def test_split_corpus_min_words_drops_users() -> None:
    # Prepare: x has 2 words, y has 3, z has 5
    messages = [
        message("x", "two words", 1.0),
        message("y", "three words here", 1.0),
        message("z", "five words are in", 1.0),
        message("z", "this", 2.0),
    ]
    config = CorpusConfig(min_words_per_user=3, heldout_fraction=0.0)

    # Execute
    splits = split_corpus(messages, config)

    # Assert
    assert splits.dropped_users == 1
    assert sorted(splits.training_users) == ["y", "z"]
    assert splits.words_per_user == {"y": 3, "z": 5}


def test_split_corpus_max_users_keeps_the_first_training_users_by_id() -> None:
    # Prepare: four users of 2 messages; held-out share 0, so all four train
    messages = [
        message(user, text, time)
        for user in ("d", "b", "a", "c")
        for text, time in (("one two", 1.0), ("three", 2.0))
    ]
    config = CorpusConfig(
        min_words_per_user=1, heldout_fraction=0.0, future_fraction=0.5, max_users=2
    )

    # Execute
    splits = split_corpus(messages, config)

    # Assert: a and b, each with 1 train and 1 future message
    assert list(splits.training_users) == ["a", "b"]
    assert splits.training_users["a"].train == ("one two",)
    assert splits.training_users["a"].future == ("three",)


def test_corpus_config_refuses_max_users_below_one() -> None:
    # Execute / Assert
    with pytest.raises(CorpusError, match="max_users"):
        CorpusConfig(max_users=0)


def test_split_corpus_min_words_counts_after_the_cap() -> None:
    # Prepare: 6 words, capped to the first message's 2
    messages = [
        message("u", "two words", 1.0),
        message("u", "four more words here", 2.0),
    ]
    config = CorpusConfig(max_words_per_user=3, min_words_per_user=3)

    # Execute
    splits = split_corpus(messages, config)

    # Assert
    assert splits.dropped_users == 1
    assert not splits.training_users and not splits.heldout_users


def test_split_corpus_small_slice_counts(small_splits: CorpusSplits) -> None:
    # Prepare
    expected = (30, 3, 7)

    # Execute
    counts = (
        len(small_splits.training_users),
        len(small_splits.heldout_users),
        small_splits.dropped_users,
    )

    # Assert
    assert counts == expected
    assert len(small_splits.train_texts()) == 1101
    assert len(small_splits.future_texts()) == 276
    assert len(small_splits.heldout_texts()) == 336
    assert max(small_splits.words_per_user.values()) <= 4000
    assert min(small_splits.words_per_user.values()) >= 30


def test_split_corpus_deterministic_under_the_seed(
    small_messages: list[Message],
) -> None:
    # Prepare
    config = CorpusConfig(seed=3, heldout_fraction=0.3)

    # Execute
    first = split_corpus(small_messages, config)
    # Users in another order; each user's own messages keep theirs (ties in
    # timestamps are broken by file order).
    regrouped = sorted(small_messages, key=lambda m: m.user, reverse=True)
    second = split_corpus(regrouped, config)
    other_seed = split_corpus(
        small_messages, CorpusConfig(seed=4, heldout_fraction=0.3)
    )

    # Assert
    assert sides(first) == sides(second)
    assert sorted(first.heldout_users) != sorted(other_seed.heldout_users)


def test_split_corpus_stable_when_users_are_added(
    chitchat_slice: Callable[[int], list[Message]], small_splits: CorpusSplits
) -> None:
    # Prepare: the small slice's 40 users and 40 more
    more = chitchat_slice(80)

    # Execute
    larger = split_corpus(more, small_splits.config)

    # Assert
    before, after = sides(small_splits), sides(larger)
    assert len(after) > len(before)
    assert {user: after[user] for user in before} == before


def test_is_heldout_share_close_to_fraction() -> None:
    # Prepare
    users = [f"user-{i}" for i in range(10_000)]

    # Execute
    held = sum(is_heldout(u, seed=0, fraction=0.1) for u in users)
    none = sum(is_heldout(u, seed=0, fraction=0.0) for u in users)
    every = sum(is_heldout(u, seed=0, fraction=1.0) for u in users)

    # Assert: a binomial(10,000, 0.1) count lies within 1,000 +- 100 (3.3 sigma)
    assert 900 <= held <= 1100
    assert (none, every) == (0, 10_000)


def test_corpus_splits_texts_concatenate_user_parts() -> None:
    # Prepare
    messages = [message("a", f"a{i}", float(i)) for i in range(5)] + [
        message("b", f"b{i}", float(i)) for i in range(5)
    ]
    config = CorpusConfig(min_words_per_user=0, heldout_fraction=0.0)

    # Execute
    splits = split_corpus(messages, config)

    # Assert: 5 x 0.2 = 1 future message each
    assert splits.train_texts() == ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3"]
    assert splits.future_texts() == ["a4", "b4"]
    assert splits.heldout_texts() == []


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"max_words_per_user": 0}, "max_words_per_user"),
        ({"min_words_per_user": -1}, "min_words_per_user"),
        ({"heldout_fraction": 1.5}, "heldout_fraction"),
        ({"heldout_fraction": float("nan")}, "heldout_fraction"),
        ({"future_fraction": 1.0}, "future_fraction"),
    ],
)
def test_corpus_config_out_of_range_names_field(
    settings: dict[str, float], field: str
) -> None:
    # Prepare
    expected = f"chitchat, field '{field}': must be"

    # Execute
    with pytest.raises(CorpusError) as caught:
        CorpusConfig(**settings)

    # Assert
    assert str(caught.value).startswith(expected)
    assert caught.value.field == field


def test_load_corpus_jsonl_counts_skipped_lines(
    write_jsonl: Callable[[str | bytes], str],
) -> None:
    # Prepare
    path = write_jsonl(
        '{"user": "a", "text": "one two three"}\n'
        '{"user": "a", "text": ""}\n'
        '{"user": "b", "text": "four five"}\n'
    )
    config = CorpusConfig(source=path, min_words_per_user=3, heldout_fraction=0.0)

    # Execute
    splits = load_corpus(config)

    # Assert
    assert splits.skipped_empty == 1
    assert splits.dropped_users == 1
    assert list(splits.training_users) == ["a"]
