"""`fedtype simulate`: run or resume a federated simulation with a progress bar."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from rich.console import Console

from cli.errors import UsageError
from cli.options import (
    add_corpus_options,
    add_field_options,
    add_model_options,
    add_out_or_resume,
    add_threads_option,
    corpus_config,
    from_args,
    replace_from_args,
)
from cli.privacy_options import (
    add_privacy_options,
    default_noise_note,
    privacy_config,
)
from cli.progress import progress_bar
from cli.simulate_checks import (
    RunSettings,
    check_options,
    checked_splits,
    new_run_defaults,
    prepare_run,
)
from coordinator.config import FederationConfig, FederationConfigError
from coordinator.events import (
    BudgetSpent,
    ClientDone,
    EvaluationStarted,
    Event,
    RoundStarted,
)
from models.config import ModelConfig
from models.launch import launch_local
from models.run_lock import RunLock

if TYPE_CHECKING:  # torch: imported when a run starts, so --help stays instant
    from coordinator.run.simulation import Simulation
    from device_sim.ranks import Ranks

HELP = "train the model federated, on a simulated fleet of phones"
DESCRIPTION = """\
Federated training on simulated phones, one per corpus user: rounds of
selection, local training, screening and aggregation, with evaluation on
held-out users and future text. Resumable.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `simulate` subcommand: an option per field of the run's configs
    that has a help (`cli.options.add_field_options`)."""
    fed = FederationConfig()
    parser = subparsers.add_parser("simulate", help=HELP, description=DESCRIPTION)
    add_out_or_resume(parser)
    # --rounds also moves a resumed run's end: unset, it keeps the run's own.
    add_field_options(parser, fed, names={"rounds"}, unset=True)
    group = parser.add_argument_group("federation (new runs only)")
    add_field_options(group, fed, names={"clients_per_round"})
    add_field_options(group, fed.strategy)
    add_field_options(group, fed, names={"eval_every", "workers", "seed"})
    add_field_options(group, fed.local)
    add_field_options(group, fed.fleet)
    add_model_options(group)
    add_field_options(group, fed.aggregation)
    add_threads_option(
        parser, default=None, note="1 is faster on a machine busy with other jobs"
    )
    privacy = add_privacy_options(parser)
    corpus = add_corpus_options(parser)
    # Refused beside --resume, which keeps the run's own settings (--workers only
    # changes where the phones train, not what they compute; a DP run keeps its DP).
    defaults = new_run_defaults(group, privacy, corpus)
    defaults.pop("workers", None)
    parser.set_defaults(func=run_simulate, new_run_defaults=defaults)


def federation_config(args: argparse.Namespace) -> FederationConfig:
    """The `FederationConfig` the options describe."""
    fed = FederationConfig()
    try:
        # --max-users cuts the corpus (CorpusConfig.max_users), as for every
        # command; the fleet's own field stays for runs made before it did.
        parts: dict[str, Any] = {
            "strategy": replace_from_args(fed.strategy, args),
            "aggregation": replace_from_args(fed.aggregation, args),
            "local": replace_from_args(fed.local, args),
            "fleet": replace_from_args(fed.fleet, args, max_users=None),
        }
    except ValueError as error:
        raise UsageError(str(error)) from None
    privacy = privacy_config(args, clients_per_round=args.clients_per_round)
    try:
        return replace_from_args(
            fed,
            args,
            rounds=args.rounds or fed.rounds,
            workers=_world_size(args),
            privacy=privacy,
            **parts,
        )
    except FederationConfigError as error:
        raise UsageError(str(error)) from None


def _world_size(args: argparse.Namespace) -> int:
    """Ranks of this job: torchrun's WORLD_SIZE when it started us, else --workers."""
    if "RANK" in os.environ:
        return int(os.environ.get("WORLD_SIZE", "1"))
    return int(args.workers)


def _open(args: argparse.Namespace, console: Console, ranks: Ranks) -> Simulation:
    from coordinator.run.simulation import Simulation

    restart = getattr(args, "restart", None)
    if args.resume and restart is None:
        with console.status("loading the run and the corpus"):
            simulation = Simulation.resume(args.resume, ranks=ranks)
        if args.rounds is not None:
            simulation.set_rounds(args.rounds)
        return simulation
    with console.status("loading the corpus and building the fleet"):
        if restart is not None:  # round 0 was never saved: again, as configured
            path, settings, splits = args.resume, restart, None
        else:
            path, settings = args.out, _new_run_settings(args)
            splits = checked_splits(settings.corpus, settings.federation)
        return Simulation.create(
            path,
            federation=settings.federation,
            corpus=settings.corpus,
            model=settings.model,
            splits=splits,
            ranks=ranks,
        )


def _new_run_settings(args: argparse.Namespace) -> RunSettings:
    federation = federation_config(args)
    return RunSettings(
        federation=federation,
        corpus=corpus_config(args, seed=federation.seed),
        model=from_args(ModelConfig, args),
    )


def _summary(record: dict) -> str:
    line = f"round {record['server_round']}: "
    if record["abandoned"]:
        return line + f"[yellow]abandoned[/] ({record['abandon_reason']})"
    line += f"{record['reported']}/{record['selected']} reported"
    # Under DP the rejections and the phones' losses are the simulation's truth,
    # not something the server learned: the summary leaves them out.
    if "rejected" in record:
        line += f", {record['rejected']} rejected"
    if record.get("train_loss") is not None:
        line += f", loss {record['train_loss']:.3f}"
    for name in ("heldout", "future"):
        if record.get(name):
            line += f", {name} top-3 {record[name]['top3']:.2%}"
    spent = epsilon_text(record)
    return line + (f", {spent}" if spent else "")


def epsilon_text(record: dict) -> str | None:
    """The "ε 7.08 (δ 1e-05)" of a DP round's record; None without DP."""
    epsilon, delta = record.get("epsilon"), record.get("delta")
    if not isinstance(epsilon, int | float):
        return None
    return f"ε {epsilon:.2f} (δ {delta:g})" if delta is not None else f"ε {epsilon:.2f}"


def _budget_note(event: BudgetSpent, simulation: Simulation) -> str:
    """Why the privacy budget stopped the run, and what to run next."""
    path = simulation.run.path
    evaluated = any(
        "heldout" in r and r.get("server_round") == event.server_round
        for r in simulation.history()
    )
    return (
        f"[yellow]stopped[/] after round {event.server_round} of "
        f"{simulation.federation.rounds}: {event.reason}.\n"
        + (
            f"Round {event.server_round}'s model was evaluated (metrics.jsonl); "
            if evaluated
            else ""
        )
        + f"measure it with `fedtype evaluate --run {path}` or `fedtype compare "
        f"{path} ...`; more rounds need a new run with a larger --target-epsilon "
        "or fewer --rounds."
    )


def run_simulate(args: argparse.Namespace) -> int:
    """Run rounds until the run has `rounds`, saving each one.

    Under torchrun this process is one rank of its job; with `--workers W > 1`
    it starts W local ranks (`models.launch.launch_local`) and waits for them.
    Rank 0's process holds the run directory's write lock throughout, from
    before the repairs of --resume (or the reuse of an unstarted --out) to the
    last round.
    """
    check_options(args)
    if os.environ.get("RANK", "0") != "0":
        return _run_ranks(args)
    with RunLock(args.resume or args.out, create=args.out is not None):
        prepare_run(args, Console())  # checks, and repairs before --resume
        note = default_noise_note(args)
        if note and args.resume is None:
            Console(stderr=True).print(f"note: {note}", highlight=False)
        return _run_ranks(args)


def _run_ranks(args: argparse.Namespace) -> int:
    """This process's rank(s): one, W spawned here, or one of torchrun's."""
    if args.workers < 1:
        raise UsageError("--workers must be >= 1")
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return run_rank(args)
    if args.workers > 1:
        launch_local(run_rank, (args,), workers=args.workers, threads=args.threads)
        return 0
    import torch

    from device_sim.ranks import SingleRank

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return _run(args, SingleRank())


def run_rank(args: argparse.Namespace) -> int:
    """One rank of a multi-rank simulation (spawned here, or started by torchrun)."""
    import torch

    from device_sim.ranks import GroupRanks

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return _run(args, GroupRanks.from_environment())


def _run(args: argparse.Namespace, ranks: Ranks) -> int:
    from coordinator.privacy.budget import PrivacyBudgetSpent

    console = Console(quiet=ranks.rank != 0)
    simulation = _open(args, console, ranks)
    target = simulation.federation.rounds
    with progress_bar(console, status=None) as progress:
        rounds = progress.add_task(
            "rounds", total=target, completed=simulation.server_round
        )
        phones = progress.add_task("phones", total=1, visible=False)

        def on_event(event: Event) -> None:
            if isinstance(event, RoundStarted):
                progress.update(
                    phones,
                    description=f"round {event.server_round} phones",
                    total=max(1, event.training),
                    completed=0,
                    visible=True,
                )
            elif isinstance(event, ClientDone):
                progress.update(phones, completed=event.done)
            elif isinstance(event, EvaluationStarted):
                progress.update(phones, description="evaluating")
            elif isinstance(event, BudgetSpent):
                progress.console.print(_budget_note(event, simulation), highlight=False)

        simulation.on_event = on_event
        record: dict | None = None
        try:
            while simulation.server_round < target:
                try:
                    record = simulation.run_round()
                except PrivacyBudgetSpent:
                    break  # on_event said why (BudgetSpent)
                progress.advance(rounds)
                if "heldout" in record or record["abandoned"] or "epsilon" in record:
                    progress.console.print(_summary(record))
        finally:
            simulation.close()
    console.print(f"{simulation.run.path}: {simulation.server_round} rounds saved")
    privacy = epsilon_text(record) if record is not None else None
    if privacy:
        console.print(
            f"privacy spent after {simulation.server_round} rounds: {privacy}"
        )
    return 0
