"""Corpus statistics and `fedtype corpus stats`, run through the real entry point."""

from __future__ import annotations

import io
import math
import os
import re
from collections import Counter
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import pytest
from helpers import bytes_corpus, corpus_bytes_examples
from hypothesis import strategies as st

import cli.main
from corpora.corpus import CorpusConfig, CorpusSplits, split_corpus
from corpora.messages import Message
from corpora.stats import (
    corpus_stats,
    part_stats,
    word_distribution,
    word_token_counts,
)
from corpora.tokenizer import WordTokenizer

WriteJsonl = Callable[[str | bytes], str]


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of `fedtype ARGV` with only `corpus` loaded.

    Other subcommands are left out so that this file tests the corpus command
    and `main`'s error handling, whatever state the others are in.
    """
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.object(cli.main, "COMMAND_MODULES", ("cli.corpus_cmd",)),
        mock.patch.dict(os.environ, {"COLUMNS": "120"}),
        redirect_stdout(out),
        redirect_stderr(err),
    ):
        try:
            code = cli.main.main(list(argv))
        except SystemExit as exit_:  # argparse: --help and usage errors
            code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


def row(out: str, label: str) -> list[str]:
    """The cells of the first table row of `out` whose first cell is `label`."""
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{out}")


def test_word_distribution_hand_computed() -> None:
    # Prepare: sorted 10, 20, 30, 40; p90 at rank 0.9 x 3 = 2.7 is 30 + 0.7 x 10
    counts = [30, 10, 40, 20]

    # Execute
    dist = word_distribution(counts)

    # Assert
    assert (dist.users, dist.minimum, dist.maximum) == (4, 10, 40)
    assert dist.median == 25.0
    assert dist.p90 == pytest.approx(37.0)
    assert dist.top_share == 1.0


def test_word_distribution_top_ten_share_hand_computed() -> None:
    # Prepare: 1..12 words sum to 78; the top ten hold 78 - 1 - 2 = 75
    counts = list(range(1, 13))

    # Execute
    dist = word_distribution(counts)

    # Assert
    assert dist.top_share == pytest.approx(75 / 78)
    assert dist.median == 6.5
    assert dist.p90 == pytest.approx(10.9)  # rank 0.9 x 11 = 9.9


def test_word_distribution_of_no_users_is_nan() -> None:
    # Prepare
    counts: list[int] = []

    # Execute
    dist = word_distribution(counts)

    # Assert
    assert dist.users == 0
    assert math.isnan(dist.median) and math.isnan(dist.top_share)


def test_part_stats_counts_words_and_unknown_tokens() -> None:
    # Prepare: 3 + 2 whitespace words; word tokens hello, there, bob, hello, bob
    tokenizer = WordTokenizer.from_words(["hello", "there"])
    texts = ["Hello there, Bob!", "hello  bob"]

    # Execute
    part = part_stats(tokenizer, texts)

    # Assert
    assert (part.messages, part.words, part.word_tokens) == (2, 5, 5)
    assert part.unknown_tokens == 2
    assert part.oov_rate == pytest.approx(0.4)


def test_part_stats_of_no_text_has_nan_oov_rate() -> None:
    # Prepare
    tokenizer = WordTokenizer.from_words(["hello"])

    # Execute
    part = part_stats(tokenizer, [])

    # Assert
    assert (part.messages, part.words, part.word_tokens) == (0, 0, 0)
    assert math.isnan(part.oov_rate)


def test_word_token_counts_match_the_tokenizer(
    tokenizer: WordTokenizer, small_splits: CorpusSplits
) -> None:
    # Prepare: the pieces of the tokenizer's own pre-tokenizer, marks left out
    texts = small_splits.heldout_texts()
    pieces = [piece for text in texts for piece in tokenizer.tokenize(text)]
    expected = Counter(p for p in pieces if re.fullmatch(r"[^\W_]+('[^\W_]+)*", p))

    # Execute
    counts = word_token_counts(tokenizer, ["\n".join(texts)])

    # Assert
    assert counts == expected


def test_corpus_stats_hand_computed(tokenizer: WordTokenizer) -> None:
    # Prepare: a has 2 + 3 + 4 = 9 words, capped to 5; b has 4; c has 1 (dropped)
    messages = [
        Message("a", "how are", 1.0),
        Message("a", "you doing today", 2.0),
        Message("a", "one more message here", 3.0),
        Message("b", "the cat zzqx sat", 1.0),
        Message("c", "hi", 1.0),
    ]
    config = CorpusConfig(
        max_words_per_user=5, min_words_per_user=3, heldout_fraction=0.0
    )
    splits = split_corpus(messages, config)

    # Execute
    stats = corpus_stats(messages, splits, tokenizer)

    # Assert
    assert (stats.users, stats.training_users, stats.heldout_users) == (3, 2, 0)
    assert (stats.dropped_users, stats.messages, stats.words) == (1, 5, 14)
    assert (stats.before_cap.minimum, stats.before_cap.median) == (1, 4.0)
    assert (stats.after_cap.users, stats.after_cap.maximum) == (2, 5)
    # a: 2 messages, 2 x 0.2 rounds to 0 future; b: 1 message, all train
    assert (stats.train.messages, stats.train.words) == (3, 9)
    assert (stats.future.messages, stats.heldout.messages) == (0, 0)
    assert (stats.train.word_tokens, stats.train.unknown_tokens) == (9, 1)
    assert stats.kept.words == 9


def test_corpus_stats_small_slice_parts_add_up(
    small_messages: list[Message],
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
) -> None:
    # Prepare
    words_kept = sum(small_splits.words_per_user.values())

    # Execute
    stats = corpus_stats(small_messages, small_splits, tokenizer)

    # Assert
    assert (stats.users, stats.training_users, stats.heldout_users) == (40, 30, 3)
    assert stats.dropped_users == 7
    assert stats.kept.messages == 1101 + 276 + 336
    assert stats.kept.words == words_kept
    assert stats.after_cap.users == 33
    assert stats.vocab_size == 10_036
    assert 0.03 < stats.kept.oov_rate < 0.06


def test_cli_corpus_stats_on_jsonl(write_jsonl: WriteJsonl) -> None:
    # Prepare: ann 6 words, bob 3 words, one empty line
    path = write_jsonl(
        '{"user": "ann", "text": "how are you"}\n'
        '{"user": "bob", "text": ""}\n'
        '{"user": "bob", "text": "fine thanks zzqx"}\n'
        '{"user": "ann", "text": "see you soon"}\n'
    )

    # Execute
    code, out, err = run_cli(
        "corpus", "stats", "--corpus", path, "--min-words-per-user", "1",
        "--heldout-fraction", "0",
    )  # fmt: skip

    # Assert: 9 word tokens, zzqx unknown; ann's 2 messages give no future one
    assert (code, err) == (0, "")
    assert row(out, "users") == ["users", "2"]
    assert row(out, "words read") == ["words read", "9"]
    assert row(out, "JSONL lines skipped for empty text")[1] == "1"
    assert row(out, "before the cap") == [
        "before the cap", "2", "3", "4.5", "5.7", "6", "100.00%"
    ]  # fmt: skip
    assert row(out, "train (oldest 80%)") == [
        "train (oldest 80%)", "2", "3", "9", "11.11%"
    ]  # fmt: skip
    assert row(out, "future (newest 20%)") == [
        "future (newest 20%)", "2", "0", "0", "-"
    ]  # fmt: skip
    assert "public vocabulary" in out


def test_cli_corpus_stats_chitchat_default_oov() -> None:
    # Prepare: the whole default corpus with the default public vocabulary
    argv = ("corpus", "stats")

    # Execute
    code, out, _ = run_cli(*argv)

    # Assert
    assert code == 0
    assert row(out, "users") == ["users", "1,315"]
    assert row(out, "all kept") == ["all kept", "1,067", "96,680", "895,286", "4.94%"]


def test_cli_corpus_stats_path_with_brackets_shown_verbatim(tmp_path: Path) -> None:
    # Prepare: rich would read the "[/b]" in ".../[/b]/chats.jsonl" as a closing tag
    folder = tmp_path / "[" / "b]"
    folder.mkdir(parents=True)
    path = folder / "chats.jsonl"
    path.write_text('{"user": "ann", "text": "hello there friend"}\n')

    # Execute
    code, out, err = run_cli("corpus", "stats", "--corpus", str(path))

    # Assert
    assert (code, err) == (0, "")
    assert "[/b]/chats.jsonl" in out


def test_cli_corpus_stats_private_vocabulary_warns(write_jsonl: WriteJsonl) -> None:
    # Prepare
    path = write_jsonl('{"user": "ann", "text": "zzqx zzqx words"}\n')

    # Execute
    code, out, _ = run_cli(
        "corpus", "stats", "--corpus", path, "--vocab", "private",
        "--min-words-per-user", "1", "--heldout-fraction", "0",
    )  # fmt: skip

    # Assert: the private vocabulary holds every training word
    assert code == 0
    assert row(out, "all kept")[-1] == "0.00%"
    assert "leaks" in out


def test_cli_corpus_stats_bad_jsonl_is_one_line_error(
    write_jsonl: WriteJsonl,
) -> None:
    # Prepare
    path = write_jsonl('{"user": "ann", "text": "hi"}\n{"user": "bob"}\n')

    # Execute
    code, out, err = run_cli("corpus", "stats", "--corpus", path)

    # Assert
    assert (code, out) == (2, "")
    assert err == f"fedtype corpus: error: {path}, line 2, field 'text': is missing\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--corpus", "/nonexistent/corpus.jsonl"), "cannot be read"),
        (("--heldout-fraction", "1.5"), "field 'heldout_fraction': must be in [0, 1]"),
        (("--max-words-per-user", "0"), "field 'max_words_per_user'"),
    ],
)
def test_cli_corpus_stats_bad_settings_are_one_line_errors(
    argv: tuple[str, ...], message: str
) -> None:
    # Prepare
    command = ("corpus", "stats", *argv)

    # Execute
    code, _, err = run_cli(*command)

    # Assert
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_corpus_stats_bad_vocab_size_is_usage_error() -> None:
    # Prepare
    command = ("corpus", "stats", "--vocab-size", "0")

    # Execute
    code, _, err = run_cli(*command)

    # Assert
    assert code == 2
    assert "argument --vocab-size: must be a positive integer, not '0'" in err


def test_cli_corpus_stats_help_explains_the_figures() -> None:
    # Prepare
    command = ("corpus", "stats", "--help")

    # Execute
    code, out, _ = run_cli(*command)

    # Assert
    assert code == 0
    for phrase in ("--vocab {public,private}", "out-of-vocabulary", "leaks", "p90"):
        assert phrase in out


def test_cli_corpus_stats_registered_with_every_command() -> None:
    # Prepare
    out = io.StringIO()

    # Execute: the real parser, every subcommand module loaded
    with redirect_stdout(out), pytest.raises(SystemExit) as caught:
        cli.main.main(["corpus", "stats", "--help"])

    # Assert
    assert caught.value.code == 0
    assert out.getvalue().startswith("usage: fedtype corpus stats")


def test_cli_corpus_without_subcommand_is_usage_error() -> None:
    # Prepare
    command = ("corpus",)

    # Execute
    code, _, err = run_cli(*command)

    # Assert
    assert code == 2
    assert "SUBCOMMAND" in err


@corpus_bytes_examples(st.binary(max_size=120), examples=25)
def test_cli_corpus_stats_arbitrary_bytes_never_trace_back(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    # Prepare
    path = bytes_corpus(tmp_path_factory, data)

    # Execute
    code, _, err = run_cli(
        "corpus", "stats", "--corpus", str(path), "--vocab-size", "50"
    )

    # Assert
    assert code in (0, 2)
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith(f"fedtype corpus: error: {path}")
