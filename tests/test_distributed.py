"""The one torch.distributed wrapper (`models.distributed`) and its two callers.

The central baseline (`central.launch.run_worker`) and the fleet's ranks
(`device_sim.ranks.GroupRanks`) join, talk and leave through it; the test below
holds them to the same shutdown, the fix for gloo's SIGABRT at exit included.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from central.launch import run_worker
from device_sim.ranks import GroupRanks
from models.distributed import (
    WorkerContext,
    all_gather_objects,
    all_reduce_sum,
    all_reduce_tensor,
    broadcast_object,
    context_from_env,
)
from models.launch import free_port
from models.rundir import RunDirError

CPU = torch.device("cpu")


def test_context_from_env_reads_torchruns_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    # Execute
    context = context_from_env()

    # Assert
    assert context == WorkerContext(3, 4, 1, CPU)
    assert context.distributed and not context.is_main


def test_one_worker_collectives_are_the_identity() -> None:
    # Prepare: a world of one needs no process group.
    alone = WorkerContext(0, 1, 0, CPU)
    tensor = torch.tensor([1.0, 2.0])

    # Execute
    summed = all_reduce_sum([1.5, 2.0], alone)
    summed_tensor = all_reduce_tensor(tensor, alone)

    # Assert
    assert summed == [1.5, 2.0] and summed_tensor is tensor
    assert all_gather_objects({"a": 1}, alone) == [{"a": 1}]
    assert broadcast_object(7, alone) == 7


@pytest.fixture
def group_of_one() -> Iterator[WorkerContext]:
    """A real gloo process group of one worker in this process."""
    address = f"tcp://127.0.0.1:{free_port()}"
    dist.init_process_group("gloo", init_method=address, rank=0, world_size=1)
    yield WorkerContext(0, 1, 0, CPU)
    if dist.is_initialized():
        dist.destroy_process_group()


def _fleet_leaves(context: WorkerContext, tmp_path: Path) -> None:
    GroupRanks(context=context).close()


def _central_leaves(context: WorkerContext, tmp_path: Path) -> None:
    # A run directory that is not there: the worker fails, and still leaves.
    with pytest.raises(RunDirError):
        run_worker(tmp_path / "no-run", context=context)


@pytest.mark.parametrize("leave", [_fleet_leaves, _central_leaves])
def test_fleet_and_central_leave_the_group_the_same_way(
    leave: Callable[[WorkerContext, Path], None],
    group_of_one: WorkerContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: record what leaving does, still destroying the real group.
    steps: list[str] = []
    destroy = dist.destroy_process_group

    def destroying() -> None:
        steps.append("destroy")
        destroy()

    def collecting(*_: object) -> int:
        steps.append("collect")
        return 0

    monkeypatch.setattr(dist, "destroy_process_group", destroying)
    monkeypatch.setattr(gc, "collect", collecting)

    # Execute
    leave(group_of_one, tmp_path)

    # Assert: the group is gone, then DDP's cycles are collected while alive.
    assert steps == ["destroy", "collect"]
    assert not dist.is_initialized()
