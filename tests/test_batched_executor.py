"""The in-process batched executor gives the serial executor's reports."""

from __future__ import annotations

import pytest
import torch

from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer
from device_sim.batched import BatchedExecutor
from device_sim.config import FleetConfig, LocalTrainingConfig
from device_sim.executor import SerialExecutor
from device_sim.fleet import Fleet
from device_sim.phone import Phone, parameters_of
from models.config import ModelConfig
from models.model import NextWordModel

# Small rounds: at most 3 steps a phone and a loss sample of 8 sequences.
LOCAL = LocalTrainingConfig(max_local_steps=3, loss_sequences=8, prox_mu=0.1)


def fleet_phones(splits: CorpusSplits, **fleet: object) -> list[Phone]:
    return list(Fleet.from_splits(splits, FleetConfig(**fleet), seed=0))[:5]


@pytest.mark.parametrize("group_size", [1, 3])
def test_batched_executor_reports_equal_the_serial_executors(
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
    group_size: int,
) -> None:
    # Prepare
    torch.manual_seed(0)
    global_parameters = parameters_of(NextWordModel(tiny_model_config))
    phones = fleet_phones(small_splits, faulty_fraction=0.0)
    settings = {"model_config": tiny_model_config, "tokenizer": tokenizer}
    serial = SerialExecutor(**settings, local=LOCAL)
    batched = BatchedExecutor(**settings, local=LOCAL, group_size=group_size)
    seen: list[str] = []

    # Execute
    want = serial.train(phones, global_parameters, server_round=4)
    got = batched.train(
        phones,
        global_parameters,
        server_round=4,
        on_report=lambda r: seen.append(r.client_id),
    )

    # Assert
    assert [r.client_id for r in got] == [p.client_id for p in phones] == seen
    for a, b in zip(got, want, strict=True):
        assert a.num_examples == b.num_examples
        assert (a.metrics.steps, a.metrics.num_tokens) == (
            b.metrics.steps,
            b.metrics.num_tokens,
        )
        for name in ("loss_before", "loss_after", "train_loss"):
            assert getattr(a.metrics, name) == pytest.approx(
                getattr(b.metrics, name), abs=1e-5
            )
        for x, y in zip(a.update, b.update, strict=True):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


def test_batched_executor_corrupts_a_faulty_phones_update(
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
) -> None:
    # Prepare: "scale" multiplies the update by 1000
    torch.manual_seed(0)
    global_parameters = parameters_of(NextWordModel(tiny_model_config))
    honest = fleet_phones(small_splits, faulty_fraction=0.0)[:1]
    faulty = fleet_phones(small_splits, faulty_fraction=1.0, fault_kind="scale")[:1]
    executor = BatchedExecutor(
        model_config=tiny_model_config,
        tokenizer=tokenizer,
        local=LOCAL,
        fault_kind="scale",
    )

    # Execute
    (clean,) = executor.train(honest, global_parameters, server_round=1)
    (bad,) = executor.train(faulty, global_parameters, server_round=1)

    # Assert
    for x, y in zip(bad.update, clean.update, strict=True):
        torch.testing.assert_close(x, y * 1000.0, atol=1e-4, rtol=1e-5)


def test_batched_executor_evaluates_as_the_serial_executor(
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
) -> None:
    # Prepare
    torch.manual_seed(0)
    global_parameters = parameters_of(NextWordModel(tiny_model_config))
    phones = fleet_phones(small_splits)[:2]
    settings = {"model_config": tiny_model_config, "tokenizer": tokenizer}

    # Execute
    got = BatchedExecutor(**settings, local=LOCAL).evaluate(
        phones, global_parameters, max_messages=3, keystroke_texts=[1, 1]
    )
    want = SerialExecutor(**settings, local=LOCAL).evaluate(
        phones, global_parameters, max_messages=3, keystroke_texts=[1, 1]
    )

    # Assert
    assert got == want
