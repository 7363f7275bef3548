"""Batching and the shared training loop: it learns, replays, and FedProx works."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer
from models.batching import (
    count_targets,
    encode_messages,
    make_batches,
    pad_batch,
    windows,
)
from models.config import ModelConfig, TrainingConfig
from models.metrics import count_metrics
from models.model import NextWordModel
from models.seeding import numpy_rng
from models.training import (
    batch_loss,
    bucketed,
    make_optimizer,
    train_local,
)

# A model small enough that a single hand-checked step is cheap.
MICRO = ModelConfig(vocab_size=12, embed_dim=4, hidden_dim=5, max_len=6)
# Four sequences over MICRO's vocabulary, padding id 0.
MICRO_SEQUENCES = [[2, 5, 6, 3], [2, 7, 3], [2, 8, 9, 10, 11, 3], [2, 4, 3]]


def micro_model(seed: int = 0) -> NextWordModel:
    torch.manual_seed(seed)
    return NextWordModel(MICRO)


def distance(model: NextWordModel, anchor: list[torch.Tensor]) -> float:
    pairs = zip(model.parameters(), anchor, strict=True)
    return math.sqrt(sum(float(((p.detach() - a) ** 2).sum()) for p, a in pairs))


def test_windows_overlap_by_one_token() -> None:
    # Prepare
    ids = [1, 2, 3, 4, 5, 6, 7]

    # Execute
    cut = windows(ids, max_len=3)

    # Assert: each window predicts 3 targets; 6 targets in all, none lost
    assert cut == [[1, 2, 3, 4], [4, 5, 6, 7]]
    assert windows(ids, max_len=6) == [ids]


def test_encode_messages_wraps_in_bos_and_eos(tokenizer: WordTokenizer) -> None:
    # Prepare
    texts = ["how are you", ""]

    # Execute
    sequences = encode_messages(tokenizer, texts, max_len=32)

    # Assert
    how, are, you = tokenizer.encode("how are you")
    assert sequences == [[2, how, are, you, 3], [2, 3]]


def test_make_batches_without_rng_sorts_by_length() -> None:
    # Prepare
    sequences = MICRO_SEQUENCES

    # Execute
    batches = make_batches(sequences, batch_size=2, pad_id=0)

    # Assert
    assert [b.tolist() for b in batches] == [
        [[2, 7, 3], [2, 4, 3]],
        [[2, 5, 6, 3, 0, 0], [2, 8, 9, 10, 11, 3]],
    ]
    assert [count_targets(b, 0) for b in batches] == [4, 8]


def test_make_batches_same_rng_same_order() -> None:
    # Prepare
    sequences = [[2, i, 3] for i in range(4, 12)] * 5

    # Execute
    first = make_batches(sequences, 4, pad_id=0, rng=numpy_rng(0, "batches"))
    second = make_batches(sequences, 4, pad_id=0, rng=numpy_rng(0, "batches"))

    # Assert
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert sum(b.shape[0] for b in first) == 40


def test_bucketed_pads_to_bounded_shapes_with_padding_only() -> None:
    # Prepare: 3 rows of width 5 (4 targets); padding id 0
    batch = pad_batch([[2, 5, 6, 3], [2, 7, 3], [2, 8, 9, 10, 3]], pad_id=0)

    # Execute
    padded = bucketed(batch, pad_id=0)

    # Assert: rows 3 -> 4 (a power of two), targets 4 -> 8 (a multiple of 8),
    # the old values in the corner and padding elsewhere; a full shape is kept
    assert tuple(padded.shape) == (4, 9)
    assert torch.equal(padded[:3, :5], batch)
    assert int(padded.sum()) == int(batch.sum())
    full = torch.ones(16, 33, dtype=torch.long)
    assert bucketed(full, pad_id=0) is full


def test_batch_loss_unchanged_by_bucketing() -> None:
    # Prepare: MICRO_SEQUENCES as one (4, 6) batch; bucketing makes it (4, 9)
    model = micro_model()
    batch = pad_batch(MICRO_SEQUENCES, pad_id=0)

    # Execute: the loss of the batch, and a hand-made mean over real targets
    loss = batch_loss(model, batch, pad_id=0)
    logits, _ = model(batch[:, :-1])
    real = batch[:, 1:] != 0
    expected = F.cross_entropy(logits[real], batch[:, 1:][real])

    # Assert
    assert tuple(batch.shape) == (4, 6)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)


def test_make_optimizer_unknown_name_is_value_error() -> None:
    # Prepare
    config = TrainingConfig(optimizer="rmsprop")

    # Execute
    with pytest.raises(ValueError) as caught:
        make_optimizer(micro_model(), config)

    # Assert
    assert "unknown optimizer 'rmsprop'" in str(caught.value)


def test_train_local_one_step_equals_manual_sgd_step() -> None:
    # Prepare: one batch holds every sequence; no clipping
    model, reference = micro_model(), micro_model()
    config = TrainingConfig(batch_size=8, lr=0.1, grad_clip_norm=0.0)
    loss = batch_loss(reference, pad_batch(MICRO_SEQUENCES, 0), pad_id=0)
    loss.backward()
    expected = [p.detach() - 0.1 * p.grad for p in reference.parameters()]

    # Execute
    result = train_local(model, MICRO_SEQUENCES, config, pad_id=0, rng=numpy_rng(0))

    # Assert: 3 + 2 + 5 + 2 targets
    assert (result.steps, result.num_examples, result.num_tokens) == (1, 4, 12)
    assert result.mean_loss == pytest.approx(float(loss.detach()))
    for param, want in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(param, want, atol=1e-6)


def test_train_local_stops_at_max_steps_and_reports_each() -> None:
    # Prepare
    seen: list[int] = []
    config = TrainingConfig(batch_size=1, epochs=3, max_steps=5)

    # Execute
    result = train_local(
        micro_model(),
        MICRO_SEQUENCES,
        config,
        pad_id=0,
        rng=numpy_rng(0),
        on_step=lambda step, loss: seen.append(step),
    )

    # Assert
    assert result.steps == 5
    assert seen == [1, 2, 3, 4, 5]


def test_train_local_without_data_takes_no_step() -> None:
    # Prepare
    config = TrainingConfig()

    # Execute
    result = train_local(micro_model(), [], config, pad_id=0, rng=numpy_rng(0))

    # Assert
    assert (result.steps, result.num_examples, result.num_tokens) == (0, 0, 0)
    assert math.isnan(result.mean_loss)


def test_train_local_lowers_heldout_loss_on_small_slice(
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
    tiny_training_config: TrainingConfig,
) -> None:
    # Prepare: 1,101 training messages, 88 steps of 16
    train = encode_messages(tokenizer, small_splits.train_texts(), 16)
    heldout = small_splits.heldout_texts()
    torch.manual_seed(0)
    model = NextWordModel(tiny_model_config)
    before = count_metrics(model, tokenizer, heldout, max_len=16, keystroke_texts=0)

    # Execute
    result = train_local(
        model,
        train,
        tiny_training_config,
        pad_id=tokenizer.pad_id,
        rng=numpy_rng(0, "train"),
    )
    after = count_metrics(model, tokenizer, heldout, max_len=16, keystroke_texts=0)

    # Assert: untrained, the mean loss is about ln(10,036) = 9.21
    before_loss = before.loss_sum / before.loss_targets
    assert before_loss == pytest.approx(math.log(10_036), abs=0.05)
    assert result.steps == 88
    assert after.loss_sum / after.loss_targets < before_loss - 1.5
    assert before.loss_targets == 5030


def test_train_local_same_seed_same_weights(
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
) -> None:
    # Prepare
    train = encode_messages(tokenizer, small_splits.train_texts()[:200], 16)
    config = TrainingConfig(batch_size=16, max_steps=6)

    def run() -> tuple[NextWordModel, float]:
        torch.manual_seed(1)
        model = NextWordModel(tiny_model_config)
        result = train_local(
            model, train, config, pad_id=tokenizer.pad_id, rng=numpy_rng(1, "c", 7)
        )
        return model, result.mean_loss

    # Execute
    (first, first_loss), (second, second_loss) = run(), run()

    # Assert
    assert first_loss == second_loss
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_train_local_fedprox_runs_and_stays_near_anchor() -> None:
    # Prepare: the same data order with and without the proximal term
    sequences = MICRO_SEQUENCES * 4
    plain_config = TrainingConfig(batch_size=2, lr=0.5, epochs=2)
    prox_config = replace(plain_config, prox_mu=5.0)
    plain, prox = micro_model(), micro_model()
    anchor = [p.detach().clone() for p in plain.parameters()]

    # Execute
    plain_result = train_local(
        plain, sequences, plain_config, pad_id=0, rng=numpy_rng(3)
    )
    prox_result = train_local(prox, sequences, prox_config, pad_id=0, rng=numpy_rng(3))

    # Assert
    assert prox_result.steps == plain_result.steps == 16
    assert math.isfinite(prox_result.mean_loss)
    assert distance(prox, anchor) < distance(plain, anchor)


def test_train_local_fedprox_first_step_equals_plain_sgd() -> None:
    # Prepare: at the anchor the proximal gradient mu * (w - w_global) is zero
    plain, prox = micro_model(), micro_model()
    config = TrainingConfig(batch_size=8, lr=0.1, grad_clip_norm=0.0, max_steps=1)

    # Execute
    train_local(plain, MICRO_SEQUENCES, config, pad_id=0, rng=numpy_rng(0))
    train_local(
        prox,
        MICRO_SEQUENCES,
        replace(config, prox_mu=1.0),
        pad_id=0,
        rng=numpy_rng(0),
    )

    # Assert
    for a, b in zip(plain.parameters(), prox.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-7)
