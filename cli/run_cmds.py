"""`fedtype evaluate` and `fedtype suggest`: read any run directory."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.errors import UsageError

if TYPE_CHECKING:
    from corpora.corpus import CorpusSplits
    from models.metrics import EvalMetrics
    from models.suggest import Suggester

# Most suggestions asked for at once: a keyboard shows three.
MAX_SUGGESTIONS = 100
# What `suggest --engine` runs: the PyTorch checkpoint or the exported ONNX graph.
ENGINES = ("torch", "onnx")

EVALUATE_HELP = "measure a run's model on held-out users and future text"
EVALUATE_DESCRIPTION = """\
Top-1/top-3 next-word accuracy, perplexity and keystroke savings of a run's
model on held-out users (generalisation) and on the training users' future text
(personalisation), beside the unigram baseline. The texts are the run's own
evaluation sets, drawn as its training drew them (models.evaluation_sets): an
evenly spaced sample of held-out users' messages, and the future cohort (users or
phones ordered by a hash of the seed, each giving its oldest few future messages,
until the cohort holds the sample's size). So its figures match the run's logs.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` and `suggest` subcommands."""
    evaluate_parser = subparsers.add_parser(
        "evaluate", help=EVALUATE_HELP, description=EVALUATE_DESCRIPTION
    )
    evaluate_parser.add_argument("--run", required=True, help="run directory")
    evaluate_parser.add_argument(
        "--step",
        type=int,
        default=None,
        help="checkpoint: a central run's step or a federated run's round "
        "(default: latest)",
    )
    evaluate_parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="messages per evaluation set, drawn by the same rule, 0 for all "
        "(default: the run's own sizes, as its training measured)",
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


def evaluation_texts(
    config: dict[str, Any], splits: CorpusSplits, limit: int | None
) -> dict[str, list[str]]:
    """The run's own evaluation sets: the texts its training logged metrics on.

    A federated run's future cohort is drawn over its phones (one a user, or one
    a shard of a user), a central run's over its users, by the one rule of
    `models.evaluation_sets.future_cohort`; `limit` (0: all) replaces both sizes.
    """
    from corpora.samples import heldout_sample
    from device_sim.fleet import shards
    from models.evaluation_sets import future_cohort
    from models.settings import FLEET_RENAME, renamed

    federation = config.get("federation")
    settings = federation or config.get("training") or {}
    per = settings.get("future_messages_per_phone") or settings.get(
        "future_messages_per_user", 10
    )
    heldout, future = settings.get("heldout_messages"), settings.get("future_messages")
    if limit is not None:
        heldout = future = limit or 10**9
    fleet = renamed((federation or {}).get("fleet") or {}, FLEET_RENAME)
    users = list(splits.training_users.values())[: fleet.get("max_users")]
    futures = {
        client_id: list(texts[:per])
        for user in users
        for client_id, _, texts in shards(user, fleet.get("messages_per_phone"))
    }
    cohort = future_cohort(
        {client_id: len(texts) for client_id, texts in futures.items()},
        seed=int(settings.get("seed", 0)),
        messages=int(future or 0),
        keystroke_texts=0,
    )
    return {
        "held-out users": heldout_sample(splits, heldout),
        "future text": [t for c in cohort.client_ids for t in futures[c]],
    }


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate the run's model and the unigram baseline on both sets."""
    from corpora.corpus import load_corpus
    from models.baseline import UnigramModel
    from models.metrics import evaluate
    from models.rundir import RunDir, RunKind

    console = Console()
    if args.limit is not None and args.limit < 0:
        raise UsageError(f"--limit must be >= 0 (0 for all), not {args.limit}")
    run = RunDir(args.run)
    corpus = run.corpus_config()
    tokenizer = run.load_tokenizer()
    model, step = run.load_model(args.step)
    with console.status("loading the corpus"):
        splits = load_corpus(corpus)
    sets = evaluation_texts(run.read_config(), splits, args.limit)
    unigram = UnigramModel.fit(tokenizer, splits.train_texts())
    where = "round" if run.read_kind() is RunKind.FEDERATED else "step"
    table = Table(title=escape(f"{args.run} at {where} {step}"))
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
        from models.rundir import RunDir
        from models.suggest import Suggester

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
    from models.suggest import Suggester

    exported = load_exported(directory)
    return Suggester(exported.model, exported.tokenizer)
