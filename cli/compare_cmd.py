"""`fedtype compare`: federated, central and local-only runs side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.errors import UsageError

HELP = "compare any mix of federated, central and local-only runs"
DESCRIPTION = """\
A table of each run's last evaluation (held-out and future accuracy, perplexity,
keystroke savings, tokens, wall time, bytes exchanged; rounds and phone reports
for federated runs; epsilon, the attack's precision / recall, canary exposure
and seconds per round). A federated run personalised by `fedtype personalize`
gets a second column: its gated personal models on the same future text, with
the mean relative top-1 gain and the share of phones hurt. With --out, also
report.md and PNG plots of held-out top-3 accuracy against tokens processed,
wall time, federated rounds, bytes sent and epsilon; several seeds of one recipe
(same kind, setting and protections) are drawn as their mean with error bars. A
run with no evaluation yet (such as one stopped by its privacy budget first) is
left out with a note; the others are compared.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `compare` subcommand."""
    parser = subparsers.add_parser("compare", help=HELP, description=DESCRIPTION)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    parser.add_argument(
        "--out", default=None, help="directory for report.md and the plots"
    )
    parser.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    """Print the table; with --out write the report and plots."""
    if args.out is not None and not args.out.strip():
        raise UsageError("--out must name a directory, not an empty string")
    from cli.compare_report import COLUMNS, markdown, table_rows
    from cli.compare_runs import corpus_warning, load_comparable
    from models.files import atomic_write_text, check_writable

    if args.out is not None:
        check_writable(args.out)  # before reading every run, not after
    summaries, left_out = load_comparable(args.runs)
    # One column per run: a terminal is narrower than the Markdown report.
    rows = table_rows(summaries)
    table = Table(title="fedtype compare")
    table.add_column("")
    for cells in rows:
        table.add_column(cells[0], justify="right")
    for index, name in enumerate(COLUMNS[1:], start=1):
        table.add_row(name, *(cells[index] for cells in rows))
    console = Console()
    console.print(table)
    for note in [*left_out, *(note for s in summaries for note in s.notes)]:
        Console(stderr=True).print(
            f"note: {escape(note)}", highlight=False, soft_wrap=True
        )
    warning = corpus_warning(summaries)
    if warning is not None:
        Console(stderr=True).print(f"[yellow]warning:[/] {warning}", highlight=False)
    if args.out is None:
        return 0
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    from cli.compare_plots import plot  # matplotlib only when plotting

    plots = plot(summaries, out)
    report = out / "report.md"
    atomic_write_text(report, markdown(summaries, plots))
    console.print(f"wrote {report} and {', '.join(plots)}")
    return 0
