"""`fedtype central`: the data-parallel central baseline on W local workers.

`fedtype central --workers W --out RUN_DIR` starts W worker processes on this
machine (loopback only) and trains the pooled data with DistributedDataParallel.
For a torchrun job (across machines, or launched by hand), make the run
directory first and let torchrun start the workers (`central/__main__.py`):

    fedtype central --out RUN_DIR --create-only [options]
    torchrun --nproc-per-node 2 -m central RUN_DIR
    torchrun --nnodes 2 --nproc-per-node 2 --rdzv-backend c10d \
        --rdzv-endpoint HOST:29400 -m central RUN_DIR    # on each machine

Rank 0 alone prints.
"""

from __future__ import annotations

import argparse
import os

from rich.console import Console

from central.config import CentralConfig
from cli.errors import UsageError
from cli.options import (
    add_field_options,
    add_threads_option,
    check_new_run_dir,
    check_threads,
    check_workers,
)
from cli.train_cmd import (
    ProgressDisplay,
    add_run_options,
    max_steps_of,
    start_new_run,
)
from models.run_lock import RunLock

HELP = "train centrally on the pooled data with W data-parallel workers"
DESCRIPTION = """\
The central baseline: DistributedDataParallel over W worker processes (gloo on
CPU, nccl on GPU), each taking batch-size / W sequences per step. Rank 0
evaluates and saves; resumable. Under torchrun (torchrun -m central ...) this
process is one worker.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `central` subcommand."""
    parser = subparsers.add_parser("central", help=HELP, description=DESCRIPTION)
    add_worker_options(parser)
    add_field_options(parser, CentralConfig(), names={"canaries"})
    parser.set_defaults(func=run_central)


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """The run options plus --workers, --threads and --timeout."""
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="local worker processes (default: %(default)s; ignored under torchrun)",
    )
    add_threads_option(
        parser,
        default=None,
        note="per worker",
        default_text="the cores shared out among the workers",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds a worker waits at a collective before the job fails; it "
        "must cover rank 0's evaluation (default: %(default)s)",
    )
    add_run_options(parser)
    parser.add_argument(
        "--create-only",
        action="store_true",
        help="with --out: make the run directory and stop, for `torchrun -m "
        "central RUN_DIR` to train",
    )


def under_torchrun() -> bool:
    """Whether torchrun (or another launcher) started this process as a worker."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def run_worker_body(path: str, timeout_s: float) -> None:
    """One worker's life (rank 0 shows the progress). Runs in every worker."""
    from central.launch import run_worker
    from models.distributed import context_from_env

    context = context_from_env()
    if not context.is_main:
        run_worker(path, context=context, timeout_s=timeout_s)
        return
    console = Console()
    with ProgressDisplay(console, max_steps=max_steps_of(path)) as display:
        progress = run_worker(
            path, context=context, timeout_s=timeout_s, on_event=display
        )
    console.print(
        f"{path}: {progress.step} steps, {progress.tokens_total:,} tokens in "
        f"{progress.wall_seconds_total:.0f} s of training on "
        f"{context.world_size} workers, {progress.bytes_total / 1e9:.2f} GB exchanged"
    )


def _check_resumable(path: str, workers: int) -> None:
    from models.rundir import POOLED_KINDS, RunDir

    config = RunDir(path).config_of(POOLED_KINDS)
    CentralConfig.from_dict(config.get("training", {})).check_workers(workers)


def run_central(args: argparse.Namespace) -> int:
    """Launch W local workers, or be one worker under torchrun."""
    if not 0 < args.timeout < float("inf"):
        raise UsageError(f"--timeout must be positive and finite, not {args.timeout}")
    check_threads(args.threads)
    if under_torchrun():
        return _run_under_torchrun(args)
    check_workers(args.workers)
    if args.create_only and not args.out:
        raise UsageError("--create-only needs --out (a new run directory)")
    if args.out:
        check_new_run_dir(args.out)
    # This process (the launcher, or the one worker) holds the run's write lock
    # until the last worker has finished.
    with RunLock(args.out or args.resume, create=args.out is not None):
        return _run_local(args)


def _run_under_torchrun(args: argparse.Namespace) -> int:
    """One worker of a torchrun job; rank 0 holds the run's write lock."""
    import torch

    from models.distributed import context_from_env
    from models.rundir import RunKind

    if args.threads:
        torch.set_num_threads(args.threads)
    context = context_from_env()
    if not context.is_main:
        run_worker_body(args.out or args.resume, args.timeout)
        return 0
    if args.out:
        check_new_run_dir(args.out)
    with RunLock(args.out or args.resume, create=args.out is not None):
        if args.out:
            extra = {"workers": context.world_size}
            start_new_run(args, kind=RunKind.CENTRAL, extra=extra)
        run_worker_body(args.out or args.resume, args.timeout)
    return 0


def _run_local(args: argparse.Namespace) -> int:
    """Create or resume the run, then train it on --workers local workers."""
    from models.rundir import RunKind

    if args.out:
        CentralConfig(batch_size=args.batch_size).check_workers(args.workers)
        path = start_new_run(
            args, kind=RunKind.CENTRAL, extra={"workers": args.workers}
        )
        if args.create_only:
            Console().print(f"created {path}: train it with torchrun -m central {path}")
            return 0
    else:
        path = args.resume
        _check_resumable(path, args.workers)
    if args.workers == 1:
        run_worker_body(path, args.timeout)
        return 0
    from models.launch import launch_local

    launch_local(
        run_worker_body,
        (path, args.timeout),
        workers=args.workers,
        threads=args.threads,
    )
    return 0
