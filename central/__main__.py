"""`torchrun --nproc-per-node W -m central RUN_DIR`: one worker of a central job.

An entry point, not library code. It trains (or resumes) the central run
directory RUN_DIR, which `fedtype central --out RUN_DIR --create-only` made; only
rank 0 needs to see it. It imports the central baseline, the model and the
corpus, never the coordinator, the phones or the console commands.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext

import torch

from central.errors import CentralConfigError, WorkerAbortedError
from central.events import Evaluated, Event
from central.launch import run_worker
from corpora.messages import CorpusError
from models.checkpoint import CheckpointError
from models.distributed import context_from_env
from models.files import StorageError
from models.run_lock import RunLock, RunLockError
from models.rundir import RunDirError


def parse(argv: list[str]) -> argparse.Namespace:
    """The worker's options."""
    parser = argparse.ArgumentParser(
        prog="python -m central",
        description="One worker of the central baseline (run under torchrun).",
    )
    parser.add_argument("run", metavar="RUN_DIR", help="the central run directory")
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds a worker waits at a collective (default: %(default)s)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads, 0 for torch's own"
    )
    args = parser.parse_args(argv)
    if not 0 < args.timeout < float("inf"):
        parser.error(f"--timeout must be positive and finite, not {args.timeout}")
    if not 0 <= args.threads <= 256:
        parser.error(f"--threads must lie in [0, 256], not {args.threads}")
    return args


def show(event: Event) -> None:
    """Rank 0's progress: one line per saved evaluation."""
    if isinstance(event, Evaluated):
        record = event.record
        top3 = (record.get("heldout") or {}).get("top3")
        shown = "not measured" if top3 is None else f"{top3:.2%}"
        print(f"step {record.get('step')}: held-out top-3 {shown}")


def main(argv: list[str]) -> int:
    """Run one worker; a user error ends it with status 2."""
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        context = context_from_env()
        # Rank 0 alone writes the run: it holds the run's write lock throughout.
        with RunLock(args.run) if context.is_main else nullcontext():
            progress = run_worker(
                args.run,
                context=context,
                timeout_s=args.timeout,
                on_event=show if context.is_main else None,
            )
    except (
        StorageError,
        RunLockError,
        RunDirError,
        CheckpointError,
        CorpusError,
        CentralConfigError,
        WorkerAbortedError,
    ) as error:
        print(f"central worker: error: {error}", file=sys.stderr)
        return 2
    if context.is_main:
        print(f"{args.run}: {progress.step} steps on {context.world_size} workers")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
