"""`fedtype personalize`: the fleet's phones fine-tune a run's global model."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from cli.errors import UsageError
from cli.options import add_threads_option, check_finite, check_threads
from device_sim.config import MAX_CLIENT_LR
from device_sim.memory_config import MemoryConfig
from device_sim.personalize_config import (
    LONG_FUTURE_MESSAGES,
    MAX_FUTURE_MESSAGES,
    TRAINED,
    VARIANTS,
    PersonalizationConfig,
)
from models.evaluation_sets import FUTURE_MESSAGES_PER_PHONE
from models.files import atomic_write
from models.run_lock import RunLock

if TYPE_CHECKING:  # torch: imported by the run, so --help stays instant
    from device_sim.personal_outcome import PhoneOutcome

# The sign test's level (coordinator.run.personal_gains.SIGNIFICANCE, which imports
# the phone's code): a phone is helped or hurt below this p-value.
SIGNIFICANCE = 0.05

# The histogram's file in the run directory, beside the report.
PLOT_NAME = "personalization.png"
# Most fine-tuning steps accepted: a phone's history is a few batches, and far
# more steps only memorise it at many times the cost.
MAX_STEPS = 10_000

HELP = "personalise a federated run's global model on each phone, measure it"
DESCRIPTION = f"""\
Each phone of the run's future-text cohort (the phones its evaluation measures)
personalises the latest global model on its own train text and measures it on its
own future text, in four variants: personal (fine-tuned on the phone; client_lr
and steps chosen per phone on a validation slice, its newest
{PersonalizationConfig().validation_fraction:.0%} of train messages, from a small
grid unless given), gated (the fine-tune only where it beat the global model on
the slice), memory (the global model mixed with a kNN memory of the phone's own
text; its weight, neighbours and temperature chosen on the slice, weight 0 being
the global model) and gated+memory (both: the phone's personal model, as the demo
uses it). Figures, each against the global model on the same phone: mean and
median relative top-1/top-3 gain ((variant - global) / global hits, phones where
the global model got no hit left out); helped and hurt, the phones where an exact
sign test at {SIGNIFICANCE:.0%} on the future targets that one model got and the
other missed finds a difference, and the rest (no detectable change); top-1 rose
and fell, the phones whose hits moved at all, mostly chance on a phone with a few
dozen targets. Writes RUN_DIR/personalization.json and RUN_DIR/{PLOT_NAME}.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `personalize` subcommand."""
    defaults = PersonalizationConfig()
    parser = subparsers.add_parser("personalize", help=HELP, description=DESCRIPTION)
    parser.add_argument("--run", required=True, help="a federated run directory")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="fine-tuning steps on every phone (default: chosen per phone from "
        f"{', '.join(map(str, defaults.steps))})",
    )
    parser.add_argument(
        "--client-lr",
        type=float,
        default=None,
        help="fine-tuning SGD step size on every phone (default: chosen per "
        f"phone from {', '.join(f'{lr:g}' for lr in defaults.client_lrs)})",
    )
    parser.add_argument(
        "--train",
        choices=tuple(TRAINED),
        default=None,
        help="which weights fine-tune: all, all but the (tied) embedding, the head "
        "(projection and output bias) or the output bias alone "
        f"(default: {defaults.trained})",
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=None,
        help="newest share of each phone's train messages held back to choose the "
        f"settings and gate on (default: {defaults.validation_fraction:g})",
    )
    parser.add_argument(
        "--memory-capacity",
        type=int,
        default=None,
        help="entries of each phone's memory, its newest text "
        f"(default: {MemoryConfig().capacity})",
    )
    parser.add_argument(
        "--phones",
        type=int,
        default=None,
        help="only the cohort's first N phones (a seeded sample of it), for a "
        "quicker look (default: the whole cohort)",
    )
    parser.add_argument(
        "--future-messages",
        type=int,
        default=None,
        help="measure each phone on its oldest N future messages (default: as "
        "many as the run's evaluation measures a phone, "
        f"{FUTURE_MESSAGES_PER_PHONE}; with --long-future: all of them)",
    )
    parser.add_argument(
        "--long-future",
        action="store_true",
        help=f"only the cohort's phones with at least {LONG_FUTURE_MESSAGES} future "
        "messages, whose per-phone figures mean more",
    )
    add_threads_option(
        parser, default=1, note="a phone's batches are too small for more to pay"
    )
    parser.set_defaults(func=run_personalize)


def _config_from(args: argparse.Namespace, local: Any) -> PersonalizationConfig:
    """The grid, narrowed to the options given."""
    return PersonalizationConfig.from_local(
        local,
        client_lrs=None if args.client_lr is None else [args.client_lr],
        steps=None if args.steps is None else [args.steps],
        validation_fraction=args.validation_fraction,
        trained=args.train,
        memory=None
        if args.memory_capacity is None
        else MemoryConfig(capacity=args.memory_capacity),
    )


def _check_options(args: argparse.Namespace) -> None:
    check_threads(args.threads)
    if args.steps is not None and not 1 <= args.steps <= MAX_STEPS:
        raise UsageError(f"--steps must lie in [1, {MAX_STEPS}], not {args.steps}")
    if args.memory_capacity is not None and not 1 <= args.memory_capacity <= 10**6:
        raise UsageError(
            f"--memory-capacity must lie in [1, 1000000], not {args.memory_capacity}"
        )
    if args.phones is not None and args.phones < 1:
        raise UsageError(f"--phones must be >= 1, not {args.phones}")
    future = args.future_messages
    if future is not None and not 1 <= future <= MAX_FUTURE_MESSAGES:
        raise UsageError(
            f"--future-messages must lie in [1, {MAX_FUTURE_MESSAGES:,}], not {future}"
        )
    if args.long_future and future is not None and future < LONG_FUTURE_MESSAGES:
        raise UsageError(
            f"--long-future needs --future-messages of at least "
            f"{LONG_FUTURE_MESSAGES}, not {future}: no phone could qualify"
        )
    if args.validation_fraction is not None:
        check_finite("--validation-fraction", args.validation_fraction)
        if not 0 < args.validation_fraction < 1:
            raise UsageError(
                "--validation-fraction must lie in (0, 1), "
                f"not {args.validation_fraction}"
            )
    if args.client_lr is not None:
        check_finite("--client-lr", args.client_lr)
        if not 0 < args.client_lr <= MAX_CLIENT_LR:
            raise UsageError(
                f"--client-lr must lie in (0, {MAX_CLIENT_LR:g}], not {args.client_lr}"
            )


def _percent(value: float | None, *, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:+.1%}" if signed else f"{value:.1%}"


# The per-phone table's columns and what each figure means (also in --help).
GAIN_COLUMNS = (
    "variant",
    "phones",
    "mean top-1",
    "median top-1",
    "mean top-3",
    "median top-3",
    "helped",
    "hurt",
    "no detectable change",
    "top-1 rose",
    "top-1 same",
    "top-1 fell",
)
GAIN_CAPTION = (
    "phones: those with words in their future text. A phone's relative gain: its "
    "hits with the variant's model over its hits with the global model, minus 1, "
    "on its own future text; mean and median over the phones where the global "
    "model had at least one hit (top-1 or top-3 alike). helped / hurt / no "
    f"detectable change: an exact sign test at {SIGNIFICANCE:.0%} on each phone's "
    "future targets that one model got and the other missed (they add up to "
    "100 %). top-1 rose / same / fell: the share of all the phones whose top-1 hits "
    "rose, stayed equal or fell at all (mostly chance on a phone with a few dozen "
    "targets; they add up to 100 %, and they count top-1 only, not top-3)."
)


def gain_cells(gain: dict[str, Any]) -> list[str]:
    """A variant's row: phones, gains, the sign test's split, rose/same/fell."""
    rose, fell = gain["helped_share"], gain["hurt_share"]
    same = None if rose is None or fell is None else 1 - rose - fell
    phones = gain.get("phones")
    return [
        "–" if phones is None else f"{phones:,}",
        _percent(gain["mean_top1"], signed=True),
        _percent(gain["median_top1"], signed=True),
        _percent(gain["mean_top3"], signed=True),
        _percent(gain["median_top3"], signed=True),
        _percent(gain.get("significantly_helped")),
        _percent(gain.get("significantly_hurt")),
        _percent(gain.get("no_detectable_change")),
        _percent(rose),
        _percent(same),
        _percent(fell),
    ]


def _tables(report: dict[str, Any]) -> tuple[Table, ...]:
    """The pooled metrics and the per-phone gains, for the terminal."""
    from coordinator.run.personalization import VARIANTS

    cohort = report["cohort_phones"]
    which = (
        f" (those of the {cohort} in the cohort with at least "
        f"{report['long_future_messages']} future messages)"
        if report.get("long_future_only")
        else (f" ({cohort} in the cohort)" if cohort != report["phones"] else "")
    )
    per_phone = report.get("future_messages_per_phone")
    up_to = f", at most {per_phone:,} messages a phone" if per_phone else ""
    pooled = Table(
        title=escape(
            f"{report['run']} at round {report['server_round']}: "
            f"{report['phones']} phones' own future text{which}{up_to}"
        )
    )
    for column in ("model", "top-1", "top-3", "perplexity", "keys saved"):
        pooled.add_column(column, justify="left" if column == "model" else "right")
    for name in ("global", *VARIANTS):
        metrics = report["future"][name]
        perplexity = metrics["perplexity"]
        pooled.add_row(
            name,
            _percent(metrics["top1"]),
            _percent(metrics["top3"]),
            "–" if perplexity is None else f"{perplexity:.1f}",
            _percent(metrics["keystroke_savings"]),
        )
    gains = [_gain_table(report["gain"], "against the global model, phone by phone")]
    long = report.get("long_future_phones", 0)
    if long:
        title = (
            f"the same on the {long} phones with at least "
            f"{report['long_future_messages']} future messages"
        )
        gains.append(_gain_table(report["gain_long_future"], title))
    return pooled, *gains


def _gain_table(gain: dict[str, Any], title: str) -> Table:
    """One row a variant: relative gains and the shares of phones."""
    table = Table(title=title, caption=GAIN_CAPTION, caption_justify="left")
    for column in GAIN_COLUMNS:
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name in VARIANTS:
        if name in gain:
            table.add_row(name, *gain_cells(gain[name]))
    return table


def plot_gains(report: dict[str, Any], path: Path) -> None:
    """A histogram of the per-phone relative top-1 gains of each variant."""
    import matplotlib

    from coordinator.run.personalization import VARIANTS

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    rows = [row for row in report["per_phone"] if row["global_top1_hits"]]
    series = {
        name: [
            100 * (row[f"{name}_top1_hits"] / row["global_top1_hits"] - 1)
            for row in rows
        ]
        for name in VARIANTS
    }
    values = [v for vs in series.values() for v in vs]
    bins = 30 if values else 1
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    for name, gains in series.items():
        gain = report["gain"][name]
        axes.hist(
            gains,
            bins=bins,
            range=(lo, hi),
            alpha=0.55,
            label=f"{name}: mean {_percent(gain['mean_top1'], signed=True)}, "
            f"{_percent(gain['significantly_hurt'])} of phones significantly hurt",
        )
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel("relative top-1 gain over the global model on own future text (%)")
    axes.set_ylabel("phones")
    axes.set_title(
        f"Personalisation of round {report['server_round']}'s global model, "
        f"{report['phones']} phones"
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    try:
        atomic_write(path, lambda out: figure.savefig(out, dpi=120, format="png"))
    finally:
        plt.close(figure)


def _settings_line(settings: dict[str, Any]) -> str:
    """The grid the phones chose from, in one line."""
    lrs = ", ".join(f"{lr:g}" for lr in settings["client_lrs"])
    steps = ", ".join(map(str, settings["steps"]))
    return (
        f"trained {settings['trained']}; client_lr from {lrs}; steps from {steps}; "
        f"validation slice the newest {settings['validation_fraction']:.0%} of "
        "train messages"
    )


def run_personalize(args: argparse.Namespace) -> int:
    """Personalise on every cohort phone, print the tables, write the report.

    The report goes into the run directory: its write lock is held throughout,
    and a directory that cannot be written is refused before any phone trains.
    """
    _check_options(args)
    with RunLock(args.run):
        return _personalize(args)


def _personalize(args: argparse.Namespace) -> int:
    import torch

    from coordinator.run.personalization import (
        build_report,
        open_federated_run,
        personalize_cohort,
        write_report,
    )

    console = Console()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with console.status("loading the run and its fleet"):
        run = open_federated_run(args.run)
    config = _config_from(args, run.federation.local)
    bar = Progress(
        TextColumn("phones"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    cohort = len(run.cohort.client_ids)
    total = cohort if args.phones is None else min(args.phones, cohort)
    task = bar.add_task("phones", total=total, last="")

    def on_phone(done: int, total: int, outcome: PhoneOutcome | None) -> None:
        bar.update(task, completed=done, last=outcome.client_id if outcome else "")

    with bar:
        outcomes = personalize_cohort(
            run,
            config,
            phones=args.phones,
            future_messages=args.future_messages,
            long_future=args.long_future,
            on_phone=on_phone,
        )
    report = build_report(
        run,
        config,
        outcomes,
        wall_seconds=time.perf_counter() - started,
        future_messages=args.future_messages,
        long_future=args.long_future,
    )
    path = write_report(run.run, report)
    plot = run.run.path / PLOT_NAME
    plot_gains(report, plot)
    for table in _tables(report):
        console.print(table)
    console.print(
        f"gate kept the fine-tune on {_percent(report['kept_share'])} of phones "
        f"and the memory on {_percent(report['memory_share'])}; "
        f"{report['phones_trained']} of {report['phones']} could fine-tune "
        f"(the others have no validation slice or nothing left to train on); "
        f"{report['wall_seconds']:.0f} s"
    )
    console.print(_settings_line(report["settings"]))
    console.print(f"wrote {escape(path)} and {escape(str(plot))}")
    return 0
