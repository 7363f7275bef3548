"""Tests of device_sim.compression: QSGD int8 and top-k with error feedback, the
bytes a phone really sends, and the refusals beside secure aggregation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_rounds import environment, federation, start

from cli.main import main
from coordinator.config import FederationConfig, FederationConfigError
from coordinator.privacy.privacy_config import PrivacyConfig
from coordinator.round.rounds import model_bytes, run_round
from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer
from device_sim.compression import (
    Compression,
    Uplink,
    compress,
    decompress,
    parse_compression,
    quantize_int8,
    top_k,
)
from device_sim.config import FleetConfigError, LocalTrainingConfig
from device_sim.fleet import Fleet
from device_sim.phone import ClientMetrics, ClientReport
from models.config import ModelConfig
from models.model import NextWordModel
from models.weights import parameters_of

METRICS = ClientMetrics(1.0, 1.0, 1.0, 1, 1)


class FixedDraws:
    """A stand-in random stream whose uniform draws are given."""

    def __init__(self, *draws: float) -> None:
        self.draws = np.array(draws)

    def random(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.draws.reshape(shape)


def test_quantize_int8_hand_computed() -> None:
    # Prepare: scale = 1.27 / 127 = 0.01, so x / scale = [127, -63.5, 0, 25.2].
    tensor = torch.tensor([1.27, -0.635, 0.0, 0.252])

    # Execute: -63.5 rounds up (0.2 < 0.5), 25.2 rounds down (0.7 >= 0.2).
    message = quantize_int8(tensor, FixedDraws(0.9, 0.2, 0.7, 0.7))  # type: ignore[arg-type]
    received = decompress(message, tensor)

    # Assert
    assert message.levels.tolist() == [127, -63, 0, 25]
    assert message.scale == pytest.approx(0.01)
    assert received.tolist() == pytest.approx([1.27, -0.63, 0.0, 0.25], abs=1e-6)
    assert message.nbytes == 4 + 4  # a byte a value and a float32 scale


def test_quantize_int8_of_zeros_is_zero_without_a_scale() -> None:
    # Execute
    message = quantize_int8(torch.zeros(3), np.random.default_rng(0))

    # Assert
    assert message.levels.tolist() == [0, 0, 0] and message.scale == 0.0
    assert decompress(message, torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_quantize_int8_is_unbiased() -> None:
    # Prepare: 0.3 / (1 / 127) = 38.1: 38 or 39, with mean 38.1.
    tensor = torch.tensor([0.3, -0.7, 1.0])
    rng = np.random.default_rng(0)

    # Execute
    mean = (
        sum(decompress(quantize_int8(tensor, rng), tensor) for _ in range(4000)) / 4000
    )

    # Assert: the rounding step is 1/127; 4,000 draws leave about 1e-4 of noise.
    assert mean.tolist() == pytest.approx([0.3, -0.7, 1.0], abs=1e-3)


def test_top_k_keeps_the_largest_magnitudes() -> None:
    # Prepare
    tensor = torch.tensor([[0.1, -3.0], [2.0, 0.5]])

    # Execute
    message = top_k(tensor, 0.5)

    # Assert
    assert message.indices.tolist() == [1, 2] and message.values.tolist() == [-3, 2]
    assert decompress(message, tensor).tolist() == [[0.0, -3.0], [2.0, 0.0]]
    assert message.nbytes == 2 * 8  # an int32 index and a float32 value each


def test_top_k_error_feedback_sends_what_was_held_back() -> None:
    # Prepare: one value of two a round.
    topk = Compression("topk", 0.5)
    rng = np.random.default_rng(0)

    # Execute
    first, residual = compress([torch.tensor([1.0, 2.0])], topk, rng)
    second, residual_after = compress([torch.tensor([0.5, 0.5])], topk, rng, residual)

    # Assert: round 1 sends the 2 and keeps the 1; round 2 sees [1.5, 0.5].
    assert residual is not None and residual[0].tolist() == [1.0, 0.0]
    assert decompress(second[0], torch.zeros(2)).tolist() == [1.5, 0.0]
    assert residual_after is not None and residual_after[0].tolist() == [0.0, 0.5]
    assert decompress(first[0], torch.zeros(2)).tolist() == [0.0, 2.0]


@pytest.mark.parametrize("spec", ["topk:0", "topk:1.5", "topk:x", "topk", "gzip", ""])
def test_parse_compression_refuses(spec: str) -> None:
    with pytest.raises(FleetConfigError, match="update_compression"):
        parse_compression(spec)


def test_parse_compression_reads_the_fraction() -> None:
    assert parse_compression("topk:0.01") == Compression("topk", 0.01)
    assert parse_compression("int8") == Compression("int8")


def test_uplink_counts_the_bytes_sent_and_keeps_the_residual() -> None:
    # Prepare: tensors of 3 and 2 values.
    update = [torch.tensor([0.5, -1.0, 0.25]), torch.tensor([2.0, 0.0])]
    report = ClientReport("p", update, 4, METRICS)

    # Execute
    int8 = Uplink("int8", seed=0).send(report, server_round=1)
    topk_uplink = Uplink("topk:0.5", seed=0)
    topk = topk_uplink.send(report, server_round=1)
    none = Uplink("none", seed=0).send(report, server_round=1)

    # Assert: int8: 5 bytes and two scales; topk: 2 of 3 and 1 of 2 values, 8 each.
    assert int8.bytes_up == 5 + 2 * 4
    assert topk.bytes_up == (2 + 1) * 8
    assert [t.tolist() for t in topk.update] == [[0.5, -1.0, 0.0], [2.0, 0.0]]
    assert [t.tolist() for t in topk_uplink.residuals["p"]] == [
        [0.0, 0.0, 0.25],
        [0.0, 0.0],
    ]
    assert none is report and none.bytes_up is None


def test_uplink_sends_a_non_finite_update_whole_for_the_screen() -> None:
    # Prepare
    report = ClientReport("p", [torch.tensor([float("nan"), 1.0])], 4, METRICS)

    # Execute
    sent = Uplink("int8", seed=0).send(report, server_round=1)

    # Assert
    assert sent is report


def test_run_round_bytes_up_are_the_bytes_sent(
    small_splits: CorpusSplits, tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare: int8 updates, four reports.
    config = federation(
        local=LocalTrainingConfig(max_local_steps=2, update_compression="int8")
    )
    fleet = Fleet.from_splits(small_splits, config.fleet, seed=0)
    parameters = parameters_of(NextWordModel(tiny_model_config))
    values = sum(p.numel() for p in parameters)

    # Execute
    env = environment(fleet, config, tokenizer, tiny_model_config)
    _, metrics = run_round(start(config, tiny_model_config), env, config)

    # Assert: a byte a weight and a float32 scale a tensor, per report.
    assert metrics.reported == 4 and not metrics.abandoned
    assert metrics.bytes_up == 4 * (values + 4 * len(parameters))
    assert metrics.bytes_up < 4 * model_bytes(parameters) / 3.9  # float32: 4x


def test_compression_beside_secure_aggregation_is_refused() -> None:
    # Prepare
    local = LocalTrainingConfig(update_compression="int8")

    # Execute / Assert
    with pytest.raises(FederationConfigError, match="does not compose with secure"):
        FederationConfig(local=local, privacy=PrivacyConfig(secure_aggregation=True))


def test_cli_simulate_secagg_with_compression_is_one_line_exit_2(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    out = f"{tmp_path}/run"
    argv = ["simulate", "--out", out, "--secure-aggregation"]

    # Execute
    code = main([*argv, "--update-compression", "topk:0.1"])
    err = capsys.readouterr().err

    # Assert
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "does not compose with secure aggregation" in err


def test_topk_with_several_workers_is_refused() -> None:
    # Prepare: error feedback lives in the process that trains the phone.
    local = LocalTrainingConfig(update_compression="topk:0.1")

    # Execute / Assert
    with pytest.raises(FederationConfigError, match="use one worker"):
        FederationConfig(local=local, workers=2)
