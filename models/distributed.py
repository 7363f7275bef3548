"""torch.distributed for the central baseline and the fleet, torchrun's convention.

A worker learns its place from the environment torchrun (or `models.launch`)
sets: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`. Without
them, or with a world of one, no process group is made and every collective is a
no-op, so one process runs the very same code. The group is gloo on CPU and nccl
on GPU; rank 0 alone logs and saves; `destroy_process_group` ends every job. The
central baseline (`central.launch`) calls these functions with its
`WorkerContext`; the fleet's ranks (`device_sim.ranks.GroupRanks`) wrap them.

(No `from __future__ import annotations` here: DDP checks the comm hook's
annotations at run time.)

Bytes exchanged are counted with a DDP communication hook that sees every
gradient bucket DDP all-reduces: a bucket of N bytes costs each worker
2 (W-1)/W N bytes sent under ring all-reduce (reduce-scatter, then all-gather),
the bandwidth-optimal schedule, so the job sends 2 (W-1) N bytes in all.
"""

import gc
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook


@dataclass(frozen=True)
class WorkerContext:
    """Where this worker stands in the job."""

    rank: int  # global rank, 0 logs, evaluates and saves
    world_size: int  # workers in the job
    local_rank: int  # rank on this machine: picks the GPU
    device: torch.device  # where the model trains

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def context_from_env() -> WorkerContext:
    """The worker's context from torchrun's variables (a world of one without)."""
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    else:
        device = torch.device("cpu")
    return WorkerContext(rank, world_size, local_rank, device)


def init_process_group(context: WorkerContext, *, timeout_s: float) -> None:
    """Join the job's process group: nccl on GPU, gloo on CPU (none for one worker)."""
    if not context.distributed or dist.is_initialized():
        return
    if context.device.type == "cuda":
        torch.cuda.set_device(context.device)
    backend = "nccl" if context.device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        init_method="env://",
        rank=context.rank,
        world_size=context.world_size,
        timeout=timedelta(seconds=timeout_s),
    )


def destroy_process_group() -> None:
    """Leave the process group if there is one, and free what still holds it.

    DDP's reference cycles keep the group alive after it is destroyed; left to
    interpreter shutdown, gloo's threads abort the process (SIGABRT, "terminate
    called without an active exception"), so they are collected here, while the
    interpreter lives. Safe to call twice, or with no group.
    """
    if dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()


def all_reduce_sum(values: list[float], context: WorkerContext) -> list[float]:
    """The element-wise sum of `values` over all workers (float64 on the wire)."""
    if not context.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def all_reduce_tensor(tensor: torch.Tensor, context: WorkerContext) -> torch.Tensor:
    """Sum `tensor` over all workers in place and return it.

    It crosses on the worker's device (nccl needs the GPU) and is copied back.
    """
    if not context.distributed:
        return tensor
    on_device = tensor.to(context.device)
    dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
    if on_device is not tensor:
        tensor.copy_(on_device)
    return tensor


def all_gather_objects(value: object, context: WorkerContext) -> list[object]:
    """Every worker's `value`, in rank order (small picklable values only)."""
    if not context.distributed:
        return [value]
    gathered: list[object] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: object, context: WorkerContext) -> object:
    """Rank 0's `value` on every worker (small picklable values only)."""
    if not context.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(context: WorkerContext) -> None:
    """Wait for every worker (no-op for one)."""
    if context.distributed:
        dist.barrier()


def ring_allreduce_bytes(payload_bytes: int, world_size: int) -> int:
    """Bytes all W workers send together to all-reduce `payload_bytes` by ring.

    Each worker sends 2 (W-1)/W of the payload, so the job sends 2 (W-1) of it;
    ring_allreduce_bytes(1000, 2) == 2000 and ring_allreduce_bytes(1000, 1) == 0.
    """
    return 2 * (world_size - 1) * payload_bytes


class ByteCounter:
    """Counts the bytes DDP all-reduces, as a communication hook."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.payload_bytes = 0  # gradient bytes handed to all-reduce, one worker

    @property
    def sent_bytes(self) -> int:
        """Bytes all workers sent for those all-reduces (ring model)."""
        return ring_allreduce_bytes(self.payload_bytes, self.world_size)

    def hook(
        self, process_group: dist.ProcessGroup, bucket: dist.GradBucket
    ) -> torch.futures.Future[torch.Tensor]:
        """DDP comm hook: count the bucket, then the default averaging all-reduce."""
        buffer = bucket.buffer()
        self.payload_bytes += buffer.numel() * buffer.element_size()
        return allreduce_hook(process_group, bucket)
