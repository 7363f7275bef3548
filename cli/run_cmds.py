"""`fedtype evaluate` and `fedtype suggest`: read any run directory."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.errors import UsageError
from corpora.corpus import load_corpus
from corpora.samples import future_sample, heldout_sample
from models.baseline import UnigramModel
from models.metrics import EvalMetrics, evaluate
from models.rundir import RunDir
from models.suggest import Suggester

# Most suggestions asked for at once: a keyboard shows three.
MAX_SUGGESTIONS = 100
# What `suggest --engine` runs: the PyTorch checkpoint or the exported ONNX graph.
ENGINES = ("torch", "onnx")

EVALUATE_HELP = "measure a run's model on held-out users and future text"
EVALUATE_DESCRIPTION = """\
Top-1/top-3 next-word accuracy, perplexity and keystroke savings of a run's
model on held-out users (generalisation) and on the training users' future text
(personalisation), beside the unigram baseline.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` and `suggest` subcommands."""
    evaluate_parser = subparsers.add_parser(
        "evaluate", help=EVALUATE_HELP, description=EVALUATE_DESCRIPTION
    )
    evaluate_parser.add_argument("--run", required=True, help="run directory")
    evaluate_parser.add_argument(
        "--step", type=int, default=None, help="checkpoint step (default: latest)"
    )
    evaluate_parser.add_argument(
        "--limit",
        type=int,
        default=2000,
        help="messages per evaluation set, a fixed sample (default: %(default)s; "
        "0 for all)",
    )
    evaluate_parser.set_defaults(func=run_evaluate)

    suggest_parser = subparsers.add_parser(
        "suggest",
        help="the model's suggestions for a text",
        description="Next-word suggestions after a space, completions inside a word.",
    )
    suggest_parser.add_argument(
        "--run", default=None, help="run directory (torch), or export directory"
    )
    suggest_parser.add_argument(
        "--step", type=int, default=None, help="checkpoint step (default: latest)"
    )
    suggest_parser.add_argument(
        "-k", type=int, default=3, help="number of suggestions (default: 3)"
    )
    suggest_parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="torch",
        help="torch: the run's checkpoint; onnx: a `fedtype export` directory, "
        "given as --run or as the first word (default: %(default)s)",
    )
    suggest_parser.add_argument(
        "text",
        nargs="+",
        help="what was typed so far (end with a space for the next word)",
    )
    suggest_parser.set_defaults(func=run_suggest)


def _row(name: str, metrics: EvalMetrics) -> list[str]:
    return [
        name,
        f"{metrics.top1:.2%}",
        f"{metrics.top3:.2%}",
        f"{metrics.perplexity:.1f}",
        f"{metrics.keystroke_savings:.2%}",
        f"{metrics.num_messages:,}",
    ]


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate the run's model and the unigram baseline on both sets."""
    console = Console()
    if args.limit < 0:
        raise UsageError(f"--limit must be >= 0 (0 for all), not {args.limit}")
    run = RunDir(args.run)
    corpus = run.corpus_config()
    tokenizer = run.load_tokenizer()
    model, step = run.load_model(args.step)
    limit = args.limit or None
    with console.status("loading the corpus"):
        splits = load_corpus(corpus)
    sets = {
        "held-out users": heldout_sample(splits, limit),
        "future text": future_sample(splits, limit),
    }
    unigram = UnigramModel.fit(tokenizer, splits.train_texts())
    table = Table(title=escape(f"{args.run} at step {step}"))
    for column in ("model / set", "top-1", "top-3", "perplexity", "keys saved", "msgs"):
        table.add_column(column, justify="left" if column == "model / set" else "right")
    for set_name, texts in sets.items():
        with console.status(f"evaluating on {set_name}"):
            table.add_row(
                *_row(f"model / {set_name}", evaluate(model, tokenizer, texts))
            )
            table.add_row(
                *_row(f"unigram / {set_name}", evaluate(unigram, tokenizer, texts))
            )
    console.print(table)
    return 0


def run_suggest(args: argparse.Namespace) -> int:
    """Print the suggestions for the given text, one per line."""
    if not 1 <= args.k <= MAX_SUGGESTIONS:
        raise UsageError(f"-k must lie in [1, {MAX_SUGGESTIONS}], not {args.k}")
    words = list(args.text)
    if args.engine == "onnx":
        directory = args.run
        if directory is None:
            if len(words) < 2:
                raise UsageError("--engine onnx needs an export directory: DIR TEXT")
            directory, *words = words
        if args.step is not None:
            raise UsageError("--step picks a run's checkpoint; an export has one")
        suggester = _onnx_suggester(directory)
    else:
        if args.run is None:
            raise UsageError("--run is required with --engine torch")
        run = RunDir(args.run)
        model, _ = run.load_model(args.step)
        suggester = Suggester(model, run.load_tokenizer())
    text = " ".join(words)
    if words[-1].endswith(" "):
        text += " "
    for word in suggester.suggest(text, k=args.k):
        print(word)
    return 0


def _onnx_suggester(directory: str) -> Suggester:
    """The strip of an export directory's graph under onnxruntime."""
    from models.onnx_engine import load_exported

    exported = load_exported(directory)
    return Suggester(exported.model, exported.tokenizer)
