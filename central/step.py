"""One data-parallel optimizer step, normalised by the global target count.

DDP averages gradients over the W workers. If each worker backpropagated its own
mean loss, the step would weight a worker's tokens by 1 / (its target count), and
two workers with batch b would differ from one worker with batch 2b whenever
their batches hold different numbers of targets. Here every worker
backpropagates `W x (its summed cross-entropy) / (targets of all workers)`, with
the global count from an all-reduce before the backward pass, so DDP's average is
exactly the gradient of the mean loss over every target of the global batch: the
same as one worker taking the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.batching import count_targets
from models.distributed import WorkerContext, all_reduce_sum
from models.training import batch_loss


@dataclass(frozen=True)
class StepResult:
    """What one step did, from this worker's side."""

    loss_sum: float  # summed cross-entropy of this worker's targets
    local_targets: int  # this worker's non-padding targets
    global_targets: int  # targets of all workers together


def data_parallel_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: torch.Tensor,
    *,
    pad_id: int,
    grad_clip_norm: float,
    context: WorkerContext,
) -> StepResult:
    """One optimizer step of `model` (DDP-wrapped when W > 1) on this worker's batch.

    Args:
        model: The model, wrapped in `DistributedDataParallel` when W > 1.
        optimizer: Its optimizer.
        batch: This worker's (B, L+1) batch, on the model's device.
        pad_id: The padding id, ignored as a target.
        grad_clip_norm: Global gradient-norm clip (0: none), applied after averaging so
            every worker clips the same gradient.
        context: The worker's rank and world size.
    """
    local = count_targets(batch, pad_id)
    (global_targets,) = all_reduce_sum([float(local)], context)
    optimizer.zero_grad(set_to_none=True)
    loss_sum = batch_loss(model, batch, pad_id, reduction="sum")
    (loss_sum * (context.world_size / global_targets)).backward()
    if grad_clip_norm > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
    optimizer.step()
    return StepResult(float(loss_sum.detach()), local, int(global_targets))
