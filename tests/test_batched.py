"""Batched training of many phones equals `train_local` on each phone alone."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer
from device_sim.batched import phone_batches, sgd_step, train_phones
from device_sim.stacked_lstm import PARAMETER_NAMES, probe_losses, stack_parameters
from models.batching import encode_messages, make_batches
from models.config import ModelConfig, TrainingConfig
from models.model import NextWordModel
from models.seeding import numpy_rng
from models.training import evaluate_loss, train_local

# Sequences of the three phones: unequal, so they take 1, 3 and 5 steps of 8.
PHONE_SIZES = (5, 20, 40)


def phones_from(
    splits: CorpusSplits, tokenizer: WordTokenizer, max_len: int
) -> list[list[list[int]]]:
    """Three phones' sequences, cut from the real training users' texts."""
    texts = splits.train_texts()
    sequences = encode_messages(tokenizer, texts, max_len)
    phones, start = [], 0
    for size in PHONE_SIZES:
        phones.append(sequences[start : start + size])
        start += size
    return phones


def fresh_model(config: ModelConfig, seed: int = 0) -> NextWordModel:
    torch.manual_seed(seed)
    return NextWordModel(config)


def reference(
    model: NextWordModel,
    phones: list[list[list[int]]],
    config: TrainingConfig,
    pad_id: int,
) -> list[tuple[list[torch.Tensor], object]]:
    """`train_local` on a fresh copy of `model` per phone: updates and results."""
    out = []
    for k, sequences in enumerate(phones):
        local = copy.deepcopy(model)
        result = train_local(
            local, sequences, config, pad_id=pad_id, rng=numpy_rng(7, 1, k)
        )
        update = [
            p.detach() - g.detach()
            for p, g in zip(local.parameters(), model.parameters(), strict=True)
        ]
        out.append((update, result))
    return out


@pytest.mark.parametrize(
    ("config", "steps"),
    [
        # The clip binds (the tiny model's gradient norms are near 1); 2 epochs of
        # 1, 3 and 5 batches capped at 5 steps.
        (
            TrainingConfig(batch_size=8, lr=0.5, epochs=2, max_steps=5, clip_norm=0.05),
            [2, 5, 5],
        ),
        # No clip, FedProx on, one epoch.
        (
            TrainingConfig(batch_size=8, lr=0.3, epochs=1, clip_norm=0.0, prox_mu=0.5),
            [1, 3, 5],
        ),
    ],
)
def test_train_phones_matches_train_local_per_phone(
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
    config: TrainingConfig,
    steps: list[int],
) -> None:
    # Prepare
    model = fresh_model(tiny_model_config)
    phones = phones_from(small_splits, tokenizer, tiny_model_config.max_len)
    expected = reference(model, phones, config, tokenizer.pad_id)

    # Execute
    got = train_phones(
        model,
        phones,
        config,
        pad_id=tokenizer.pad_id,
        rngs=[numpy_rng(7, 1, k) for k in range(len(phones))],
    )

    # Assert
    for (update, result), phone in zip(expected, got, strict=True):
        assert phone.result.num_examples == result.num_examples
        assert phone.result.num_tokens == result.num_tokens
        assert phone.result.steps == result.steps
        assert phone.result.mean_loss == pytest.approx(result.mean_loss, abs=1e-5)
        for mine, theirs in zip(phone.update, update, strict=True):
            assert mine.shape == theirs.shape
            torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
    assert [p.result.steps for p in got] == steps


def test_train_phones_leaves_the_global_model_unchanged(
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
) -> None:
    # Prepare
    model = fresh_model(tiny_model_config)
    before = [p.detach().clone() for p in model.parameters()]
    phones = phones_from(small_splits, tokenizer, tiny_model_config.max_len)

    # Execute
    train_phones(
        model,
        phones,
        TrainingConfig(batch_size=8, max_steps=2),
        pad_id=tokenizer.pad_id,
        rngs=[numpy_rng(0, k) for k in range(3)],
    )

    # Assert
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), b)


def test_train_phones_result_does_not_depend_on_the_group(
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
) -> None:
    # Prepare
    model = fresh_model(tiny_model_config)
    phones = phones_from(small_splits, tokenizer, tiny_model_config.max_len)
    config = TrainingConfig(batch_size=8, max_steps=3)

    def run(group_size: int) -> list[list[torch.Tensor]]:
        rngs = [numpy_rng(3, k) for k in range(3)]
        return [
            p.update
            for p in train_phones(
                model,
                phones,
                config,
                pad_id=tokenizer.pad_id,
                rngs=rngs,
                group_size=group_size,
            )
        ]

    # Execute
    alone, together = run(1), run(3)

    # Assert
    for a, b in zip(alone, together, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, atol=1e-6, rtol=0)


def test_train_phones_phone_without_sequences_sends_a_zero_update(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare
    model = fresh_model(tiny_model_config)

    # Execute
    (phone,) = train_phones(
        model,
        [[]],
        TrainingConfig(),
        pad_id=tokenizer.pad_id,
        rngs=[numpy_rng(0, 0)],
    )

    # Assert
    assert phone.result.steps == 0 and phone.result.num_tokens == 0
    assert math.isnan(phone.result.mean_loss)
    assert all(not t.any() for t in phone.update)


def test_train_phones_rejects_adam(tiny_model_config: ModelConfig) -> None:
    # Prepare
    model = fresh_model(tiny_model_config)

    # Execute / Assert
    with pytest.raises(ValueError, match="SGD only"):
        train_phones(
            model,
            [[[2, 5, 3]]],
            TrainingConfig(optimizer="adam"),
            pad_id=0,
            rngs=[numpy_rng(0)],
        )


def test_sgd_step_clips_each_phone_by_its_own_norm() -> None:
    # Prepare: phone 0's gradient has norm 5, phone 1's norm 0.5; clip at 1.
    weights = {"w": torch.zeros(2, 2)}
    grads = {"w": torch.tensor([[3.0, 4.0], [0.3, 0.4]])}
    config = TrainingConfig(lr=1.0, clip_norm=1.0)

    # Execute
    sgd_step(weights, grads, config)

    # Assert: phone 0 steps by its gradient scaled to norm 1, phone 1 unscaled
    expected = torch.tensor([[-0.6, -0.8], [-0.3, -0.4]])
    torch.testing.assert_close(weights["w"], expected, atol=1e-6, rtol=0)


def test_sgd_step_adds_the_proximal_gradient_before_clipping() -> None:
    # Prepare: w = 2, anchor 0, gradient 1, mu = 0.5: 1 + 0.5 * (2 - 0) = 2
    weights = {"w": torch.tensor([[2.0]])}
    grads = {"w": torch.tensor([[1.0]])}
    anchor = {"w": torch.tensor([[0.0]])}
    config = TrainingConfig(lr=0.25, clip_norm=0.0, prox_mu=0.5)

    # Execute
    sgd_step(weights, grads, config, anchor)

    # Assert: 2 - 0.25 * 2
    assert float(weights["w"]) == pytest.approx(1.5)


def test_phone_batches_are_the_batches_of_train_local() -> None:
    # Prepare: 10 sequences in batches of 4 are 3 batches an epoch; 2 epochs, cap 4
    sequences = [[2, 4 + i, 3] for i in range(10)]
    config = TrainingConfig(batch_size=4, epochs=2, max_steps=4)
    rng = np.random.default_rng(5)
    replay = np.random.default_rng(5)

    # Execute
    batches = phone_batches(sequences, config, pad_id=0, rng=rng)

    # Assert: the first epoch's 3 batches, then the first of the second epoch
    first = make_batches(sequences, 4, pad_id=0, rng=replay)
    second = make_batches(sequences, 4, pad_id=0, rng=replay)
    assert len(batches) == 4
    for got, want in zip(batches, [*first, second[0]], strict=True):
        assert torch.equal(got, want)


def test_stack_parameters_stacks_the_model_per_phone(
    tiny_model_config: ModelConfig,
) -> None:
    # Prepare
    model = fresh_model(tiny_model_config)

    # Execute
    stacked = stack_parameters(model, 3)

    # Assert: V = 10,036, E = 16, H = 32
    assert tuple(stacked) == PARAMETER_NAMES
    assert stacked["embedding.weight"].shape == (3, 10_036, 16)
    assert stacked["lstm.weight_hh_l0"].shape == (3, 128, 32)
    assert stacked["projection.weight"].shape == (3, 16, 32)
    assert torch.equal(stacked["output_bias"][2], model.output_bias.detach())


def test_probe_losses_match_evaluate_loss_per_phone(
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
) -> None:
    # Prepare: two different models, probes of 40 and 5 sequences and an empty one
    models = [fresh_model(tiny_model_config, seed) for seed in (1, 2, 3)]
    stacked = {
        name: torch.stack([dict(m.named_parameters())[name].detach() for m in models])
        for name in PARAMETER_NAMES
    }
    phones = phones_from(small_splits, tokenizer, tiny_model_config.max_len)
    probes = [phones[2], phones[0], []]

    # Execute
    got = probe_losses(stacked, probes, pad_id=tokenizer.pad_id, rows=16)

    # Assert
    for (loss, count), model, probe in zip(got, models, probes, strict=True):
        want, want_count = evaluate_loss(model, probe, pad_id=tokenizer.pad_id)
        assert count == want_count
        if count:
            assert loss == pytest.approx(want, abs=1e-5)
        else:
            assert math.isnan(loss)
