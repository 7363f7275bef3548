"""The pooled training set, streamed in shards and split over workers.

The pooled set is exactly `CorpusSplits.train_texts()`: every training user's
train part, the very messages the phones hold. It is cut into shards of
consecutive users holding about `shard_messages` messages; an epoch visits the
shards in an order drawn from `(seed, epoch)` and only the current shard's token
ids and batches are in memory, so memory stays bounded however large the corpus
(TFF users could not build the Stack Overflow central baseline in 64 GB).

Within a shard a `DistributedSampler` splits the sequences over the workers:
every worker gets the same number of sequences (the sampler repeats a few to make
it so), hence the same number of batches, so no worker waits at a collective for
a step the others never take.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import cast

import torch
from torch.utils.data import Dataset, DistributedSampler

from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer
from models.batching import encode_messages, make_batches
from models.seeding import derive_seed, numpy_rng


def plan_shards(splits: CorpusSplits, shard_messages: int) -> list[tuple[str, ...]]:
    """Consecutive training users grouped into shards of about `shard_messages`.

    A shard closes once it holds `shard_messages` messages; a user is never cut.
    """
    shards: list[tuple[str, ...]] = []
    current: list[str] = []
    size = 0
    for user, history in splits.training_users.items():
        if not history.train:
            continue
        current.append(user)
        size += len(history.train)
        if size >= shard_messages:
            shards.append(tuple(current))
            current, size = [], 0
    if current:
        shards.append(tuple(current))
    return shards


class PooledStream:
    """One worker's batches of the pooled training set, epoch by epoch."""

    def __init__(
        self,
        *,
        splits: CorpusSplits,
        tokenizer: WordTokenizer,
        max_len: int,
        shard_messages: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.splits = splits
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.batch_size = batch_size  # sequences per batch on this worker
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shards = plan_shards(splits, shard_messages)
        self._sizes: list[int] | None = None

    def _sequences(self, shard: int) -> list[list[int]]:
        texts = [
            text
            for user in self.shards[shard]
            for text in self.splits.training_users[user].train
        ]
        return encode_messages(self.tokenizer, texts, self.max_len)

    def shard_sizes(self) -> list[int]:
        """Sequences in each shard (computed once, a shard at a time)."""
        if self._sizes is None:
            self._sizes = [len(self._sequences(i)) for i in range(len(self.shards))]
        return self._sizes

    def shard_batches(self, shard: int) -> int:
        """Batches this worker takes from one shard (the same on every worker)."""
        per_worker = math.ceil(self.shard_sizes()[shard] / self.world_size)
        return math.ceil(per_worker / self.batch_size)

    def batches_per_epoch(self) -> int:
        """Optimizer steps in one epoch."""
        return sum(self.shard_batches(i) for i in range(len(self.shards)))

    def shard_order(self, epoch: int) -> list[int]:
        """The shards in the order `epoch` visits them (the same on every worker)."""
        rng = numpy_rng(self.seed, "shard-order", epoch)
        return [int(i) for i in rng.permutation(len(self.shards))]

    def epoch(self, epoch: int, *, skip: int = 0) -> Iterator[torch.Tensor]:
        """This worker's (B, L+1) batches of `epoch`, after skipping `skip` of them.

        Skipping (to resume mid-epoch) passes over whole shards without reading
        them and rebuilds only the shard the run stopped in.
        """
        for shard in self.shard_order(epoch):
            count = self.shard_batches(shard)
            if skip >= count:
                skip -= count
                continue
            batches = self._worker_batches(shard, epoch)
            yield from batches[skip:]
            skip = 0

    def _worker_batches(self, shard: int, epoch: int) -> list[torch.Tensor]:
        sequences = self._sequences(shard)
        # The sampler only needs len(); the indices stand in for a Dataset.
        indices = cast(Dataset[int], range(len(sequences)))
        sampler: DistributedSampler[int] = DistributedSampler(
            indices,
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=True,
            seed=derive_seed(self.seed, "shard", shard) % 2**31,
        )
        sampler.set_epoch(epoch)
        mine = [sequences[i] for i in sampler]
        # Each rank offsets its seed: its own batching and shuffling stream.
        rng = numpy_rng(self.seed, "batches", epoch, shard, self.rank)
        return make_batches(
            mine, self.batch_size, pad_id=self.tokenizer.pad_id, rng=rng
        )
