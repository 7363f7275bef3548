"""The fleet on ranks: share assignment, and W = 2 equal to W = 1 on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from device_sim.ranks import SingleRank, assign_shares

SIMULATE = [
    "simulate",
    "--rounds",
    "2",
    "--max-users",
    "40",
    "--clients-per-round",
    "6",
    "--eval-every",
    "2",
    "--threads",
    "1",
    "--embed-dim",
    "16",
    "--hidden-dim",
    "32",
]


def test_assign_shares_longest_first_to_least_loaded() -> None:
    # Prepare: by hand, 5 -> r0 (5), 3 -> r1 (3), 3 -> r1 (6), 2 -> r0 (7),
    # 1 -> r1 (7).
    work = [5.0, 3.0, 3.0, 2.0, 1.0]

    # Execute
    owner = assign_shares(work, 2)

    # Assert
    assert owner == [0, 1, 1, 0, 1]


def test_assign_shares_one_rank_takes_everything() -> None:
    # Prepare / Execute
    owner = assign_shares([1.0, 9.0, 4.0], 1)

    # Assert
    assert owner == [0, 0, 0]


def test_assign_shares_rejects_no_ranks() -> None:
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match="world_size"):
        assign_shares([1.0], 0)


def test_single_rank_collectives_are_the_identity() -> None:
    # Prepare
    import torch

    ranks = SingleRank()
    tensor = torch.tensor([1.0, 2.0])

    # Execute
    summed = ranks.all_reduce_sum(tensor)
    gathered = ranks.all_gather_objects({"a": 1})

    # Assert
    assert summed is tensor and gathered == [{"a": 1}]
    assert ranks.broadcast_object(3) == 3


def _metrics(run: Path) -> list[dict[str, object]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(line).items() if "seconds" not in k}
        for line in lines
    ]


def test_simulate_two_workers_equal_one_worker_on_loopback(tmp_path: Path) -> None:
    # Prepare
    def simulate(out: Path, *extra: str) -> None:
        command = [sys.executable, "-m", "cli", *SIMULATE, "--out", str(out), *extra]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr

    # Execute
    simulate(tmp_path / "one", "--workers", "1")
    simulate(tmp_path / "two", "--workers", "2")

    # Assert: every figure but the wall-clock ones, to the last digit here.
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert len(one) == 2 and one[-1]["heldout"] is not None
    assert one == two
