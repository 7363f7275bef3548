"""The process-pool executor: the same reports as in-process, whichever worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from coordinator.config import FederationConfig, FederationConfigError
from coordinator.simulation import Simulation
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


# Two rounds of three phones, the second evaluated on the phones' future text.
SMALL_RUN = FederationConfig(
    rounds=2,
    clients_per_round=3,
    eval_every=2,
    heldout_messages=20,
    future_messages=20,
    keystroke_texts=4,
    local=LOCAL,
)
Run = tuple[list[dict[str, Any]], list[torch.Tensor]]


def run_simulation(
    path: Path,
    executor: str,
    splits: CorpusSplits,
    tokenizer: WordTokenizer,
    model: ModelConfig,
) -> Run:
    """The metrics lines and final global weights of SMALL_RUN on `executor`."""
    simulation = Simulation.create(
        path,
        federation=replace(SMALL_RUN, executor=executor),
        corpus=splits.config,
        model=model,
        tokenizer=tokenizer,
        splits=splits,
    )
    try:
        records = [simulation.run_round() for _ in range(2)]
    finally:
        simulation.close()
    return records, [p.detach() for p in simulation.global_model.parameters()]


@pytest.fixture(scope="module")
def serial_run(
    tmp_path_factory: pytest.TempPathFactory,
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
) -> Run:
    path = tmp_path_factory.mktemp("serial") / "run"
    return run_simulation(path, "serial", small_splits, tokenizer, tiny_model_config)


@pytest.mark.parametrize("executor", ["parallel", "batched"])
def test_simulation_runs_the_configured_executor_like_the_serial_one(
    tmp_path: Path,
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
    serial_run: Run,
    executor: str,
) -> None:
    # Prepare
    want_records, want = serial_run

    # Execute
    got_records, got = run_simulation(
        tmp_path / "run", executor, small_splits, tokenizer, tiny_model_config
    )

    # Assert
    for a, b in zip(got_records, want_records, strict=True):
        assert (a["tokens"], a["reported"]) == (b["tokens"], b["reported"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
    assert got_records[1]["future"]["top3"] == pytest.approx(
        want_records[1]["future"]["top3"], abs=1e-6
    )
    for x, y in zip(got, want, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


def test_federation_config_rejects_an_unknown_executor() -> None:
    # Execute / Assert
    with pytest.raises(FederationConfigError, match="unknown executor"):
        FederationConfig(executor="cluster")
