"""Starting workers: one in-process worker, or W local ones on loopback.

`run_worker` is what every worker runs, whoever started it: `fedtype train` (one
worker, no process group), `fedtype central --workers W` (W processes spawned
here, on 127.0.0.1) or torchrun (`torchrun --nproc-per-node W -m central ...`, and
across machines through torchrun's rendezvous). It joins the process group,
trains, and always destroys the group.

`models.launch.launch_local` starts and watches the W local processes.
"""

from __future__ import annotations

from pathlib import Path

from central.events import EventCallback
from central.runspec import share_spec
from central.state import Progress
from central.trainer import CentralTrainer, drop_unsaved_metrics
from models.distributed import (
    WorkerContext,
    context_from_env,
    destroy_process_group,
    init_process_group,
)
from models.launch import launch_local
from models.rundir import RunDir

__all__ = ["launch_local", "run_worker"]


def run_worker(
    path: str | Path,
    *,
    context: WorkerContext | None = None,
    timeout_s: float = 600.0,
    on_event: EventCallback | None = None,
) -> Progress:
    """Train (or resume) the central run at `path` as one worker of the job.

    Args:
        path: The run directory (rank 0 reads and writes it; others need not see it).
        context: Rank and world size; by default from torchrun's environment.
        timeout_s: How long a collective may wait before the job fails.
        on_event: Progress callback, called on rank 0 only.
    """
    context = context or context_from_env()
    init_process_group(context, timeout_s=timeout_s)
    try:
        run = RunDir(path)
        spec = share_spec(run, context)
        if context.is_main:
            drop_unsaved_metrics(run, spec.progress)
        # No name holds the trainer, so its DDP cycles are garbage once it returns
        # and `destroy_process_group` collects them while the interpreter lives.
        return CentralTrainer(
            run=run, spec=spec, context=context, on_event=on_event
        ).train()
    finally:
        destroy_process_group()
