"""The ranks a fleet is spread over: this process alone, or a torch.distributed group.

The fleet follows the torchrun convention of the central baseline: W ranks, each
training its share of a round's phones on one resident model, with collectives for
the few things that must cross between them (one all-reduce of the round's
weighted sums, a gather of a few numbers per phone). `SingleRank` is the W = 1
case in-process, with no process group, for tests and notebooks; `GroupRanks`
wraps a `torch.distributed` process group (gloo on CPU, nccl with CUDA), started
from the environment that torchrun, or `models.launch`, sets. Both sides join,
talk and leave through `models.distributed`, so the fleet and the central
baseline cannot drift apart.

Shares are balanced by expected work, longest first to the least-loaded rank
(Graham's LPT rule, as pfl-research spreads its clients over workers).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.distributed as dist

from models.distributed import (
    WorkerContext,
    all_gather_objects,
    all_reduce_tensor,
    broadcast_object,
    context_from_env,
    destroy_process_group,
    init_process_group,
)


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
    """A rank of a `torch.distributed` process group (`models.distributed`)."""

    def __init__(self, *, context: WorkerContext) -> None:
        if context.distributed and not dist.is_initialized():
            raise RuntimeError("GroupRanks needs an initialised process group")
        self.context = context
        self.rank = context.rank
        self.world_size = context.world_size

    @classmethod
    def from_environment(cls, *, timeout_s: float = 600.0) -> GroupRanks:
        """Join the group that RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT name.

        gloo on CPU, nccl when CUDA is available (one GPU a local rank).
        """
        context = context_from_env()
        init_process_group(context, timeout_s=timeout_s)
        return cls(context=context)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over the group in place (moved to the group's device for nccl)."""
        return all_reduce_tensor(tensor, self.context)

    def all_gather_objects(self, value: object) -> list[object]:
        """Every rank's value, in rank order."""
        return all_gather_objects(value, self.context)

    def broadcast_object(self, value: object) -> object:
        """Rank 0's value."""
        return broadcast_object(value, self.context)

    def close(self) -> None:
        """Leave the group, as the central baseline does."""
        destroy_process_group()


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
