"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from cli.errors import UsageError
from corpora.corpus import CorpusConfig
from models.config import OUTPUT_BIAS_INITS, ModelConfig

# Widest embedding or LSTM accepted: 4096 already makes a model of about 70 M
# weights per 1,000 vocabulary words, far past what a phone (or a test) trains.
MAX_WIDTH = 4096
# Most torch threads accepted: far more than cores only slows torch down, and
# around 100,000 torch itself crashes (a segmentation fault).
MAX_THREADS = 256
# Most local worker processes accepted: each holds a model and a corpus copy.
MAX_WORKERS = 64
Config = TypeVar("Config")


def add_out_or_resume(parser: argparse.ArgumentParser) -> None:
    """--out (a new run directory) or --resume (a run to continue), one required."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="new run directory")
    where.add_argument("--resume", metavar="RUN_DIR", help="continue this run")


def add_field_options(
    group: argparse._ArgumentGroup,
    config: object,
    helps: dict[str, str],
    *,
    choices: dict[str, Sequence[str]] | None = None,
) -> None:
    """One option per field of `config` that `helps` names, with the field's default.

    The flag is the field's name with dashes (`local_epochs`: `--local-epochs`) and
    its type the field's (`int | None`: int); a field that `choices` names accepts
    only those values. A help that does not speak of its default gets
    "(default: %(default)s)" added.
    """
    hints = typing.get_type_hints(type(config))
    for name, text in helps.items():
        kinds = typing.get_args(hints[name]) or (hints[name],)
        kind = next(k for k in kinds if k is not type(None))
        if "default" not in text:
            text += " (default: %(default)s)"
        group.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            choices=(choices or {}).get(name),
            default=getattr(config, name),
            help=text,
        )


def from_args(cls: type[Config], args: argparse.Namespace, **given: Any) -> Config:
    """A `cls` config from the options named after its fields, and `given` values.

    Options take their field's name (`--client-lr` sets `client_lr`), so a field
    with no option keeps its default and `given` overrides the rest.
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {name: getattr(args, name) for name in names if hasattr(args, name)}
    return cls(**{**values, **given})


def add_corpus_options(
    parser: argparse.ArgumentParser, *, max_users: bool = True
) -> argparse._ArgumentGroup:
    """--corpus, the per-user caps, the split and --max-users; returns their group.

    Every training command (train, central, simulate, local-only) takes the same
    options from here; `max_users=False` leaves out --max-users (corpus stats,
    which counts every user).
    """
    defaults = CorpusConfig()
    group = parser.add_argument_group("corpus")
    group.add_argument(
        "--corpus",
        default=defaults.source,
        help="'chitchat' (the Chit-Chat corpus in the installed wheel) or a JSONL "
        'path with one {"user", "text", "timestamp"} message a line '
        "(default: %(default)s)",
    )
    helps = {
        "max_words_per_user": "words kept per user, oldest first",
        "min_words_per_user": "users with fewer words are left out",
        "heldout_fraction": "share of users who never train",
        "future_fraction": "newest share of each user's messages kept as future text",
    }
    if max_users:
        helps["max_users"] = (
            "train on the first N training users by id, for a small run; the "
            "held-out users stay as they are (default: all)"
        )
    add_field_options(group, defaults, helps)
    return group


def corpus_config(args: argparse.Namespace, *, seed: int = 0) -> CorpusConfig:
    """The `CorpusConfig` that the corpus options describe."""
    return from_args(CorpusConfig, args, source=args.corpus, seed=seed)


def check_finite(flag: str, value: float) -> None:
    """Refuse NaN and infinite values of a float option."""
    if not math.isfinite(value):
        raise UsageError(f"{flag} must be a finite number, not {value}")


def add_threads_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    default: int | None,
    note: str,
    default_text: str = "torch's own",
) -> None:
    """The one `--threads` option (torch's intra-op CPU threads) of every command.

    Args:
        default: the command's default, None for torch's own choice.
        note: why that default suits the command, shown in the help.
        default_text: how the help names a None default.
    """
    shown = default_text if default is None else "%(default)s"
    parser.add_argument(
        "--threads",
        type=int,
        default=default,
        help=f"torch CPU threads; {note} (default: {shown})",
    )


def check_threads(threads: int | None, flag: str = "--threads") -> None:
    """Refuse a thread count below 1 or above `MAX_THREADS`."""
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"{flag} must lie in [1, {MAX_THREADS}], not {threads}")


def check_workers(workers: int | None, flag: str = "--workers") -> None:
    """Refuse a worker count below 1 or above `MAX_WORKERS`."""
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"{flag} must lie in [1, {MAX_WORKERS}], not {workers}")


# The model-shape options of every command that creates a model.
MODEL_HELPS = {
    "hidden_dim": "LSTM width",
    "embed_dim": "embedding width",
    "output_bias_init": "round-0 output bias: the public vocabulary's unigram "
    "log-frequencies (wordfreq, no phone's text) or zeros (default: %(default)s)",
}


def add_model_options(group: argparse._ArgumentGroup) -> None:
    """--hidden-dim, --embed-dim and --output-bias-init (`ModelConfig`'s fields)."""
    add_field_options(
        group,
        ModelConfig(),
        MODEL_HELPS,
        choices={"output_bias_init": OUTPUT_BIAS_INITS},
    )


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
