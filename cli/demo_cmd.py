"""`fedtype demo`: type on a phone keyboard while a simulated fleet trains it."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from cli.errors import UsageError
from cli.options import typed_flag
from cli.privacy_options import add_privacy_options, privacy_config
from cli.simulate_checks import new_run_defaults
from coordinator.config import FederationConfig, FederationConfigError
from coordinator.privacy.privacy_config import PrivacyConfig
from coordinator.round.server_choices import StrategyConfig
from corpora.corpus import CorpusConfig, CorpusSplits, load_corpus
from models.run_lock import LOCK_FILE, RunLock

if TYPE_CHECKING:  # torch and Textual: imported when the demo opens
    from tui.app import CentralReference
    from tui.child_fleet import ChildProcessFleet
    from tui.fleet import DemoFleet

DEFAULT_RUN = "runs/demo"


def demo_federation(
    clients_per_round: int,
    *,
    privacy: PrivacyConfig | None = None,
    rounds: int | None = None,
) -> FederationConfig:
    """The settings of a fresh demo fleet: short rounds, a chart point each.

    Raises:
        UsageError: the privacy options conflict with the demo's settings.
    """
    try:
        return _demo_federation(clients_per_round, privacy or PrivacyConfig(), rounds)
    except FederationConfigError as error:
        raise UsageError(str(error)) from None


def _demo_federation(
    clients_per_round: int, privacy: PrivacyConfig, rounds: int | None
) -> FederationConfig:
    return FederationConfig(
        # The demo keeps going until you quit; this only sets the final evaluation
        # (and, with --target-epsilon, the rounds the budget is spread over).
        rounds=rounds or 10_000,
        # Ten phones a round (the default twenty would double a round's time).
        clients_per_round=clients_per_round,
        # Evaluate every round, on a held-out sample small enough to take about
        # a second. The dashboard compares held-out users only, as the live
        # baseline does; F8 measures a phone's own future text when it opens,
        # so measuring the phones' future text every round (a sixth of the
        # training process's time) would only slow the rounds down.
        eval_every=1,
        heldout_messages=300,
        future_messages=0,
        keystroke_texts=60,
        # Keep rounds 5, 10, 15, ... so "suggestions over rounds" survives restarts.
        checkpoint_every=5,
        # FedAdagrad (Reddi et al. 2021, arXiv 2003.00295): with 10 reports a
        # round FedAvgM's momentum overshoots now and then, even warmed up.
        # Measured with this demo's settings (benchmarks/early_rounds.py, first
        # 15 rounds, docs/learning.md), FedAdagrad never rose above the
        # untrained model's perplexity on the default fleet or on three seeds
        # of a 60-user one, where FedAvgM reached 1,635 and 13,668, and it
        # put "you" first after "how are" one round earlier (round 10, 60 s
        # after the start of benchmarks/demo_rounds.py).
        strategy=StrategyConfig(name="fedadagrad"),
        # Secure aggregation and DP from the privacy options (default: none).
        privacy=privacy,
    )


HELP = "type on a phone keyboard while a simulated fleet trains its model"
DESCRIPTION = f"""\
A terminal phone keyboard with suggestions from the federated model, a fleet
dashboard, and rounds training in the background. Opens --run if it holds a run,
else starts a fresh fleet there (default {DEFAULT_RUN}). After each round a
central baseline (the same model on the pooled text of the same users) trains to
as many tokens as the fleet, in RUN/central; --central RUN shows an existing one
instead, --no-central none. Keys: F1-F3 or Tab accept a suggestion, right arrow
the ghost text, Enter sends, F5 pauses, F6 switches the model, F7 shows this
phone's own, F8 opens the fleet's phones, F9 explains the dashboard, Ctrl+Q quits.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `demo` subcommand."""
    parser = subparsers.add_parser("demo", help=HELP, description=DESCRIPTION)
    parser.add_argument(
        "--run",
        default=None,
        help=f"federated run directory to open or start (default: {DEFAULT_RUN})",
    )
    central = parser.add_mutually_exclusive_group()
    central.add_argument(
        "--central",
        default=None,
        help="an existing central baseline's run directory, shown instead of the "
        "live one: a reference line and a source",
    )
    central.add_argument(
        "--no-central",
        action="store_true",
        help="train no live central baseline beside the fleet (default: one in "
        "RUN/central, paced by the fleet's training tokens)",
    )
    parser.add_argument(
        "--clients-per-round",
        type=int,
        default=10,
        help="phones a round aggregates, for a fresh fleet (default: %(default)s)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="stop training after this round (default: keep going until you quit)",
    )
    parser.add_argument(
        "--paused", action="store_true", help="open with training paused"
    )
    parser.add_argument(
        "--engine",
        choices=("torch", "onnx"),
        default="torch",
        help="what runs the global strip: the PyTorch model, or the model "
        "exported to ONNX (RUN/export, re-exported as each round lands) under "
        "onnxruntime (default: %(default)s)",
    )
    privacy = add_privacy_options(parser)
    parser.set_defaults(func=run_demo, privacy_defaults=new_run_defaults(privacy))


def privacy_flags(args: argparse.Namespace) -> list[str]:
    """The privacy options given on the command line (not left at their default),
    named as typed."""
    defaults: dict[str, object] = args.privacy_defaults
    return [
        typed_flag(args, dest)
        for dest, default in defaults.items()
        if getattr(args, dest) != default
    ]


def demo_privacy(args: argparse.Namespace, *, fresh: bool) -> PrivacyConfig:
    """The fresh fleet's privacy settings; an existing run keeps its own."""
    flags = privacy_flags(args)
    if flags and not fresh:
        raise UsageError(
            f"{', '.join(flags)}: privacy options apply to a fresh fleet only; "
            f"{args.run or DEFAULT_RUN} holds a run, which keeps its own protections "
            "(pick an empty --run)"
        )
    if args.target_epsilon is not None and args.rounds is None:
        raise UsageError(
            "--target-epsilon: the demo runs until you quit; give --rounds N to "
            "spread the budget over"
        )
    return privacy_config(args, clients_per_round=args.clients_per_round)


def is_free(path: Path) -> bool:
    """Whether `path` is missing or an empty directory: a fresh run may go there."""
    if not path.exists():
        return True
    return path.is_dir() and all(p.name == LOCK_FILE for p in path.iterdir())


def free_sibling(path: Path) -> Path:
    """The first of `path-2`, `path-3`, ... that is free."""
    for number in range(2, 10_000):
        candidate = path.with_name(f"{path.name}-{number}")
        if is_free(candidate):
            return candidate
    raise UsageError(f"{path}: no free directory name beside it")


def create_run(
    path: Path, federation: FederationConfig, *, live_central: bool = True
) -> CorpusSplits:
    """Create a fresh demo fleet's run in `path` (with its live central baseline
    in `path`/central unless `live_central` is False); returns the corpus."""
    from coordinator.run.simulation import Simulation
    from tui.live_central import start_live_central

    corpus = CorpusConfig()
    splits = load_corpus(corpus)
    with RunLock(path, create=True):  # two demos never create one run together
        Simulation.create(
            path,
            federation=federation,
            corpus=corpus,
            splits=splits,
        ).close()
        if live_central:
            start_live_central(path, splits)
    return splits


def open_fleet(
    path: Path, splits: CorpusSplits | None = None, *, live_central: bool = True
) -> ChildProcessFleet:
    """The run in `path`, its rounds in a child process (errors say what is
    wrong with the run); `splits` spares the child loading the corpus again;
    `live_central` trains the run's live central baseline, if it has one."""
    from tui.child_fleet import ChildProcessFleet

    return ChildProcessFleet(
        path, name=str(path), splits=splits, live_central=live_central
    )


def start_fleet(
    path: Path, federation: FederationConfig, *, live_central: bool = True
) -> ChildProcessFleet:
    """A fresh fleet on the default corpus in `path`."""
    splits = create_run(path, federation, live_central=live_central)
    return open_fleet(path, splits, live_central=live_central)


def load_central(path: str) -> CentralReference:
    """The central baseline's latest model and held-out top-3."""
    from models.rundir import POOLED_KINDS, RunDir, RunDirError
    from tui.app import CentralReference

    run = RunDir(path)
    try:
        run.config_of(POOLED_KINDS)
    except RunDirError as error:
        raise UsageError(str(error)) from None
    model, _ = run.load_model()
    top3 = None
    for record in run.read_metrics():
        value = (record.get("heldout") or {}).get("top3")
        if isinstance(value, int | float):
            top3 = float(value)
    return CentralReference(
        model=model.eval(), tokenizer=run.load_tokenizer(), top3=top3
    )


def run_demo(args: argparse.Namespace) -> int:
    """Open the demo app; the process exits when the user quits."""
    if args.clients_per_round < 1:
        raise UsageError("--clients-per-round must be >= 1")
    if args.rounds is not None and args.rounds < 1:
        raise UsageError("--rounds must be >= 1")
    import torch

    from tui.app import FedtypeApp

    # Suggestions run one token at a time; torch's second thread only adds
    # hand-off cost on a small CPU, and it slows the rounds' small batches too.
    torch.set_num_threads(1)
    central = load_central(args.central) if args.central else None
    path = Path(args.run or DEFAULT_RUN)
    privacy = demo_privacy(args, fresh=is_free(path))
    # Only a budget needs a last round; otherwise the fleet trains until you quit.
    rounds = args.rounds if args.target_epsilon is not None else None
    federation = demo_federation(args.clients_per_round, privacy=privacy, rounds=rounds)
    # An existing baseline (--central RUN) replaces the live one.
    live = not args.no_central and central is None
    factory: Callable[[], DemoFleet]
    if is_free(path):
        factory = lambda: start_fleet(path, federation, live_central=live)  # noqa: E731
    else:
        factory = lambda: open_fleet(path, live_central=live)  # noqa: E731
    # Where a fresh fleet goes if `path` cannot be opened: beside it, untouched.
    fresh = free_sibling(path)
    fresh_factory: Callable[[], DemoFleet] = lambda: start_fleet(  # noqa: E731
        fresh, federation, live_central=live
    )
    if args.engine == "onnx":
        factory = _onnx(factory, path)
        fresh_factory = _onnx(fresh_factory, fresh)
    app = FedtypeApp(
        factory,
        central=central,
        autostart=not args.paused,
        max_rounds=args.rounds,
        fresh_factory=fresh_factory,
        fresh_where=str(fresh),
    )
    app.run()
    _leave_now(0 if app.return_code in (None, 0) else int(app.return_code))


def _leave_now(code: int) -> NoReturn:
    """Exit as soon as the app has restored the screen.

    Tearing down the interpreter's torch and Textual objects kept the shell
    waiting about 1.5 s after the screen cleared, for nothing: every file of
    the run is written atomically as it goes and the training process has
    stopped. Threads still finishing work (a message being stored) are waited
    for first, as the interpreter would.
    """
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(timeout=10)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _onnx(factory: Callable[[], DemoFleet], path: Path) -> Callable[[], DemoFleet]:
    """`factory`'s fleet with its global models exported to ONNX in PATH/export."""
    from tui.onnx_fleet import OnnxFleet

    return lambda: OnnxFleet(factory(), out=path / "export")
