"""Entry point of the `fedtype` console script."""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata
from pathlib import Path

from cli.errors import user_errors

# Subcommand modules, in the order `fedtype --help` lists them. Each defines
# `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
COMMAND_MODULES = (
    "cli.corpus_cmd",
    "cli.train_cmd",
    "cli.run_cmds",
    "cli.simulate_cmd",
    "cli.central_cmd",
    "cli.local_only_cmd",
    "cli.personalize_cmd",
    "cli.compare_cmd",
    "cli.export_cmd",
    "cli.demo_cmd",
)


def package_version() -> str:
    """The installed fedtype's version, or "unknown" when run from a bare tree."""
    try:
        return metadata.version("fedtype")
    except metadata.PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """--version, which looks the version up only when asked (metadata is slow)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help="show the version and exit",
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"{parser.prog} {package_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="fedtype",
        description="Federated next-word keyboard: phones, a coordinator, a central "
        "baseline and a live terminal demo.",
    )
    parser.add_argument("--version", action=_VersionAction)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; user errors print one line and exit with status 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except user_errors() as error:
        print(f"fedtype {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a path the user gave that cannot be read or written
        print(f"fedtype {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fedtype {args.command}: interrupted", file=sys.stderr)
        hint = resume_hint(args)
        if hint:
            print(hint, file=sys.stderr)
        return 130


# Commands that write a resumable run directory (--out or --resume).
RESUMABLE = ("train", "central", "simulate", "local-only")


def resume_hint(args: argparse.Namespace) -> str | None:
    """The commands that resume and evaluate an interrupted run, if it has begun."""
    path = getattr(args, "out", None) or getattr(args, "resume", None)
    if args.command not in RESUMABLE or path is None:
        return None
    if not (Path(path) / "config.json").is_file():
        return None  # stopped before the run directory was written
    hint = f"resume it: fedtype {args.command} --resume {path}"
    if args.command != "local-only":  # its users' models are not saved to evaluate
        hint += f"\nevaluate it: fedtype evaluate --run {path}"
    return hint


if __name__ == "__main__":
    sys.exit(main())
