"""`fedtype train`: the simplest reference, one process on the pooled training set.

It is the central baseline with one worker (`central.launch.run_worker`), so it
writes the same run directory as `fedtype central`. The options and the progress
display here are shared with `fedtype central`.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from central.config import CentralConfig
from central.errors import CentralConfigError
from central.events import (
    Evaluated,
    EvaluationStarted,
    Event,
    StepDone,
    TrainingStarted,
)
from cli.errors import UsageError
from cli.options import (
    add_corpus_options,
    add_field_options,
    add_model_options,
    add_out_or_resume,
    add_threads_option,
    check_finite,
    check_model_dims,
    check_new_run_dir,
    check_threads,
    corpus_config,
    from_args,
)
from cli.progress import progress_bar
from corpora.messages import CorpusError
from corpora.tokenizer import WordTokenizer
from models.config import ModelConfig
from models.run_lock import RunLock

if TYPE_CHECKING:
    from models.rundir import RunKind

HELP = "train the model centrally on the pooled data, in one process"
DESCRIPTION = """\
Single-process training on every training user's train part pooled (Adam by
default), evaluated on held-out users and future text at each epoch's end and
every --eval-every steps. Resumable.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` subcommand."""
    parser = subparsers.add_parser("train", help=HELP, description=DESCRIPTION)
    add_threads_option(
        parser, default=None, note="full central batches keep every core busy"
    )
    add_run_options(parser)
    parser.set_defaults(func=run_train)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--out/--resume, the training settings, the model shape and the corpus."""
    add_out_or_resume(parser)
    group = parser.add_argument_group("training (new runs only)")
    # --canaries: `fedtype central` only.
    names = {f.name for f in fields(CentralConfig)} - {"canaries"}
    add_field_options(group, CentralConfig(), names=names)
    add_model_options(group)
    add_corpus_options(parser)


def training_config(args: argparse.Namespace) -> CentralConfig:
    """The `CentralConfig` the options describe."""
    check_finite("--lr", args.lr)
    try:
        return from_args(CentralConfig, args)
    except CentralConfigError as error:
        raise UsageError(str(error)) from None


def start_new_run(
    args: argparse.Namespace, *, kind: RunKind, extra: dict[str, Any] | None = None
) -> str:
    """Create the run directory --out names; returns its path."""
    check_new_run_dir(args.out)
    config = training_config(args)
    check_model_dims(hidden_dim=args.hidden_dim, embed_dim=args.embed_dim)
    corpus = corpus_config(args, seed=config.seed)
    if corpus.source != "chitchat" and not Path(corpus.source).is_file():
        raise CorpusError("no such corpus file", path=corpus.source)
    model = from_args(ModelConfig, args, vocab_size=WordTokenizer.public().vocab_size)
    from central.runspec import create_run  # torch: only once the options passed

    create_run(
        args.out,
        kind=kind,
        corpus=corpus,
        model=model,
        training=config,
        extra=extra,
    )
    return str(args.out)


def summary(record: dict[str, Any]) -> str:
    """One line for an evaluation record."""
    line = f"step {record['step']} (epoch {record['epoch']:.2f})"
    if record.get("train_loss") is not None:
        line += f": train loss {record['train_loss']:.3f}"
    for name in ("heldout", "future"):
        metrics = record.get(name)
        if metrics:
            line += (
                f", {name} top-1 {metrics['top1']:.2%} top-3 {metrics['top3']:.2%}"
                f" ppl {metrics['perplexity']:.1f}"
            )
    return line


class ProgressDisplay:
    """Turns the trainer's events into a rich progress bar (rank 0 only).

    A run capped by `--max-steps` counts steps, not epochs: 300 steps may be a
    third of an epoch, and "epoch 1 300/300" would read as a whole one.
    """

    def __init__(self, console: Console, *, max_steps: int | None = None) -> None:
        self.console = console
        self.max_steps = max_steps
        self.total_steps: int | None = None
        self.bar = progress_bar(console)
        self.task = self.bar.add_task("steps", total=None, status="")

    def __enter__(self) -> ProgressDisplay:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def description(self, epoch: int) -> str:
        """What the bar counts: the epoch in progress, or steps to --max-steps
        when the cap, not the epochs, ends the run."""
        if self.max_steps is not None and self.total_steps == self.max_steps:
            return f"steps (--max-steps {self.max_steps:,})"
        return f"epoch {epoch + 1}"

    def __call__(self, event: Event) -> None:
        if isinstance(event, TrainingStarted):
            self.total_steps = event.total_steps
            self.bar.update(self.task, total=event.total_steps, completed=event.step)
            self.console.print(
                f"{event.train_sequences:,} sequences in {event.shards} shard(s), "
                f"{event.world_size} worker(s), {event.total_steps:,} steps"
            )
        elif isinstance(event, StepDone):
            self.bar.update(
                self.task,
                completed=event.step,
                description=self.description(event.epoch),
                status=f"loss {event.loss:.3f}",
            )
        elif isinstance(event, EvaluationStarted):
            self.bar.update(self.task, status="evaluating")
        elif isinstance(event, Evaluated):
            self.console.print(summary(event.record))


def max_steps_of(path: str) -> int | None:
    """The --max-steps of the run at `path` (new or resumed), None if uncapped."""
    from models.rundir import POOLED_KINDS, RunDir

    training = RunDir(path).config_of(POOLED_KINDS).get("training") or {}
    value = training.get("max_steps")
    return int(value) if isinstance(value, int) else None


def run_train(args: argparse.Namespace) -> int:
    """Create or resume the run, then train it in this process."""
    import torch

    from central.launch import run_worker
    from models.distributed import context_from_env
    from models.rundir import RunKind

    console = Console()
    check_threads(args.threads)
    context = context_from_env()
    if context.world_size != 1:
        raise UsageError("fedtype train is single-process; use fedtype central")
    check_new_run_dir(args.out)
    with RunLock(args.out or args.resume, create=args.out is not None):
        path = args.resume or start_new_run(args, kind=RunKind.TRAIN)
        if args.threads:
            torch.set_num_threads(args.threads)
        max_steps = max_steps_of(path)
        with ProgressDisplay(console, max_steps=max_steps) as display:
            progress = run_worker(path, context=context, on_event=display)
    console.print(
        f"{path}: {progress.step} steps, {progress.tokens_total:,} tokens in "
        f"{progress.wall_seconds_total:.0f} s of training"
    )
    return 0
