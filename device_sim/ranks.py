"""The ranks a fleet is spread over: this process alone, or a torch.distributed group.

The fleet follows the torchrun convention of the central baseline: W ranks, each
training its share of a round's phones on one resident model, with collectives for
the few things that must cross between them (one all-reduce of the round's
weighted sums, a gather of a few numbers per phone). `SingleRank` is the W = 1
case in-process, with no process group, for tests and notebooks; `GroupRanks`
wraps a `torch.distributed` process group (gloo on CPU, nccl with CUDA), started
from the environment that torchrun, or `coordinator.workers`, sets.

Shares are balanced by expected work, longest first to the least-loaded rank
(Graham's LPT rule, as pfl-research spreads its clients over workers).
"""

from __future__ import annotations

import datetime
import heapq
import os
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.distributed as dist


class Ranks(Protocol):
    """This process's place among the fleet's ranks, and their collectives."""

    @property
    def rank(self) -> int:
        """0 .. world_size - 1; rank 0 alone logs, evaluates held-out text, saves."""
        ...

    @property
    def world_size(self) -> int:
        """How many ranks train the fleet."""
        ...

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the ranks in place and return it."""
        ...

    def all_gather_objects(self, value: object) -> list[object]:
        """Every rank's `value`, in rank order (small picklable values only)."""
        ...

    def broadcast_object(self, value: object) -> object:
        """Rank 0's `value` on every rank."""
        ...

    def close(self) -> None:
        """Leave the group; the ranks are not used afterwards."""
        ...


class SingleRank:
    """One process, no process group: every collective is the identity."""

    rank = 0
    world_size = 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor itself: there is nobody to sum with."""
        return tensor

    def all_gather_objects(self, value: object) -> list[object]:
        """`[value]`."""
        return [value]

    def broadcast_object(self, value: object) -> object:
        """`value`."""
        return value

    def close(self) -> None:
        """Nothing to leave."""


class GroupRanks:
    """A rank of a `torch.distributed` process group."""

    def __init__(self, *, device: torch.device | None = None) -> None:
        if not dist.is_initialized():
            raise RuntimeError("GroupRanks needs an initialised process group")
        self._rank = dist.get_rank()
        self._world_size = dist.get_world_size()
        self.device = device or torch.device("cpu")

    @classmethod
    def from_environment(cls, *, timeout_s: float = 600.0) -> GroupRanks:
        """Join the group that RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT name.

        gloo on CPU, nccl when CUDA is available (one GPU a local rank).
        """
        cuda = torch.cuda.is_available()
        device = torch.device("cpu")
        if cuda:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(
                backend="nccl" if cuda else "gloo",
                timeout=datetime.timedelta(seconds=timeout_s),
            )
        return cls(device=device)

    @property
    def rank(self) -> int:
        """This process's rank."""
        return self._rank

    @property
    def world_size(self) -> int:
        """Ranks in the group."""
        return self._world_size

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over the group in place (moved to the group's device for nccl)."""
        on_device = tensor.to(self.device)
        dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
        if on_device is not tensor:
            tensor.copy_(on_device)
        return tensor

    def all_gather_objects(self, value: object) -> list[object]:
        """Every rank's value, in rank order."""
        gathered: list[object] = [None] * self._world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast_object(self, value: object) -> object:
        """Rank 0's value."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Destroy the process group."""
        if dist.is_initialized():
            dist.destroy_process_group()


def assign_shares(work: Sequence[float], world_size: int) -> list[int]:
    """The rank of each item: longest first to the least-loaded rank.

    Ties go to the lower rank and, among equal items, the earlier one first, so
    every rank computes the same assignment from the same `work`.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    owner = [0] * len(work)
    loads = [(0.0, r) for r in range(world_size)]
    heapq.heapify(loads)
    for index in sorted(range(len(work)), key=lambda i: (-work[i], i)):
        load, rank = heapq.heappop(loads)
        owner[index] = rank
        heapq.heappush(loads, (load + work[index], rank))
    return owner
