"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from cli.errors import UsageError
from corpora.corpus import CorpusConfig

# Widest embedding or LSTM accepted: 4096 already makes a model of about 70 M
# weights per 1,000 vocabulary words, far past what a phone (or a test) trains.
MAX_WIDTH = 4096
# Most torch threads accepted: far more than cores only slows torch down, and
# around 100,000 torch itself crashes (a segmentation fault).
MAX_THREADS = 256
# Most local worker processes accepted: each holds a model and a corpus copy.
MAX_WORKERS = 64


def add_corpus_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--corpus and the per-user caps and split settings; returns their group."""
    defaults = CorpusConfig()
    group = parser.add_argument_group("corpus")
    group.add_argument(
        "--corpus",
        default=defaults.source,
        help="'chitchat' (the Chit-Chat corpus in the installed wheel) or a JSONL "
        'path with one {"user", "text", "timestamp"} message a line '
        "(default: %(default)s)",
    )
    group.add_argument(
        "--max-words-per-user",
        type=int,
        default=defaults.max_words_per_user,
        help="words kept per user, oldest first (default: %(default)s)",
    )
    group.add_argument(
        "--min-words-per-user",
        type=int,
        default=defaults.min_words_per_user,
        help="users with fewer words are left out (default: %(default)s)",
    )
    group.add_argument(
        "--heldout-fraction",
        type=float,
        default=defaults.heldout_fraction,
        help="share of users who never train (default: %(default)s)",
    )
    group.add_argument(
        "--future-fraction",
        type=float,
        default=defaults.future_fraction,
        help="newest share of each user's messages kept as future text "
        "(default: %(default)s)",
    )
    return group


def corpus_config(args: argparse.Namespace, *, seed: int = 0) -> CorpusConfig:
    """The `CorpusConfig` that the corpus options describe."""
    return CorpusConfig(
        source=args.corpus,
        max_words_per_user=args.max_words_per_user,
        min_words_per_user=args.min_words_per_user,
        heldout_fraction=args.heldout_fraction,
        future_fraction=args.future_fraction,
        seed=seed,
    )


def check_finite(flag: str, value: float) -> None:
    """Refuse NaN and infinite values of a float option."""
    if not math.isfinite(value):
        raise UsageError(f"{flag} must be a finite number, not {value}")


def check_threads(threads: int | None, flag: str = "--threads") -> None:
    """Refuse a thread count below 1 or above `MAX_THREADS`."""
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"{flag} must lie in [1, {MAX_THREADS}], not {threads}")


def check_workers(workers: int | None, flag: str = "--workers") -> None:
    """Refuse a worker count below 1 or above `MAX_WORKERS`."""
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"{flag} must lie in [1, {MAX_WORKERS}], not {workers}")


def check_model_dims(*, hidden_dim: int, embed_dim: int) -> None:
    """Refuse model widths below 1 or above `MAX_WIDTH`."""
    for flag, value in (("--hidden-dim", hidden_dim), ("--embed-dim", embed_dim)):
        if not 1 <= value <= MAX_WIDTH:
            raise UsageError(f"{flag} must lie in [1, {MAX_WIDTH}], not {value}")


def check_new_run_dir(path: str | None, flag: str = "--out") -> None:
    """Refuse an --out that no run can be written to, before anything is written.

    Empty, an existing file, a path under a file, or a place this user cannot
    create a directory in (such as under /proc).
    """
    if path is None:
        return
    if not path.strip():
        raise UsageError(f"{flag} must name a directory, not an empty string")
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a directory")
    parent = target
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot create or write in {parent}")
    if target.resolve().is_relative_to("/proc") or target.resolve().is_relative_to(
        "/sys"
    ):
        raise UsageError(f"{flag} {path}: not a place for a run directory")
