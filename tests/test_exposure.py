"""Exposure: rank among random candidates, its extrapolation, a memorised canary."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from corpora.canaries import CanaryConfig, make_canaries, vocabulary_words
from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer
from models.batching import encode_messages
from models.config import ModelConfig, TrainingConfig
from models.exposure import (
    canary_ids,
    exposures,
    extrapolated_exposure,
    log_perplexities,
    rank_exposure,
)
from models.model import NextWordModel
from models.training import train_local


def test_rank_exposure_counts_strictly_lower_candidates() -> None:
    # Prepare: two of four candidates below 2.5 -> rank 3.
    candidates = np.array([1.0, 2.0, 3.0, 4.0])

    # Execute
    rank, exposure = rank_exposure(2.5, candidates)
    best_rank, best = rank_exposure(0.5, candidates)

    # Assert: log2(5) - log2(3) = 0.737; rank 1 reaches the ceiling log2(5).
    assert rank == 3
    assert exposure == pytest.approx(0.736966, abs=1e-6)
    assert (best_rank, best) == (1, pytest.approx(math.log2(5)))


def test_extrapolated_exposure_of_a_normal_tail() -> None:
    # Prepare: standard normal candidates; Phi(-3) = 0.0013499.
    candidates = np.random.default_rng(0).normal(size=5000)

    # Execute
    exposure = extrapolated_exposure(-3.0, candidates)

    # Assert: -log2(0.0013499) = 9.53
    assert exposure == pytest.approx(9.53, abs=0.5)


def test_log_perplexities_match_the_model_step_by_step(
    tiny_model_config: ModelConfig,
) -> None:
    # Prepare: two 3-word rows scored with <bos> = 2.
    torch.manual_seed(0)
    model = NextWordModel(tiny_model_config)
    ids = torch.tensor([[40, 41, 42], [100, 7, 900]])

    # Execute
    scores = log_perplexities(model, ids, bos_id=2, batch_size=1)

    # Assert: -sum log2 p(w_i | <bos>, w_<i), computed by hand from the logits.
    with torch.no_grad():
        logits, _ = model(torch.tensor([[2, 40, 41], [2, 100, 7]]))
        log_p = torch.log_softmax(logits, dim=-1)
    expected = [
        -sum(float(log_p[r, i, ids[r, i]]) for i in range(3)) / math.log(2)
        for r in range(2)
    ]
    assert scores.tolist() == pytest.approx(expected, rel=1e-5)


def test_canary_ids_reject_out_of_vocabulary_words(tokenizer: WordTokenizer) -> None:
    # Prepare / Execute / Assert
    assert len(canary_ids("the cat sat", tokenizer)) == 3
    with pytest.raises(ValueError, match="vocabulary"):
        canary_ids("the zqxwv sat", tokenizer)


def test_exposure_of_a_planted_canary_exceeds_the_controls(
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
) -> None:
    # Prepare: one canary repeated 16 times among 300 real messages, 3 controls.
    words = vocabulary_words(tokenizer)
    config = CanaryConfig(count=1, repeats=(16,), controls=3)
    canaries = make_canaries(
        words, config, seed=0, users=list(small_splits.training_users)
    )
    texts = small_splits.train_texts()[:300] + [canaries[0].text] * 16
    sequences = encode_messages(tokenizer, texts, tiny_model_config.max_len)
    torch.manual_seed(0)
    model = NextWordModel(tiny_model_config)
    training = TrainingConfig(batch_size=16, lr=1.0, epochs=100, max_steps=150)
    train_local(
        model,
        sequences,
        training,
        pad_id=tokenizer.pad_id,
        rng=np.random.default_rng(0),
    )

    # Execute
    planted, *controls = exposures(
        model, canaries, tokenizer=tokenizer, vocabulary_words=words, candidates=2000
    )

    # Assert: measured rank 1 (exposure 10.97 = log2(2001), extrapolated 120;
    # 40.2 bits against about 73 for the controls), controls 0.50 to 3.20
    # (extrapolated 0.47 to 2.73).
    assert planted.rank == 1
    assert planted.exposure == pytest.approx(math.log2(2001))
    assert planted.extrapolated > 20
    assert max(c.exposure for c in controls) < 6
    assert max(c.extrapolated for c in controls) < 6
    assert [c.repeats for c in (planted, *controls)] == [16, 0, 0, 0]
