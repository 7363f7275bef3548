"""`fedtype demo --engine onnx`: the global strip from the model exported at each
round (tui.onnx_fleet), with a small real fleet and the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from helpers import NewSimulation, small_federation

from models.onnx_engine import OnnxNextWordModel
from models.suggest import Suggester
from tui.onnx_fleet import OnnxFleet
from tui.sim_fleet import SimulationFleet


def test_onnx_fleet_exports_each_global_model_it_hands_on(
    tmp_path: Path, new_simulation: NewSimulation
) -> None:
    # Prepare
    inner = SimulationFleet(
        new_simulation(tmp_path / "run", small_federation()), name="test-run"
    )
    fleet = OnnxFleet(inner, out=tmp_path / "run" / "export")
    tokens = torch.tensor([[2, 40, 41, 42]])

    # Execute: the fleet opens, then a round lands.
    opened = fleet.global_snapshot()
    record, landed = fleet.train_round()
    manifest = json.loads((tmp_path / "run" / "export" / "manifest.json").read_text())
    expected = inner.global_snapshot()
    with torch.inference_mode():
        found_logits, _ = landed(tokens)
        expected_logits, _ = expected(tokens)

    # Assert: round 1's model, exported, suggests what PyTorch's does.
    assert isinstance(opened, OnnxNextWordModel)
    assert isinstance(landed, OnnxNextWordModel)
    assert record["server_round"] == 1 and manifest["source"]["server_round"] == 1
    assert (found_logits - expected_logits).abs().max() <= 1e-4
    assert Suggester(landed, fleet.tokenizer).suggest("how are ") == Suggester(
        expected, fleet.tokenizer
    ).suggest("how are ")
    fleet.close()
