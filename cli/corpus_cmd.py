"""`fedtype corpus stats`: what the corpus holds and how fedtype cuts it."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.options import add_corpus_options, corpus_config
from corpora.corpus import CorpusConfig, load_messages, split_corpus
from corpora.stats import TOP_USERS, CorpusStats, PartStats, WordDistribution
from corpora.stats import corpus_stats as compute_stats
from corpora.tokenizer import WordTokenizer

VOCABULARIES = ("public", "private")
STATS_DESCRIPTION = f"""\
Read a corpus and cut it as training does: each user's oldest words up to the
cap, users under the minimum dropped, a share of users held out, and each
training user's messages split in time into train (older) and future (newest).
Then show:

  - users: training, held out, dropped by the minimum;
  - messages and words read, and JSONL lines skipped for empty text;
  - words per user (min, median, p90, max, and the share of all words held
    by the {TOP_USERS} wordiest users),
    before and after the cap;
  - messages and words of the train, future and held-out parts;
  - the out-of-vocabulary rate: the share of word tokens (punctuation not
    counted) that the vocabulary maps to <unk>, which no model can suggest.

Words are whitespace-separated, the unit the cap counts in. Nothing is written.
"""
STATS_EXAMPLES = """\
examples:
  fedtype corpus stats
  fedtype corpus stats --corpus messages.jsonl --min-words-per-user 10
  fedtype corpus stats --vocab private --vocab-size 5000
"""


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value!r}")
    return number


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `corpus` command and its `stats` subcommand."""
    corpus_parser = subparsers.add_parser(
        "corpus",
        help="look at the corpus: users, words, splits, vocabulary cover",
        description="Commands that read the corpus without training anything.",
    )
    commands = corpus_parser.add_subparsers(dest="corpus_command", metavar="SUBCOMMAND")
    commands.required = True
    stats_parser = commands.add_parser(
        "stats",
        help="users, words, splits and out-of-vocabulary rate of a corpus",
        description=STATS_DESCRIPTION,
        epilog=STATS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_corpus_options(stats_parser, max_users=False)
    stats_parser.add_argument(
        "--seed",
        type=int,
        default=CorpusConfig().seed,
        help="seed of the held-out draw; give a run's seed to see its split "
        "(default: %(default)s)",
    )
    vocab = stats_parser.add_argument_group("vocabulary")
    vocab.add_argument(
        "--vocab",
        choices=VOCABULARIES,
        default="public",
        help="'public': the most frequent English words of wordfreq, shaped by no "
        "user (what training uses); 'private': the most frequent words of the "
        "training users' own text, which leaks their private words into a shared "
        "artefact and is shown only for comparison (default: %(default)s)",
    )
    vocab.add_argument(
        "--vocab-size",
        type=_positive_int,
        default=10_000,
        help="words in the vocabulary, before specials and punctuation "
        "(default: %(default)s)",
    )
    stats_parser.set_defaults(func=run_stats)


def _percent(value: float) -> str:
    return "-" if value != value else f"{value:.2%}"  # nan for an empty part


def _number(value: float) -> str:
    if value != value:  # nan: no users
        return "-"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def overview_table(stats: CorpusStats, config: CorpusConfig) -> Table:
    """Users, messages and words read."""
    # A path may hold square brackets, which rich would read as markup.
    table = Table(title=f"Corpus: {escape(stats.source)}", title_justify="left")
    table.add_column("")
    table.add_column("count", justify="right")
    rows = [
        ("users", stats.users),
        ("  training", stats.training_users),
        (
            f"  held out ({config.heldout_fraction:.0%} drawn, seed {config.seed})",
            stats.heldout_users,
        ),
        (
            f"  dropped: under the {config.min_words_per_user:,}-word minimum",
            stats.dropped_users,
        ),
        ("messages read", stats.messages),
        ("words read", stats.words),
        ("JSONL lines skipped for empty text", stats.skipped_empty),
    ]
    for name, value in rows:
        table.add_row(name, f"{value:,}")
    return table


def distribution_table(stats: CorpusStats, config: CorpusConfig) -> Table:
    """Per-user words before and after the cap."""
    table = Table(title="Words per user", title_justify="left")
    for column in (
        "",
        "users",
        "min",
        "median",
        "p90",
        "max",
        f"top-{TOP_USERS} share",
    ):
        table.add_column(column, justify="left" if not column else "right")
    rows: list[tuple[str, WordDistribution]] = [
        ("before the cap", stats.before_cap),
        (f"kept, capped at {config.max_words_per_user:,}", stats.after_cap),
    ]
    for name, dist in rows:
        table.add_row(
            name,
            f"{dist.users:,}",
            f"{dist.minimum:,}",
            _number(dist.median),
            _number(dist.p90),
            f"{dist.maximum:,}",
            _percent(dist.top_share),
        )
    return table


def split_table(stats: CorpusStats, config: CorpusConfig, vocabulary: str) -> Table:
    """Messages, words and OOV rate of each part of the split."""
    table = Table(title="Split", title_justify="left")
    for column in ("part", "users", "messages", "words", f"OOV ({vocabulary})"):
        table.add_column(column, justify="left" if column == "part" else "right")
    future = config.future_fraction
    rows: list[tuple[str, int, PartStats]] = [
        (f"train (oldest {1 - future:.0%})", stats.training_users, stats.train),
        (f"future (newest {future:.0%})", stats.training_users, stats.future),
        ("held-out users", stats.heldout_users, stats.heldout),
        ("all kept", stats.training_users + stats.heldout_users, stats.kept),
    ]
    for name, users, part in rows:
        table.add_row(
            name,
            f"{users:,}",
            f"{part.messages:,}",
            f"{part.words:,}",
            _percent(part.oov_rate),
        )
    return table


def vocabulary_note(vocabulary: str, tokenizer: WordTokenizer) -> str:
    """One line saying which vocabulary the OOV column measured."""
    words = len(tokenizer.word_ids)
    others = tokenizer.vocab_size - words
    if vocabulary == "public":
        source = f"wordfreq's top {words:,} English words"
        warning = ""
    else:
        source = f"the {words:,} most frequent words of the training users' train text"
        warning = (
            " A private vocabulary leaks those users' words into a shared artefact;"
            " it is shown only for comparison."
        )
    return (
        f"OOV: share of word tokens (punctuation not counted) that map to <unk> in "
        f"the {vocabulary} vocabulary: {source}, plus {others} specials and "
        f"punctuation marks.{warning}"
    )


def run_stats(args: argparse.Namespace) -> int:
    """Load, split and measure the corpus, then print three tables."""
    console = Console()
    config = corpus_config(args, seed=args.seed)
    with console.status("loading the corpus"):
        messages, skipped = load_messages(config.source)
        splits = split_corpus(messages, config)
        splits.skipped_empty = skipped
    with console.status(f"building the {args.vocab} vocabulary"):
        if args.vocab == "public":
            tokenizer = WordTokenizer.public(args.vocab_size)
        else:
            tokenizer = WordTokenizer.from_texts(splits.train_texts(), args.vocab_size)
    with console.status("counting"):
        stats = compute_stats(messages, splits, tokenizer)
    console.print(overview_table(stats, config))
    console.print(distribution_table(stats, config))
    console.print(split_table(stats, config, args.vocab))
    console.print(vocabulary_note(args.vocab, tokenizer))
    return 0
