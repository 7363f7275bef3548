"""The sampled softmax of local training: its loss, its correction, its streams."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import models.training
from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer
from device_sim.config import FleetConfigError, LocalTrainingConfig
from models.batching import pad_batch
from models.config import ModelConfig, TrainingConfig
from models.metrics import count_metrics
from models.model import NextWordModel
from models.sampled_softmax import WordSampler, sampled_cross_entropy
from models.seeding import numpy_rng
from models.training import batch_loss, batch_mean_loss, train_local

MICRO = ModelConfig(vocab_size=12, embed_dim=4, hidden_dim=5, max_len=6)
MICRO_SEQUENCES = [[2, 5, 6, 3], [2, 7, 3], [2, 8, 9, 10, 11, 3], [2, 4, 3]]
# A uniform proposal over MICRO's words: with S = V draws, S * q = 1 for each.
UNIFORM = torch.full((12,), math.log(1 / 12))


class EveryWordOnce(WordSampler):
    """Draws the whole vocabulary once, each with S * q = 1 (uniform q, S = V)."""

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.arange(12), torch.zeros(12)


def micro_model(seed: int = 0) -> NextWordModel:
    torch.manual_seed(seed)
    return NextWordModel(MICRO)


def test_sampled_loss_every_word_once_equals_full_cross_entropy() -> None:
    # Prepare: two copies of one model, one batch of four sequences
    full_model, sampled_model = micro_model(), micro_model()
    batch = pad_batch(MICRO_SEQUENCES, pad_id=0)
    sampler = EveryWordOnce(UNIFORM, samples=12, rng=numpy_rng(0))

    # Execute: both losses and their gradients
    full = batch_loss(full_model, batch, pad_id=0)
    sampled = batch_loss(sampled_model, batch, pad_id=0, sampler=sampler)
    full.backward()
    sampled.backward()

    # Assert: equal losses and equal gradients on every parameter
    assert float(sampled.detach()) == pytest.approx(float(full.detach()), rel=1e-6)
    pairs = zip(full_model.parameters(), sampled_model.parameters(), strict=True)
    for a, b in pairs:
        assert a.grad is not None and b.grad is not None
        assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_sampled_cross_entropy_correction_by_hand() -> None:
    # Prepare: V = 3, q = [0.5, 0.25, 0.25], S = 2 draws: words 0 and 2 with
    # expected counts 2 * 0.5 = 1 and 2 * 0.25 = 0.5. Target 1 has logit 1,
    # the samples 0 and 2. Z_hat = e^1 + e^(0 - log 1) + e^(2 - log 0.5)
    log_q = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    log_expected = log_q[[0, 2]] + math.log(2)
    logits = torch.tensor([[1.0, 0.0, 2.0]])

    # Execute
    loss = sampled_cross_entropy(
        logits, torch.tensor([1]), torch.tensor([0, 2]), log_expected
    )

    # Assert: log(e + 1 + 2 e^2) - 1 = 1.917576
    assert float(loss[0]) == pytest.approx(1.9175758, abs=1e-6)


def test_sampled_cross_entropy_drops_a_draw_of_the_target() -> None:
    # Prepare: as above but the draws are words 1 (the target) and 2
    log_expected = torch.log(torch.tensor([0.5, 0.5]))
    logits = torch.tensor([[1.0, 1.0, 2.0]])

    # Execute
    loss = sampled_cross_entropy(
        logits, torch.tensor([1]), torch.tensor([1, 2]), log_expected
    )

    # Assert: the target counted once, exactly: log(e + 2 e^2) - 1 = 1.861995
    assert float(loss[0]) == pytest.approx(1.8619948, abs=1e-6)


def test_word_sampler_draws_from_q_with_log_expected_counts() -> None:
    # Prepare: q = [0.5, 0.25, 0.25, 0], S = 4000 draws
    log_q = torch.log(torch.tensor([0.5, 0.25, 0.25, 0.0]))
    sampler = WordSampler(log_q, samples=4000, rng=numpy_rng(0, "test"))

    # Execute
    words, log_expected = sampler.draw()

    # Assert: shares near q, never a word of q = 0, log(S q) for each draw
    shares = torch.bincount(words, minlength=4).float() / 4000
    assert torch.allclose(shares, torch.tensor([0.5, 0.25, 0.25, 0.0]), atol=0.03)
    assert torch.allclose(log_expected, torch.log(4000 * log_q.exp()[words]))


def test_evaluation_never_uses_the_sampled_softmax(
    monkeypatch: pytest.MonkeyPatch,
    tokenizer: WordTokenizer,
    small_splits: CorpusSplits,
    tiny_model_config: ModelConfig,
) -> None:
    # Prepare: count every sampled-softmax loss computed
    calls: list[int] = []

    def counted(*args: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return sampled_cross_entropy(*args)

    monkeypatch.setattr(models.training, "sampled_cross_entropy", counted)
    torch.manual_seed(0)
    model = NextWordModel(tiny_model_config)
    texts = [t for ts in small_splits.heldout_users.values() for t in ts][:20]
    config = TrainingConfig(train_softmax="sampled", softmax_samples=64)
    sequences = [[tokenizer.bos_id, *ids] for ids in tokenizer.encode_batch(texts)]

    # Execute: evaluation and the loss probe, then sampled training
    count_metrics(model, tokenizer, texts, max_len=16, keystroke_texts=5)
    batch_mean_loss(model, pad_batch(sequences, tokenizer.pad_id), pad_id=0)
    evaluated = len(calls)
    result = train_local(
        model,
        sequences,
        config,
        pad_id=tokenizer.pad_id,
        rng=numpy_rng(0),
        proposal=torch.full((tokenizer.vocab_size,), -math.log(tokenizer.vocab_size)),
    )

    # Assert
    assert evaluated == 0
    assert len(calls) == result.steps == 2  # 20 sequences, batches of 16


def _train(
    config: TrainingConfig, *keys: object, proposal: torch.Tensor = UNIFORM
) -> tuple[NextWordModel, models.training.TrainResult]:
    model = micro_model()
    rng = numpy_rng(0, *keys)
    result = train_local(
        model, MICRO_SEQUENCES, config, pad_id=0, rng=rng, proposal=proposal
    )
    return model, result


def _same(a: NextWordModel, b: NextWordModel) -> bool:
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    return all(torch.equal(p, q) for p, q in pairs)


def test_sampled_training_replays_from_its_stream_and_keeps_the_batches() -> None:
    # Prepare: batches of 1, three sampled words a step
    sampled = TrainingConfig(batch_size=1, train_softmax="sampled", softmax_samples=3)

    # Execute: twice on stream (0, round 1, "a"), once on round 2, once full
    first, first_result = _train(sampled, 1, "a", "train")
    again, _ = _train(sampled, 1, "a", "train")
    other, _ = _train(sampled, 2, "a", "train")
    _, full_result = _train(replace(sampled, train_softmax="full"), 1, "a", "train")

    # Assert: one stream, one model; another round, another; the batches are
    # those of full-softmax training (the draws come from a spawned stream)
    assert _same(first, again)
    assert not _same(first, other)
    assert first_result.first_batch is not None
    assert full_result.first_batch is not None
    assert torch.equal(first_result.first_batch, full_result.first_batch)


def test_softmax_full_steps_covering_every_step_is_full_training() -> None:
    # Prepare: 4 steps of 1 sequence, the last 4 full; and plain full training
    full = TrainingConfig(batch_size=1)
    ending = replace(full, train_softmax="sampled", softmax_full_steps=4)

    # Execute
    full_model, _ = _train(full, "x")
    ending_model, _ = _train(ending, "x")
    partly_model, _ = _train(replace(ending, softmax_full_steps=1), "x")

    # Assert
    assert _same(full_model, ending_model)
    assert not _same(full_model, partly_model)


def test_sampled_training_without_a_proposal_is_value_error() -> None:
    # Prepare
    config = TrainingConfig(train_softmax="sampled")

    # Execute
    with pytest.raises(ValueError) as caught:
        train_local(micro_model(), MICRO_SEQUENCES, config, pad_id=0, rng=numpy_rng(0))

    # Assert
    assert "needs a proposal" in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train_softmax": "hierarchical"}, "unknown train_softmax"),
        ({"softmax_samples": 0}, "softmax_samples must be >= 1"),
        ({"softmax_full_steps": -1}, "softmax_full_steps must be >= 0"),
    ],
)
def test_local_training_config_refuses_bad_softmax_settings(
    changes: dict[str, object], message: str
) -> None:
    # Execute
    with pytest.raises(FleetConfigError) as caught:
        LocalTrainingConfig(**changes)  # type: ignore[arg-type]

    # Assert
    assert message in str(caught.value)


def test_local_training_config_passes_the_softmax_to_training() -> None:
    # Prepare
    local = LocalTrainingConfig(
        train_softmax="sampled", softmax_samples=512, softmax_full_steps=2
    )

    # Execute
    config = local.training_config()

    # Assert
    assert (config.train_softmax, config.softmax_samples) == ("sampled", 512)
    assert config.softmax_full_steps == 2


def test_word_sampler_refuses_no_samples() -> None:
    # Execute
    with pytest.raises(ValueError) as caught:
        WordSampler(UNIFORM, samples=0, rng=np.random.default_rng(0))

    # Assert
    assert "samples must be >= 1" in str(caught.value)


def test_softmax_schedule_turns_full_after_its_rounds() -> None:
    # Prepare: sampled for rounds 1 to 10
    local = LocalTrainingConfig(train_softmax="sampled", softmax_sampled_rounds=10)

    # Execute
    softmaxes = [local.training_config(r).train_softmax for r in (1, 10, 11, None)]

    # Assert
    assert softmaxes == ["sampled", "sampled", "full", "sampled"]
