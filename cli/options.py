"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import typing
from collections.abc import Collection
from pathlib import Path
from typing import Any, TypeVar

from cli.errors import UsageError
from corpora.corpus import CorpusConfig
from models.config import ModelConfig
from models.settings import ALIASES, BOUNDS, CHOICES, FLAG, HELP, METAVAR

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


class _Store(argparse._StoreAction):
    """argparse's store, remembering which of the option's names was typed."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        super().__call__(parser, namespace, values, option_string)
        vars(namespace).setdefault("typed_flags", {})[self.dest] = option_string


class _Switch(argparse._StoreConstAction):
    """A bool field's switch: sets `const`, remembering the name typed."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        super().__call__(parser, namespace, values, option_string)
        vars(namespace).setdefault("typed_flags", {})[self.dest] = option_string


def typed_flag(args: argparse.Namespace, dest: str) -> str:
    """The name the user typed for the option kept in `dest` (an alias such as
    --dp-clip, or the option's own), so that a message quotes the command line."""
    typed = vars(args).get("typed_flags", {}).get(dest)
    return typed or "--" + dest.replace("_", "-")


def option_flags(field: dataclasses.Field) -> list[str]:
    """The field's option and its older aliases: ["--dp-clip-norm", "--dp-clip"]."""
    meta = field.metadata
    names = [meta.get(FLAG) or field.name, *meta.get(ALIASES, ())]
    return ["--" + name.replace("_", "-") for name in names]


def option_dest(field: dataclasses.Field) -> str:
    """Where argparse keeps the field's option: its flag, with underscores."""
    return option_flags(field)[0][2:].replace("-", "_")


def range_text(bounds: tuple[float | None, ...]) -> str:
    """A field's bounds as --help shows them: "[0.1, 100]", "[1, 1,000,000,000]"."""
    at_least, above, at_most, below = bounds
    low, high = (
        (above if at_least is None else at_least),
        (below if at_most is None else at_most),
    )
    shown = f"{high:,}" if high is not None and high >= 1e6 else f"{high:g}"
    return f"[{low:g}, {shown}]"


def _help(field: dataclasses.Field, default: Any, *, unset: bool) -> str:
    """The field's help with {default} and {range} filled in, its aliases named
    and, where the text is silent on it, its default."""
    meta = field.metadata
    text = str(meta[HELP]).replace("{default}", str(default))
    if "{range}" in text:
        text = text.replace("{range}", range_text(meta[BOUNDS]))
    shown = not unset and default is not None and not isinstance(default, bool)
    if "default" not in text and shown:
        text += " (default: %(default)s)"
    aliases = option_flags(field)[1:]
    if aliases:
        text += f" (also {', '.join(aliases)}, its older name)"
    return text


def add_field_options(
    group: argparse.ArgumentParser | argparse._ArgumentGroup,
    config: object,
    *,
    names: Collection[str] | None = None,
    unset: bool = False,
) -> None:
    """One option per field of `config` whose `setting` has a help.

    The flag is the field's name with dashes (`local_epochs`: `--local-epochs`) or
    the setting's `flag`, its aliases the setting's older names, its type the
    field's (`int | None`: int), its choices the setting's; a bool field is a
    switch (one whose default is True turns it off). A help that does not speak
    of its default gets "(default: %(default)s)" added.

    Args:
        names: only these fields (by field name); None: every field with a help.
        unset: the options default to None, so that a config built from them
            (`from_args(..., unset=True)`) keeps its own default where none is
            given, and a caller sees which were given.
    """
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        if field.metadata.get(HELP) is None or (names and field.name not in names):
            continue
        default = getattr(config, field.name)
        options: dict[str, Any] = {
            "dest": option_dest(field),
            "default": None if unset else default,
            "help": _help(field, default, unset=unset),
        }
        if isinstance(default, bool):
            options.update(action=_Switch, const=not default, default=default)
        else:
            options["action"] = _Store
            kinds = typing.get_args(hints[field.name]) or (hints[field.name],)
            options["type"] = next(k for k in kinds if k is not type(None))
            options["choices"] = field.metadata.get(CHOICES)
            options["metavar"] = field.metadata.get(METAVAR)
        group.add_argument(*option_flags(field), **options)


def _option_values(
    config: Any, args: argparse.Namespace, *, unset: bool
) -> dict[str, Any]:
    """The values of `config`'s fields (class or instance) that options gave."""
    values = {}
    for field in dataclasses.fields(config):
        dest = option_dest(field)
        if field.metadata.get(HELP) is None or not hasattr(args, dest):
            continue
        if not (unset and getattr(args, dest) is None):
            values[field.name] = getattr(args, dest)
    return values


def from_args(
    cls: type[Config], args: argparse.Namespace, *, unset: bool = False, **given: Any
) -> Config:
    """A `cls` config from the options `add_field_options` made, and `given` values.

    A field with no option (no help) keeps its default; with `unset`, so does one
    whose option was left at None.
    """
    return cls(**{**_option_values(cls, args, unset=unset), **given})


def replace_from_args(config: Config, args: argparse.Namespace, **given: Any) -> Config:
    """`config` with the fields its options set, and `given` values, replaced."""
    values = _option_values(config, args, unset=False)
    return dataclasses.replace(config, **{**values, **given})  # type: ignore[type-var]


def add_corpus_options(
    parser: argparse.ArgumentParser, *, max_users: bool = True
) -> argparse._ArgumentGroup:
    """--corpus, the per-user caps, the split and --max-users; returns their group.

    Every training command (train, central, simulate, local-only) takes the same
    options from here; `max_users=False` leaves out --max-users (corpus stats,
    which counts every user).
    """
    group = parser.add_argument_group("corpus")
    names = {f.name for f in dataclasses.fields(CorpusConfig)}
    if not max_users:
        names.discard("max_users")
    add_field_options(group, CorpusConfig(), names=names)
    return group


def corpus_config(args: argparse.Namespace, *, seed: int = 0) -> CorpusConfig:
    """The `CorpusConfig` that the corpus options describe."""
    return from_args(CorpusConfig, args, seed=seed)


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


def add_model_options(group: argparse._ArgumentGroup) -> None:
    """--hidden-dim, --embed-dim and --output-bias-init (`ModelConfig`'s fields)."""
    add_field_options(group, ModelConfig())


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
