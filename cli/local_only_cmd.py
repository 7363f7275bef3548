"""`fedtype local-only`: every user trains alone; nothing is merged."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from central.config import LocalOnlyConfig
from cli.errors import UsageError
from cli.options import (
    add_corpus_options,
    add_field_options,
    add_out_or_resume,
    add_threads_option,
    check_finite,
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
    from central.local_only import UserResult

HELP = "every user trains alone on their own history (no merging)"
DESCRIPTION = """\
Each user trains their own model from the shared initial model on their own
history only. Future text: each user's model on their own future messages (the
users of the fleet's future cohort, the same text as the other runs). Held-out
users: the average over a fixed sample of those users' models on a fixed sample
of held-out messages. Resumable user by user (run it again with --resume).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `local-only` subcommand."""
    parser = subparsers.add_parser("local-only", help=HELP, description=DESCRIPTION)
    add_out_or_resume(parser)
    group = parser.add_argument_group("local training (new runs only)")
    add_field_options(group, LocalOnlyConfig())
    add_threads_option(
        parser, default=1, note="a user's batches are too small for more to pay"
    )
    add_corpus_options(parser)
    parser.set_defaults(func=run_local_only_cmd)


def _create(args: argparse.Namespace) -> str:
    check_new_run_dir(args.out)
    check_finite("--lr", args.lr)
    try:
        config = from_args(LocalOnlyConfig, args)
    except ValueError as error:
        raise UsageError(str(error)) from None
    corpus = corpus_config(args, seed=config.seed)
    if corpus.source != "chitchat" and not Path(corpus.source).is_file():
        raise CorpusError("no such corpus file", path=corpus.source)
    model = ModelConfig(vocab_size=WordTokenizer.public().vocab_size)
    from central.local_only_run import create_local_only_run  # torch, from here on

    create_local_only_run(args.out, corpus=corpus, model=model, config=config)
    return str(args.out)


def run_local_only_cmd(args: argparse.Namespace) -> int:
    """Train every user of the run alone, then print the pooled metrics."""
    check_threads(args.threads)
    check_new_run_dir(args.out)
    with RunLock(args.out or args.resume, create=args.out is not None):
        return _train_users(args)


def _train_users(args: argparse.Namespace) -> int:
    import torch

    from central.local_only_run import run_local_only

    console = Console()
    path = args.resume or _create(args)
    torch.set_num_threads(args.threads)
    bar = progress_bar(console, label="users", status="last")
    task = bar.add_task("users", total=None, last="")

    def on_user(done: int, total: int, result: UserResult) -> None:
        bar.update(task, completed=done, total=total, last=result.user)

    with bar:
        record = run_local_only(path, on_user=on_user)
    heldout, future = record["heldout"], record["future"]
    console.print(
        f"{path}: {record['users_trained']} users trained alone, "
        f"{record['tokens_total']:,} tokens"
    )
    if future:
        console.print(
            f"own future text: top-1 {future['top1']:.2%}, top-3 {future['top3']:.2%}, "
            f"perplexity {future['perplexity']:.0f} ({future['num_messages']} messages)"
        )
    if heldout:
        console.print(
            f"held-out users: top-1 {heldout['top1']:.2%}, top-3 {heldout['top3']:.2%}"
            f", perplexity {heldout['perplexity']:.0f} (average of "
            f"{heldout['num_models']} users' models on a fixed sample of "
            f"{heldout['num_messages']} held-out messages)"
        )
    return 0
