"""DDP on two workers equals one worker on the same global batch.

Two gloo workers on 127.0.0.1, started by `central.launch.launch_local`, each take
one optimizer step on their half of a batch whose halves hold different numbers
of targets; one in-process worker takes the same step on the whole batch. With the
global-target normalisation of `central.step` the weights agree within 1e-6.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

from central.errors import WorkerFailedError
from central.launch import launch_local
from central.step import data_parallel_step
from models.config import ModelConfig
from models.distributed import (
    ByteCounter,
    WorkerContext,
    context_from_env,
    destroy_process_group,
    init_process_group,
)
from models.model import NextWordModel
from models.training import batch_loss

PAD = 0
OPTIMIZERS = ("sgd", "adam")
CONFIG = ModelConfig(vocab_size=50, embed_dim=8, hidden_dim=16, max_len=8)
# Four sequences: the first two (worker 0) hold 4 + 2 = 6 targets, the last two
# (worker 1) 7 + 1 = 8, so a mean of per-worker means would weight them unequally.
ROWS = [
    [1, 5, 6, 7, 2],
    [1, 9, 2],
    [1, 11, 12, 13, 14, 15, 16, 2],
    [1, 2],
]


def padded(rows: list[list[int]]) -> torch.Tensor:
    """Rows right-padded with PAD to a (B, L) tensor."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [PAD] * (width - len(r)) for r in rows])


def fresh_model() -> NextWordModel:
    """The same initial model in every process."""
    torch.manual_seed(1234)
    return NextWordModel(CONFIG)


def make_optimizer(model: torch.nn.Module, name: str) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=1e-2)
    return torch.optim.SGD(model.parameters(), lr=0.5)


def ddp_worker(out: str) -> None:
    """One of the two workers: one step on its half with each optimizer.

    Rank 0 saves the weights after the SGD step and after the Adam step (each
    from the same initial model) and the gradient bytes all-reduced per step.
    """
    context = context_from_env()
    init_process_group(context, timeout_s=60)
    try:
        tensors = {}
        for optimizer_name in OPTIMIZERS:
            model = fresh_model()
            counter = ByteCounter(context.world_size)
            network = DistributedDataParallel(model)
            network.register_comm_hook(None, counter.hook)
            optimizer = make_optimizer(network, optimizer_name)
            half = ROWS[2 * context.rank : 2 * context.rank + 2]
            data_parallel_step(
                network,
                optimizer,
                padded(half),
                pad_id=PAD,
                grad_clip_norm=0.0,
                context=context,
            )
            for name, value in model.state_dict().items():
                tensors[f"{optimizer_name}/{name}"] = value.detach().clone()
            tensors[f"{optimizer_name}/bytes"] = torch.tensor([counter.payload_bytes])
        if context.is_main:
            save_file(tensors, out)
    finally:
        destroy_process_group()


def failing_worker() -> None:
    """Rank 1 dies at once; rank 0 would wait at a collective for ever."""
    context = context_from_env()
    init_process_group(context, timeout_s=300)
    try:
        if context.rank == 1:
            raise RuntimeError("rank 1 broke on purpose")
        torch.distributed.barrier()
    finally:
        destroy_process_group()


def one_worker_step(optimizer_name: str) -> dict[str, torch.Tensor]:
    model = fresh_model()
    optimizer = make_optimizer(model, optimizer_name)
    single = WorkerContext(0, 1, 0, torch.device("cpu"))
    data_parallel_step(
        model, optimizer, padded(ROWS), pad_id=PAD, grad_clip_norm=0.0, context=single
    )
    return model.state_dict()


def test_ddp_two_workers_equal_one_worker_with_double_batch(tmp_path: Path) -> None:
    # Prepare
    out = tmp_path / "rank0.safetensors"
    expected = {name: one_worker_step(name) for name in OPTIMIZERS}
    params = sum(p.numel() for p in fresh_model().parameters())
    # Execute
    launch_local(ddp_worker, (str(out),), workers=2, threads=1)
    # Assert
    found = load_file(str(out))
    for optimizer_name in OPTIMIZERS:
        for name, tensor in expected[optimizer_name].items():
            key = f"{optimizer_name}/{name}"
            assert torch.allclose(found[key], tensor, atol=1e-6, rtol=0), key
        # The step moved the weights, so the comparison is not vacuous.
        initial = fresh_model().output_bias
        assert not torch.equal(expected[optimizer_name]["output_bias"], initial)
        # Every gradient went through all-reduce once: float32 bytes of all weights.
        assert int(found[f"{optimizer_name}/bytes"][0]) == 4 * params


def test_step_global_normalisation_differs_from_mean_of_worker_means() -> None:
    # Prepare: the test data must tell the two normalisations apart.
    model = fresh_model()
    halves = [padded(ROWS[:2]), padded(ROWS[2:])]
    # Execute
    with torch.no_grad():
        sums = [float(batch_loss(model, h, PAD, reduction="sum")) for h in halves]
    global_mean = sum(sums) / 14
    mean_of_means = (sums[0] / 6 + sums[1] / 8) / 2
    # Assert
    assert abs(global_mean - mean_of_means) > 1e-3


def test_launch_local_worker_death_stops_job_with_clear_error() -> None:
    # Execute / Assert: rank 0 would block in the barrier; the launcher stops it.
    with pytest.raises(WorkerFailedError, match="worker 1 failed.*broke on purpose"):
        launch_local(failing_worker, (), workers=2, threads=1)
