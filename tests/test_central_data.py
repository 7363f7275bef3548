"""The pooled set in shards, split over workers, and the evaluation samples."""

from __future__ import annotations

from collections import Counter

from central.data import PooledStream, plan_shards
from central.evaluation import future_cohort_sample
from corpora.corpus import CorpusConfig, CorpusSplits, UserHistory
from corpora.tokenizer import WordTokenizer
from models.batching import encode_messages
from models.distributed import ring_allreduce_bytes
from models.seeding import derive_seed


def toy_splits(sizes: dict[str, int]) -> CorpusSplits:
    """Training users with `sizes[user]` train messages and 3 future ones each."""
    users = {
        user: UserHistory(
            user=user,
            train=tuple(f"{user} says hello number {i}" for i in range(size)),
            future=tuple(f"{user} later {i}" for i in range(3)),
        )
        for user, size in sizes.items()
    }
    return CorpusSplits(config=CorpusConfig(), training_users=users, heldout_users={})


def small_stream(
    splits: CorpusSplits,
    tokenizer: WordTokenizer,
    *,
    batch_size: int = 8,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> PooledStream:
    """The pooled stream of `splits` in 16-token sequences and 300-message shards."""
    return PooledStream(
        splits=splits,
        tokenizer=tokenizer,
        max_len=16,
        shard_messages=300,
        batch_size=batch_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )


def pooled_sequences(
    splits: CorpusSplits, tokenizer: WordTokenizer
) -> list[tuple[int, ...]]:
    """Every training message of `splits` as a 16-token sequence."""
    return [tuple(s) for s in encode_messages(tokenizer, splits.train_texts(), 16)]


def rows(batches: list) -> list[tuple[int, ...]]:
    """Each batch row without its padding."""
    return [tuple(int(t) for t in row if t != 0) for b in batches for row in b]


def test_plan_shards_closes_a_shard_once_it_holds_enough_messages() -> None:
    # Prepare: 4 + 3 >= 6 closes the first shard; 5 + 2 the second; 1 is left over.
    splits = toy_splits({"a": 4, "b": 3, "c": 5, "d": 2, "e": 1, "f": 0})
    # Execute
    shards = plan_shards(splits, shard_messages=6)
    # Assert: users are never cut, empty ones are skipped.
    assert shards == [("a", "b"), ("c", "d"), ("e",)]


def test_pooled_stream_one_epoch_is_exactly_the_pooled_training_set(
    small_splits: CorpusSplits, tokenizer: WordTokenizer
) -> None:
    # Prepare
    stream = small_stream(small_splits, tokenizer)
    expected = Counter(pooled_sequences(small_splits, tokenizer))
    # Execute
    batches = list(stream.epoch(0))
    # Assert
    assert len(stream.shards) > 1
    assert Counter(rows(batches)) == expected
    assert len(batches) == stream.batches_per_epoch()


def test_pooled_stream_two_workers_take_equal_steps_and_cover_every_sequence(
    small_splits: CorpusSplits, tokenizer: WordTokenizer
) -> None:
    # Prepare
    def stream(rank: int) -> PooledStream:
        return small_stream(
            small_splits, tokenizer, batch_size=4, seed=3, rank=rank, world_size=2
        )

    everything = set(pooled_sequences(small_splits, tokenizer))
    # Execute
    first, second = list(stream(0).epoch(1)), list(stream(1).epoch(1))
    # Assert: the sampler repeats at most one sequence per shard to even them out.
    assert len(first) == len(second) == stream(0).batches_per_epoch()
    assert set(rows(first)) | set(rows(second)) == everything
    total = len(rows(first)) + len(rows(second))
    sequences = sum(stream(0).shard_sizes())
    assert sequences <= total <= sequences + len(stream(0).shards)


def test_pooled_stream_skip_resumes_the_same_order(
    small_splits: CorpusSplits, tokenizer: WordTokenizer
) -> None:
    # Prepare
    stream = small_stream(small_splits, tokenizer)
    full = list(stream.epoch(2))
    # Execute
    resumed = list(stream.epoch(2, skip=37))
    # Assert
    assert [b.tolist() for b in resumed] == [b.tolist() for b in full[37:]]


def test_future_cohort_sample_takes_oldest_messages_in_hashed_user_order() -> None:
    # Prepare: 3 future messages per user, at most 2 each, until 4 are held.
    splits = toy_splits({"a": 1, "b": 1, "c": 1})
    order = sorted("abc", key=lambda u: derive_seed(7, "future-cohort", u))
    # Execute
    texts = future_cohort_sample(splits, seed=7, messages=4, per_user=2)
    # Assert
    first, second = order[0], order[1]
    assert texts == [
        f"{first} later 0",
        f"{first} later 1",
        f"{second} later 0",
        f"{second} later 1",
    ]


def test_ring_allreduce_bytes_hand_computed() -> None:
    # Execute / Assert: each of W workers sends 2 (W-1)/W of the payload.
    assert ring_allreduce_bytes(1000, 1) == 0
    assert ring_allreduce_bytes(1000, 2) == 2000
    assert ring_allreduce_bytes(1000, 4) == 6000
