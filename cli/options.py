"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse

from corpora.corpus import CorpusConfig


def add_corpus_options(parser: argparse.ArgumentParser) -> None:
    """--corpus and the per-user caps and split settings."""
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
