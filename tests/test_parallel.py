"""The process-pool executor: the same reports as in-process, whichever worker."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer
from device_sim.config import FleetConfig, LocalTrainingConfig
from device_sim.executor import SerialExecutor
from device_sim.fleet import Fleet
from device_sim.parallel import ParallelExecutor
from device_sim.phone import ClientReport, Parameters, Phone, parameters_of
from models.config import ModelConfig
from models.model import NextWordModel

# Small rounds: at most 3 steps a phone and a loss sample of 8 sequences.
LOCAL = LocalTrainingConfig(max_local_steps=3, loss_sequences=8)


class BrokenPhone(Phone):
    """A phone whose data cannot be read: its worker must report the error."""

    __slots__ = ()

    def local_data(self, **kwargs: object) -> object:
        raise OSError("storage unreadable")


@pytest.fixture(scope="module")
def phones(small_splits: CorpusSplits) -> list[Phone]:
    """Six phones of the small slice, none of them faulty."""
    fleet = Fleet.from_splits(small_splits, FleetConfig(faulty_fraction=0.0), seed=0)
    return list(fleet)[:6]


@pytest.fixture(scope="module")
def global_parameters(tiny_model_config: ModelConfig) -> Parameters:
    torch.manual_seed(0)
    return parameters_of(NextWordModel(tiny_model_config))


@pytest.fixture(scope="module")
def two_workers(
    tiny_model_config: ModelConfig, tokenizer: WordTokenizer
) -> Iterator[ParallelExecutor]:
    executor = ParallelExecutor(
        model_config=tiny_model_config,
        tokenizer=tokenizer,
        local=LOCAL,
        fault_kind="shape",
        workers=2,
        engine="serial",
    )
    yield executor
    executor.close()


def serial_reports(
    tiny_model_config: ModelConfig,
    tokenizer: WordTokenizer,
    phones: list[Phone],
    global_parameters: Parameters,
) -> list[ClientReport]:
    """The in-process executor's reports, with one torch thread like a worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = SerialExecutor(
            model_config=tiny_model_config, tokenizer=tokenizer, local=LOCAL
        )
        return serial.train(phones, global_parameters, server_round=2)
    finally:
        torch.set_num_threads(threads)


def test_parallel_executor_reports_equal_the_serial_executors(
    two_workers: ParallelExecutor,
    tiny_model_config: ModelConfig,
    tokenizer: WordTokenizer,
    phones: list[Phone],
    global_parameters: Parameters,
) -> None:
    # Prepare
    expected = serial_reports(tiny_model_config, tokenizer, phones, global_parameters)
    seen: list[str] = []

    # Execute
    reports = two_workers.train(
        phones,
        global_parameters,
        server_round=2,
        on_report=lambda r: seen.append(r.client_id),
    )

    # Assert: the phones' order, every phone reported once, the same numbers
    assert [r.client_id for r in reports] == [p.client_id for p in phones]
    assert sorted(seen) == sorted(p.client_id for p in phones)
    for got, want in zip(reports, expected, strict=True):
        assert got.num_examples == want.num_examples
        assert got.metrics.steps == want.metrics.steps
        assert got.metrics.num_tokens == want.metrics.num_tokens
        assert got.metrics.train_loss == pytest.approx(want.metrics.train_loss)
        for a, b in zip(got.update, want.update, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_parallel_executor_result_does_not_depend_on_the_worker(
    two_workers: ParallelExecutor,
    tiny_model_config: ModelConfig,
    tokenizer: WordTokenizer,
    phones: list[Phone],
    global_parameters: Parameters,
) -> None:
    # Prepare: one worker trains every phone; two share them out
    one_worker = ParallelExecutor(
        model_config=tiny_model_config,
        tokenizer=tokenizer,
        local=LOCAL,
        workers=1,
        engine="serial",
    )

    # Execute
    try:
        alone = one_worker.train(phones, global_parameters, server_round=3)
    finally:
        one_worker.close()
    shared = two_workers.train(
        list(reversed(phones)), global_parameters, server_round=3
    )

    # Assert: bitwise equal
    for a, b in zip(alone, reversed(shared), strict=True):
        assert a.client_id == b.client_id
        assert a.metrics == b.metrics
        assert all(torch.equal(x, y) for x, y in zip(a.update, b.update, strict=True))


def test_parallel_executor_sends_faulty_updates_as_they_are(
    two_workers: ParallelExecutor,
    small_splits: CorpusSplits,
    global_parameters: Parameters,
) -> None:
    # Prepare: every phone faulty; "shape" cuts the first tensor by one row
    config = FleetConfig(faulty_fraction=1.0, fault_kind="shape")
    faulty = list(Fleet.from_splits(small_splits, config, seed=0))[:1]

    # Execute
    (report,) = two_workers.train(faulty, global_parameters, server_round=1)

    # Assert
    assert report.update[0].shape[0] == global_parameters[0].shape[0] - 1
    assert [t.shape for t in report.update[1:]] == [
        t.shape for t in global_parameters[1:]
    ]


def test_parallel_executor_evaluate_equals_the_serial_executors(
    two_workers: ParallelExecutor,
    tiny_model_config: ModelConfig,
    tokenizer: WordTokenizer,
    phones: list[Phone],
    global_parameters: Parameters,
) -> None:
    # Prepare
    serial = SerialExecutor(
        model_config=tiny_model_config, tokenizer=tokenizer, local=LOCAL
    )
    keystrokes = [1] * len(phones)

    # Execute
    got = two_workers.evaluate(
        phones, global_parameters, max_messages=4, keystroke_texts=keystrokes
    )
    want = serial.evaluate(
        phones, global_parameters, max_messages=4, keystroke_texts=keystrokes
    )

    # Assert
    assert [c for c, _ in got] == [c for c, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert a.top1_hits == b.top1_hits and a.loss_targets == b.loss_targets
        assert a.loss_sum == pytest.approx(b.loss_sum, rel=1e-5)


def test_parallel_executor_raises_a_workers_error_and_stops(
    tiny_model_config: ModelConfig,
    tokenizer: WordTokenizer,
    phones: list[Phone],
    global_parameters: Parameters,
) -> None:
    # Prepare
    good = phones[0]
    broken = BrokenPhone(
        "broken", train=["hi"], future=[], profile=good.profile, seed=0
    )
    executor = ParallelExecutor(
        model_config=tiny_model_config, tokenizer=tokenizer, local=LOCAL, workers=1
    )
    pids = executor.worker_pids()

    # Execute / Assert
    with pytest.raises(RuntimeError, match="storage unreadable"):
        executor.train([good, broken], global_parameters, server_round=1)
    assert executor.worker_pids() == []
    assert all(not os.path.exists(f"/proc/{pid}") for pid in pids)


def test_parallel_executor_rejects_an_unknown_engine(
    tiny_model_config: ModelConfig, tokenizer: WordTokenizer
) -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="unknown engine"):
        ParallelExecutor(
            model_config=tiny_model_config,
            tokenizer=tokenizer,
            local=LOCAL,
            engine="gpu",
        )
