"""`fedtype central --workers 2` end to end: the trainer under DDP on loopback."""

from __future__ import annotations

from pathlib import Path

from cli.main import main
from models.config import ModelConfig
from models.model import NextWordModel
from models.rundir import RunDir


def test_cli_central_two_workers_saves_metrics_and_counts_bytes(
    tmp_path: Path, corpus_file: str
) -> None:
    # Prepare
    out = tmp_path / "run"
    argv = ["central", "--out", str(out), "--workers", "2", "--threads", "1"]
    argv += ["--corpus", corpus_file, "--max-steps", "6", "--eval-every", "3"]
    argv += ["--embed-dim", "16", "--hidden-dim", "32", "--batch-size", "16"]
    # Execute
    status = main(argv)
    # Assert
    assert status == 0
    run = RunDir(out)
    records = run.read_metrics()
    assert [r["step"] for r in records] == [3, 6]
    assert all(r["world_size"] == 2 for r in records)
    # Bytes by hand: DDP's initial broadcast of the weights to the one other
    # worker, then per step a ring all-reduce of every float32 gradient
    # (2 (W-1) = 2 payloads) and of the float64 target count (2 x 8 bytes).
    config = run.read_config()
    model = NextWordModel(ModelConfig(**config["model"]))
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert records[-1]["bytes_total"] == weights + 6 * (2 * weights + 16)
    assert records[-1]["tokens_total"] > records[0]["tokens_total"] > 0
    assert records[-1]["heldout"]["num_messages"] > 0
    assert config["kind"] == "central" and config["workers"] == 2
    assert run.checkpoint_steps()[-1] == 6
