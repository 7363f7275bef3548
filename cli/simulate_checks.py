"""`fedtype simulate`'s checks before any work: options, the run directory, resume.

Everything here runs before a rank starts or a file is written, so that a bad
option is one line and exit status 2, and leaves nothing behind:

- options that only shape a new run, refused beside `--resume` (the run keeps the
  settings it started with);
- `--rounds` below the rounds a resumed run already completed;
- `--out`: empty, a file, under a file or unwritable; a directory holding a run
  killed before round 0 was saved is reused;
- `--resume` repairs what a kill or a damaged disk left (`coordinator.run.repair.
  repair_for_resume`) and says what it did; a run that never saved round 0 is
  started again from its own config.json;
- more `--clients-per-round` than the fleet has phones.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from rich.console import Console

from cli.errors import UsageError
from cli.options import (
    check_model_dims,
    check_new_run_dir,
    check_threads,
    check_workers,
    typed_flag,
)
from cli.privacy_options import check_ranges
from coordinator.config import FederationConfig
from corpora.corpus import CorpusConfig, CorpusSplits, load_corpus
from models.config import ModelConfig

if TYPE_CHECKING:  # torch: imported by the functions that need them
    from models.rundir import RunDir


def new_run_defaults(*groups: argparse._ArgumentGroup) -> dict[str, Any]:
    """The defaults of options that only shape a new run, by destination."""
    return {
        action.dest: action.default
        for group in groups
        for action in group._group_actions
    }


def resume_conflicts(args: argparse.Namespace) -> list[str]:
    """New-run options given a value other than their default beside --resume."""
    defaults: dict[str, Any] = getattr(args, "new_run_defaults", {})
    return [
        typed_flag(args, dest)
        for dest, default in defaults.items()
        if getattr(args, dest, default) != default
    ]


def check_options(args: argparse.Namespace) -> None:
    """Refuse options that cannot work, before any file is written."""
    if args.rounds is not None and args.rounds < 1:
        raise UsageError("--rounds must be >= 1")
    check_threads(args.threads)
    check_workers(getattr(args, "workers", None))
    if args.resume is not None:
        conflicts = resume_conflicts(args)
        if conflicts:
            raise UsageError(
                f"{', '.join(conflicts)}: settings of a new run; --resume continues "
                "the run with the settings it started with (drop them, or start a "
                "new run with --out)"
            )
        return
    check_new_run_dir(args.out)
    check_model_dims(hidden_dim=args.hidden_dim, embed_dim=args.embed_dim)
    check_ranges(args)  # before any note describes the privacy settings


@dataclass(frozen=True)
class RunSettings:
    """A new run's settings: from the options, or a restarted run's config.json."""

    federation: FederationConfig
    corpus: CorpusConfig
    model: ModelConfig


def saved_settings(run: RunDir) -> RunSettings:
    """The settings an (unstarted) run was created with."""
    config = run.read_config()
    try:
        return RunSettings(
            federation=FederationConfig.from_dict(config["federation"]),
            corpus=run.corpus_config(check=False),
            model=ModelConfig(**config["model"]),
        )
    except (KeyError, TypeError) as error:
        raise UsageError(f"{run.config_path}: incomplete ({error})") from None


def prepare_resume(args: argparse.Namespace, console: Console) -> RunSettings | None:
    """Repair the run --resume names; the settings to start it again, if unstarted.

    Refuses a --rounds below the rounds already completed.
    """
    from coordinator.run import store
    from coordinator.run.repair import clear_unstarted, repair_for_resume
    from models.rundir import RunDir

    run = RunDir(args.resume)
    repair = repair_for_resume(run)
    for note in repair.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    if repair.unstarted:
        restart = saved_settings(run)
        if args.rounds is not None:
            federation = replace(restart.federation, rounds=args.rounds)
            restart = replace(restart, federation=federation)
        clear_unstarted(run)
        console.print(
            f"{run.path}: round 0 was never saved; starting the run again",
            highlight=False,
        )
        return restart
    done, _, _ = store.read_progress(run)
    if args.rounds is not None and args.rounds < done:
        raise UsageError(
            f"--rounds {args.rounds}: {run.path} has already completed {done} "
            f"rounds; give --rounds {done} or more, or leave it out"
        )
    return None


def prepare_out(args: argparse.Namespace, console: Console) -> None:
    """Reuse an --out directory that holds only a run killed before round 0."""
    from coordinator.run.repair import clear_unstarted, is_unstarted
    from models.rundir import RunDir

    run = RunDir(args.out)
    if is_unstarted(run):
        run.remove_stale_temporaries()
        clear_unstarted(run)
        console.print(
            f"{run.path}: held a run stopped before round 0 was saved; starting "
            "afresh there",
            highlight=False,
        )


def prepare_run(args: argparse.Namespace, console: Console) -> None:
    """The repairs before the first rank starts (rank 0's process, after
    `check_options` and holding the run's write lock).

    Sets `args.restart` to the saved settings when --resume names an unstarted
    run, which is then created again in place.
    """
    args.restart = None
    if args.resume is not None:
        args.restart = prepare_resume(args, console)
    else:
        prepare_out(args, console)


def checked_splits(corpus: CorpusConfig, federation: FederationConfig) -> CorpusSplits:
    """The corpus, loaded, once it is clear that its fleet can fill a round."""
    from device_sim.fleet import Fleet

    splits = load_corpus(corpus)
    phones = len(Fleet.from_splits(splits, federation.fleet, seed=federation.seed))
    if federation.clients_per_round > phones:
        raise UsageError(
            f"--clients-per-round {federation.clients_per_round} is more than the "
            f"fleet's {phones} phones: every round would be abandoned"
        )
    return splits
