"""The AES-CTR mask PRG and the neighbour graph."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from secagg.graph import neighbour_graph
from secagg.prg import CHUNK_BYTES, apply_masks, expand

SEED_A = hashlib.sha256(b"a").digest()
SEED_B = hashlib.sha256(b"b").digest()


def test_expand_is_the_aes_ctr_keystream() -> None:
    # Prepare: AES-256-CTR of zeros under SEED_A from a zero counter
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    encryptor = Cipher(algorithms.AES(SEED_A), modes.CTR(bytes(16))).encryptor()
    keystream = encryptor.update(bytes(8 * 5))

    # Execute
    lanes = expand(SEED_A, 5, np.uint64)

    # Assert
    assert lanes.tolist() == np.frombuffer(keystream, "<u8").tolist()


def test_apply_masks_opposite_signs_cancel_across_chunks() -> None:
    # Prepare: a size that ends mid-chunk
    size = 2 * CHUNK_BYTES // 4 + 123
    start = np.arange(size, dtype=np.uint32)
    acc = start.copy()

    # Execute
    apply_masks(acc, [(SEED_A, 1), (SEED_B, 1), (SEED_A, -1), (SEED_B, -1)])

    # Assert
    assert np.array_equal(acc, start)


def test_apply_masks_chunked_equals_whole_stream() -> None:
    # Prepare
    size = CHUNK_BYTES // 8 + 7
    acc = np.zeros(size, dtype=np.uint64)

    # Execute
    apply_masks(acc, [(SEED_A, 1), (SEED_B, -1)])

    # Assert: wrapping uint64 arithmetic
    expected = expand(SEED_A, size, np.uint64) - expand(SEED_B, size, np.uint64)
    assert np.array_equal(acc, expected)


def test_apply_masks_rejects_signed_lanes_and_bad_signs() -> None:
    with pytest.raises(ValueError, match="uint32/uint64"):
        apply_masks(np.zeros(4, dtype=np.int64), [(SEED_A, 1)])
    with pytest.raises(ValueError, match="sign"):
        apply_masks(np.zeros(4, dtype=np.uint32), [(SEED_A, 2)])


def test_expand_top_bits_are_uniform() -> None:
    # Prepare: the top 4 bits of 16,000 uint32 lanes in 16 bins (1,000 expected)
    lanes = expand(SEED_A, 16_000, np.uint32)

    # Execute
    counts = np.bincount(lanes >> 28, minlength=16)
    chi2 = float(((counts - 1000.0) ** 2 / 1000.0).sum())

    # Assert: 15 degrees of freedom, 99.9 % critical value 37.7
    assert chi2 < 37.7


def test_neighbour_graph_is_symmetric_regular_and_replayable() -> None:
    # Prepare
    ids = [f"phone-{i:02d}" for i in range(12)]

    # Execute
    graph = neighbour_graph(ids, degree=4, seed=3, server_round=5)
    again = neighbour_graph(list(reversed(ids)), degree=4, seed=3, server_round=5)
    other = neighbour_graph(ids, degree=4, seed=3, server_round=6)

    # Assert
    assert all(len(vs) == 4 and u not in vs for u, vs in graph.items())
    assert all(u in graph[v] for u, vs in graph.items() for v in vs)
    assert graph == again
    assert graph != other


def test_neighbour_graph_complete_at_n_minus_one() -> None:
    # Execute
    graph = neighbour_graph(["a", "b", "c"], degree=2, seed=0, server_round=0)

    # Assert
    assert graph == {"a": ("b", "c"), "b": ("a", "c"), "c": ("a", "b")}


def test_neighbour_graph_rejects_odd_ring_degree() -> None:
    with pytest.raises(ValueError, match="even"):
        neighbour_graph([str(i) for i in range(8)], degree=3, seed=0, server_round=0)
