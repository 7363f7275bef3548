"""Entry point of the `fedtype` console script."""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

from cli.errors import USER_ERRORS

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="fedtype",
        description="Federated next-word keyboard: phones, a coordinator, a central "
        "baseline and a live terminal demo.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {package_version()}"
    )
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
    except USER_ERRORS as error:
        print(f"fedtype {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a path the user gave that cannot be read or written
        print(f"fedtype {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fedtype {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
