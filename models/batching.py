"""Messages to padded token batches.

Each message becomes `<bos> tokens <eos>`; one longer than `max_len + 1` tokens is
cut into windows that overlap by one token, so no text is thrown away. Batches are
padded to their longest row; sequences of similar length are grouped so that little
of a batch is padding.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from corpora.tokenizer import WordTokenizer

# Batches per bucket when grouping shuffled sequences by length.
_BUCKET_BATCHES = 32


def windows(ids: list[int], max_len: int) -> list[list[int]]:
    """Cut one `<bos> ... <eos>` sequence into windows of at most `max_len + 1`."""
    if len(ids) <= max_len + 1:
        return [ids]
    return [
        ids[start : start + max_len + 1] for start in range(0, len(ids) - 1, max_len)
    ]


def encode_messages(
    tokenizer: WordTokenizer, texts: list[str], max_len: int
) -> list[list[int]]:
    """Training sequences of `texts`: `<bos> ids <eos>`, windowed."""
    sequences: list[list[int]] = []
    for ids in tokenizer.encode_batch(texts):
        sequences.extend(windows([tokenizer.bos_id, *ids, tokenizer.eos_id], max_len))
    return sequences


@dataclass(frozen=True, eq=False)
class PackedSequences:
    """Token sequences held as one flat int32 array and its offsets.

    Four bytes a token, where a list of Python ints costs about 36: what a fleet
    of phones that each keep their history's token ids adds up to.
    """

    # (T,) int32: the sequences one after another.
    tokens: np.ndarray
    # (n + 1,) int64: sequence i is tokens[offsets[i]:offsets[i + 1]].
    offsets: np.ndarray

    @classmethod
    def pack(cls, sequences: Sequence[Sequence[int]]) -> PackedSequences:
        """The sequences in one array, in order."""
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.fromiter(
            itertools.chain.from_iterable(sequences),
            dtype=np.int32,
            count=int(offsets[-1]),
        )
        return cls(tokens, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def unpack(self, indices: Sequence[int] | None = None) -> list[list[int]]:
        """The sequences (those at `indices`, in their order) as lists of ids."""
        bounds = self.offsets.tolist()
        if indices is None:
            flat = self.tokens.tolist()
            return [flat[bounds[i] : bounds[i + 1]] for i in range(len(self))]
        return [self.tokens[bounds[i] : bounds[i + 1]].tolist() for i in indices]


def pad_batch(rows: list[list[int]], pad_id: int) -> torch.Tensor:
    """Rows right-padded to a (B, L) long tensor."""
    width = max(len(r) for r in rows)
    batch = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return batch


def make_batches(
    sequences: list[list[int]],
    batch_size: int,
    *,
    pad_id: int,
    rng: np.random.Generator | None = None,
) -> list[torch.Tensor]:
    """Padded batches of shape (B, L+1), shuffled by `rng` or length-sorted without.

    With `rng`, sequences are shuffled, grouped by length within buckets of
    `_BUCKET_BATCHES` batches, and the batches shuffled again.
    """
    if not sequences:
        return []
    order = np.arange(len(sequences))
    lengths = np.array([len(s) for s in sequences])
    if rng is None:
        order = np.argsort(lengths, kind="stable")
    else:
        order = rng.permutation(len(sequences))
        bucket = batch_size * _BUCKET_BATCHES
        for start in range(0, len(order), bucket):
            chunk = order[start : start + bucket]
            order[start : start + bucket] = chunk[
                np.argsort(lengths[chunk], kind="stable")
            ]
    batches = [
        pad_batch([sequences[i] for i in order[start : start + batch_size]], pad_id)
        for start in range(0, len(order), batch_size)
    ]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def count_targets(batch: torch.Tensor, pad_id: int) -> int:
    """Number of non-padding targets in a (B, L+1) batch."""
    return int((batch[:, 1:] != pad_id).sum())
