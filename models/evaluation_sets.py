"""The text every corner measures on: the held-out sample and the future cohort.

Federated, central and local-only runs are compared on identical text, so the two
evaluation sets are drawn here and nowhere else:

- held-out users: a fixed, evenly spaced sample of their messages
  (`corpora.samples.heldout_sample`).
- future text: a cohort of phones (or users) ordered by a hash of
  `(seed, "future-cohort", client_id)`, each contributing its oldest
  `per_phone` future messages, taken until the cohort holds `messages`. With one
  phone per user (the fleet's default) a phone's client_id is its user, so the
  fleet and the baselines pick the same messages. Keystroke savings are simulated
  on `keystroke_texts` of them, shared out over the cohort in proportion to each
  member's messages (`shares`).

The rule lives in `models` rather than `corpora` because the order comes from
`models.seeding.derive_seed`, the stream every random choice derives from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from corpora.corpus import CorpusSplits
from models.seeding import derive_seed

# The evaluation sets' default sizes, one for every kind of run, so that the
# federated, central and local-only metrics are measured on the same text.
# Held-out users' messages: a fixed, evenly spaced sample.
HELDOUT_MESSAGES = 2000
# Future messages in the cohort.
FUTURE_MESSAGES = 2000
# At most this many (the oldest) future messages per cohort phone or user, so a
# few heavy typists do not make up the future metrics.
FUTURE_MESSAGES_PER_PHONE = 10
# Messages on which keystroke savings are simulated, per evaluation set.
KEYSTROKE_TEXTS = 400


@dataclass(frozen=True)
class FutureCohort:
    """The phones that measure future text, and each one's keystroke share."""

    client_ids: tuple[str, ...]
    keystroke_texts: tuple[int, ...]  # one share per phone, summing to the sample
    num_messages: int


def shares(sizes: Sequence[int], total: int) -> list[int]:
    """`total` split in proportion to `sizes` by cumulative rounding (sums exactly).

    shares([2, 2, 4], 4) == [1, 1, 2].
    """
    whole = sum(sizes)
    if not whole:
        return [0] * len(sizes)
    total = min(total, whole)
    result, running, given = [], 0, 0
    for size in sizes:
        running += size
        upto = (running * total) // whole
        result.append(upto - given)
        given = upto
    return result


def cohort_order(client_ids: Sequence[str], seed: int) -> list[str]:
    """`client_ids` in the cohort's order: by a hash of the seed and each id."""
    return sorted(client_ids, key=lambda c: derive_seed(seed, "future-cohort", c))


def future_cohort(
    future_sizes: Mapping[str, int], *, seed: int, messages: int, keystroke_texts: int
) -> FutureCohort:
    """Members in cohort order, each holding some future text, until `messages`.

    Args:
        future_sizes: Each candidate's future messages it would measure on (its
            oldest ones, already capped per phone), by client_id.
        seed: The run's seed.
        messages: The cohort stops growing once it holds this many.
        keystroke_texts: The keystroke sample, shared out over the members.
    """
    chosen: list[str] = []
    sizes: list[int] = []
    for client_id in cohort_order(list(future_sizes), seed):
        if sum(sizes) >= messages:
            break
        size = future_sizes[client_id]
        if size:
            chosen.append(client_id)
            sizes.append(size)
    return FutureCohort(
        tuple(chosen), tuple(shares(sizes, keystroke_texts)), sum(sizes)
    )


def user_future_sizes(splits: CorpusSplits, per_user: int) -> dict[str, int]:
    """Each training user's future messages the cohort takes (at most `per_user`)."""
    return {
        user: min(len(history.future), per_user)
        for user, history in splits.training_users.items()
    }


def user_future_cohort(
    splits: CorpusSplits,
    *,
    seed: int,
    messages: int,
    per_user: int,
    keystroke_texts: int = 0,
) -> FutureCohort:
    """The future cohort of a fleet with one phone per training user."""
    return future_cohort(
        user_future_sizes(splits, per_user),
        seed=seed,
        messages=messages,
        keystroke_texts=keystroke_texts,
    )


def cohort_texts(
    splits: CorpusSplits, cohort: FutureCohort, per_user: int
) -> list[str]:
    """The cohort's future messages, members in cohort order, oldest first."""
    return [
        text
        for user in cohort.client_ids
        for text in splits.training_users[user].future[:per_user]
    ]
