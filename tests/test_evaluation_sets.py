"""The evaluation sets every corner measures on: shares and the future cohort."""

from __future__ import annotations

import math

from corpora.corpus import CorpusConfig, CorpusSplits, UserHistory
from models.evaluation_sets import (
    cohort_order,
    cohort_texts,
    future_cohort,
    shares,
    user_future_cohort,
)
from models.metrics import EvalCounts, combine
from models.seeding import derive_seed


def test_shares_round_cumulatively_and_sum_exactly() -> None:
    # Execute / Assert: cumulative floors of running * total / whole.
    assert shares([2, 2, 4], 4) == [1, 1, 2]
    assert shares([1, 1, 1], 2) == [0, 1, 1]  # floors 0, 1, 2
    assert shares([3, 1], 10) == [3, 1]  # capped at the sizes' sum
    assert shares([0, 0], 5) == [0, 0]
    assert shares([], 3) == []


def test_future_cohort_takes_members_in_hash_order_until_full() -> None:
    # Prepare: four candidates of 2 messages each (one empty), room for 3.
    sizes = {"a": 2, "b": 2, "c": 0, "d": 2}
    order = sorted(sizes, key=lambda c: derive_seed(5, "future-cohort", c))
    # Execute
    cohort = future_cohort(sizes, seed=5, messages=3, keystroke_texts=2)
    # Assert: the first two non-empty members in hash order hold 4 >= 3.
    expected = [c for c in order if sizes[c]][:2]
    assert list(cohort.client_ids) == expected
    assert cohort.num_messages == 4
    assert cohort.keystroke_texts == (1, 1)
    assert cohort_order(list(sizes), 5) == order


def test_user_future_cohort_texts_are_each_users_oldest_future_messages() -> None:
    # Prepare
    users = {
        "u1": UserHistory("u1", ("t",), ("f1a", "f1b", "f1c")),
        "u2": UserHistory("u2", ("t",), ("f2a",)),
    }
    splits = CorpusSplits(CorpusConfig(), users, {})
    # Execute
    cohort = user_future_cohort(splits, seed=1, messages=10, per_user=2)
    texts = cohort_texts(splits, cohort, per_user=2)
    # Assert: every user (10 messages are never reached), at most 2 each.
    by_user = {"u1": ["f1a", "f1b"], "u2": ["f2a"]}
    assert texts == [t for u in cohort.client_ids for t in by_user[u]]
    assert cohort.num_messages == 3


def test_combine_sums_counts_before_dividing() -> None:
    # Prepare: phone a 1/2 top-1, phone b 2/6; pooled 3/8, not the mean 5/12.
    a = EvalCounts(1, 2, 2, 2.0, 2, 10, 8, 1)
    b = EvalCounts(2, 3, 6, 6.0, 2, 30, 12, 2)
    # Execute
    pooled = combine([a, b])
    # Assert
    assert pooled.top1 == 3 / 8 and pooled.top3 == 5 / 8
    assert math.isclose(pooled.perplexity, math.exp(8.0 / 4))
    assert pooled.keystroke_savings == (40 - 20) / 40
    assert pooled.num_messages == 3 and pooled.num_targets == 8


def test_combine_of_nothing_is_nan() -> None:
    # Execute
    pooled = combine([])
    # Assert
    assert math.isnan(pooled.top1) and math.isnan(pooled.perplexity)
    assert pooled.num_targets == 0
