"""Local worker processes, torchrun-style: W processes on loopback, watched.

`launch_local` runs one function in W spawned processes with the environment
torchrun would give them (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, a loopback
`MASTER_ADDR`/`MASTER_PORT`). It watches them: when one dies, the others are
stopped at once and a `WorkerFailedError` says which worker failed and why,
instead of the survivors hanging in a collective. The central baseline
(`central.launch`) and the federated fleet (`fedtype simulate --workers`) both
start their workers here.
"""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Phrases of a failure caused by another worker's death (gloo's, and ours).
_SECONDARY_MARKS = ("by peer", "remote worker", "WorkerAbortedError")
# Seconds a failed job gives its other workers to stop before they are killed.
_GRACE_S = 2.0


class WorkerFailedError(RuntimeError):
    """A worker of a local multi-worker job died; the job was stopped."""


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
    import torch  # here, not above: importing this module stays cheap for the CLI

    from models.distributed import destroy_process_group

    torch.set_num_threads(threads)
    body(*args)
    # The one shutdown of every job: the group, if the body left it, and DDP's
    # reference cycles, freed while the interpreter lives.
    destroy_process_group()


def launch_local(
    body: WorkerBody, args: tuple, *, workers: int, threads: int | None = None
) -> None:
    """Run `body(*args)` in `workers` processes on this machine, torchrun-style.

    Each gets RANK, WORLD_SIZE, LOCAL_RANK and a loopback MASTER_ADDR/PORT, and
    `threads` intra-op threads (default: the machine's cores shared out).

    Raises:
        WorkerFailedError: a worker raised or died; the others were stopped.
    """
    import torch.multiprocessing as mp  # here: importing this module stays cheap

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
