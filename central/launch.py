"""Starting workers: one in-process worker, or W local ones on loopback.

`run_worker` is what every worker runs, whoever started it: `fedtype train` (one
worker, no process group), `fedtype central --workers W` (W processes spawned
here, on 127.0.0.1) or torchrun (`torchrun --nproc-per-node W -m central ...`, and
across machines through torchrun's rendezvous). It joins the process group,
trains, and always destroys the group.

`launch_local` watches its W processes: when one dies, the others are stopped at
once and a `WorkerFailedError` says which worker failed and why, instead of the
survivors hanging in a collective.
"""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from central.distributed import (
    WorkerContext,
    context_from_env,
    destroy_process_group,
    init_process_group,
)
from central.errors import WorkerFailedError
from central.events import EventCallback
from central.runspec import share_spec
from central.state import Progress
from central.trainer import CentralTrainer, drop_unsaved_metrics
from models.rundir import RunDir

# Phrases of a failure caused by another worker's death (gloo's, and ours).
_SECONDARY_MARKS = ("by peer", "remote worker", "WorkerAbortedError")
# Seconds a failed job gives its other workers to stop before they are killed.
_GRACE_S = 2.0


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
        trainer = CentralTrainer(run=run, spec=spec, context=context, on_event=on_event)
        return trainer.train()
    finally:
        destroy_process_group()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# A spawned worker's body: (local rank, *args) -> None; must be importable.
WorkerBody = Callable[..., Any]


def _spawned(
    index: int, world_size: int, port: int, threads: int, body: WorkerBody, args: tuple
) -> None:
    os.environ.update(
        RANK=str(index),
        LOCAL_RANK=str(index),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(threads)
    body(*args)


def launch_local(
    body: WorkerBody, args: tuple, *, workers: int, threads: int | None = None
) -> None:
    """Run `body(*args)` in `workers` processes on this machine, torchrun-style.

    Each gets RANK, WORLD_SIZE, LOCAL_RANK and a loopback MASTER_ADDR/PORT, and
    `threads` intra-op threads (default: the machine's cores shared out).

    Raises:
        WorkerFailedError: a worker raised or died; the others were stopped.
    """
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    context = mp.start_processes(
        _spawned,
        args=(workers, free_port(), threads, body, args),
        nprocs=workers,
        join=False,
        start_method="spawn",
    )
    try:
        while not context.join(grace_period=_GRACE_S):
            pass
    except mp.ProcessRaisedException as error:
        index, text = _first_failure(context.error_files, error.error_index, error.msg)
        raise WorkerFailedError(
            f"worker {index} failed, job stopped: {_reason(text)}"
        ) from None
    except mp.ProcessExitedException as error:
        how = error.signal_name or f"exit code {error.exit_code}"
        raise WorkerFailedError(
            f"worker {error.error_index} died ({how}), job stopped"
        ) from None
    finally:
        for path in context.error_files:
            Path(path).unlink(missing_ok=True)


def _first_failure(
    error_files: list[str], reported: int, reported_text: str
) -> tuple[int, str]:
    """The root cause among the workers' tracebacks: (worker, traceback).

    When one worker dies its peers fail too, with "connection closed by peer"
    or `WorkerAbortedError`, and the launcher may notice one of them first. A
    traceback of another kind is preferred, then the earliest written.
    """
    found = []
    for index, path in enumerate(error_files):
        try:
            written = os.stat(path).st_mtime_ns
            with open(path, "rb") as handle:
                text = str(pickle.load(handle))
        except (OSError, pickle.UnpicklingError, EOFError):
            continue
        found.append((_is_secondary(text), written, index, text))
    if not found:
        return reported, reported_text
    _, _, index, text = min(found)
    return index, text


def _is_secondary(traceback_text: str) -> bool:
    """Whether a worker failed only because another one did."""
    return any(mark in traceback_text for mark in _SECONDARY_MARKS)


def _reason(traceback_text: str) -> str:
    """The last line of a worker's traceback: the exception and its message."""
    lines = [line.strip() for line in traceback_text.strip().splitlines()]
    return lines[-1] if lines else "unknown error"
