"""Bad input is a one-line error with exit status 2, never a traceback or a hang.

Corpus files that are not regular files, too large or too long a line, a BOM, the
word cap inside one message, the corpus fingerprint; the CLI's bad option values;
`compare`'s captions; `evaluate` on a local-only run; F8's list; --version.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import run_cli

from cli.compare_runs import corpus_warning, load_runs, run_labels, setting
from cli.main import main
from corpora.corpus import (
    CorpusConfig,
    cap_history,
    corpus_fingerprint,
    load_corpus,
    split_corpus,
)
from corpora.jsonl import load_jsonl
from corpora.messages import CorpusError, Message
from corpora.tokenizer import WordTokenizer
from models.rundir import RunDir, RunDirError
from tui.fleet_screen import list_hint, matches

WriteJsonl = Callable[[str | bytes], str]
GOOD = '{"user": "ann", "text": "hello there"}\n'


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A JSONL corpus of six users with 40 words each (no held-out users)."""
    path = tmp_path_factory.mktemp("corpus") / "tiny.jsonl"
    words = "see you at six then we can talk about the plan for the weekend ok"
    rows = [
        {"user": f"user{u}", "text": words, "timestamp": 100 * u + m}
        for u in range(6)
        for m in range(4)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_load_jsonl_refuses_a_fifo_without_waiting(tmp_path: Path) -> None:
    # Prepare: a named pipe nobody writes to (a plain open would block forever)
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)

    # Execute
    with pytest.raises(CorpusError) as caught:
        load_jsonl(str(fifo))

    # Assert
    assert str(caught.value) == f"{fifo}: is a FIFO (named pipe), not a regular file"


@pytest.mark.parametrize(
    ("path", "kind"), [("/dev/zero", "a character device"), ("/", "a directory")]
)
def test_load_jsonl_refuses_devices_and_directories(path: str, kind: str) -> None:
    # Execute
    with pytest.raises(CorpusError) as caught:
        load_jsonl(path)

    # Assert
    assert str(caught.value) == f"{path}: is {kind}, not a regular file"


def test_load_jsonl_bounds_file_size_and_line_length(
    write_jsonl: WriteJsonl,
) -> None:
    # Prepare: 40 bytes a line
    path = write_jsonl(GOOD + '{"user": "bob", "text": "' + "x" * 100 + '"}\n')

    # Execute
    with pytest.raises(CorpusError) as size:
        load_jsonl(path, max_bytes=100)
    with pytest.raises(CorpusError) as line:
        load_jsonl(path, max_line_bytes=50)
    whole = load_jsonl(path, max_bytes=200, max_line_bytes=150)

    # Assert
    assert str(size.value) == (
        f"{path}: is larger than 100 bytes, the most a corpus may hold"
    )
    assert str(line.value) == (
        f"{path}, line 2: is longer than 50 bytes (127); one message a line is expected"
    )
    assert len(whole.messages) == 2


def test_load_jsonl_accepts_a_utf8_bom(write_jsonl: WriteJsonl) -> None:
    # Prepare: what Windows Notepad writes
    path = write_jsonl(b"\xef\xbb\xbf" + GOOD.encode())

    # Execute
    corpus = load_jsonl(path)

    # Assert
    assert [(m.user, m.text) for m in corpus.messages] == [("ann", "hello there")]


def test_cap_history_cuts_inside_one_long_message() -> None:
    # Prepare: a first message of 10,000 words, spacing kept up to the cut
    long = " ".join(f"w{i}" for i in range(10_000))

    # Execute
    capped = cap_history([long, "later message"], 4000)
    spaced = cap_history(["a  b\tc d"], 3)

    # Assert
    assert len(capped) == 1 and len(capped[0].split()) == 4000
    assert capped[0].endswith("w3999")
    assert spaced == ["a  b\tc"]


def test_split_corpus_word_cap_holds_for_a_single_huge_line() -> None:
    # Prepare: one user whose only message is 50,000 words
    messages = [
        Message("big", "word " * 50_000, 0.0),
        Message("small", "hi " * 40, 0.0),
    ]

    # Execute
    splits = split_corpus(messages, CorpusConfig(heldout_fraction=0.0))

    # Assert
    assert splits.words_per_user == {"big": 4000, "small": 40}


def test_corpus_fingerprint_and_absolute_path_in_the_run(
    tmp_path: Path, tiny_corpus: str, tokenizer: WordTokenizer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # Prepare: a run created from a relative corpus path
    corpus = tmp_path / "copy.jsonl"
    corpus.write_bytes(Path(tiny_corpus).read_bytes())
    monkeypatch.chdir(tmp_path)
    run = RunDir(tmp_path / "run")
    run.create({"kind": "train", "corpus": {"source": "copy.jsonl"}}, tokenizer)
    monkeypatch.chdir("/")

    # Execute
    stored = run.read_config()
    found = run.corpus_config()
    with corpus.open("a") as handle:
        handle.write('{"user": "eve", "text": "one more", "timestamp": 9}\n')
    with pytest.raises(RunDirError) as changed:
        run.corpus_config()

    # Assert
    assert stored["corpus"]["source"] == str(corpus) == found.source
    assert stored["corpus_fingerprint"].startswith("sha256:")
    assert "the corpus changed since the run" in str(changed.value)
    assert corpus_fingerprint("chitchat") == "chitchat-dataset==0.9.0"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--out", ""], "--out must name a directory"),
        (["--hidden-dim", "0"], "--hidden-dim must lie in [1, 4096], not 0"),
        (["--embed-dim", "-5"], "--embed-dim must lie in [1, 4096], not -5"),
        (["--threads", "100000"], "--threads must lie in [1, 256], not 100000"),
        (["--client-lr", "inf"], "client_lr must lie in (0, 100]"),
        (["--client-lr", "1e30"], "client_lr must lie in (0, 100]"),
        (["--client-lr", "nan"], "client_lr must lie in (0, 100]"),
        (["--prox-mu", "inf"], "prox_mu must be >= 0 and finite"),
        (["--prox-mu", "nan"], "prox_mu must be >= 0 and finite"),
        (["--server-lr", "1e30"], "server_lr must lie in (0, 100]"),
        (["--clients-per-round", "7"], "more than the fleet's 6 phones"),
        (["--faulty-fraction", "1.5"], "faulty_fraction must lie in [0, 1]"),
        (["--fault-scale", "0"], "fault_scale must be positive and finite"),
        (["--fault-kind", "melted"], "invalid choice: 'melted'"),
        (["--aggregator", "mode"], "invalid choice: 'mode'"),
        (["--train-softmax", "tree"], "invalid choice: 'tree'"),
        (["--softmax-samples", "0"], "softmax_samples must be >= 1"),
        (["--softmax-full-steps", "-1"], "softmax_full_steps must be >= 0"),
        (["--corpus", "/dev/zero"], "is a character device, not a regular file"),
        # Degenerate DP settings name the option and its range.
        (["--dp-clip", "0.5", "--noise-multiplier", "1e300"],
         "--noise-multiplier 1e+300: must lie in [0.1, 100]"),
        (["--dp-clip", "0.5", "--noise-multiplier", "0"],
         "--noise-multiplier 0: must lie in [0.1, 100]"),
        (["--dp-clip", "0.5", "--noise-multiplier", "nan"],
         "--noise-multiplier nan: must lie in [0.1, 100]"),
        (["--dp-clip", "0.5", "--target-epsilon", "1e300"],
         "--target-epsilon 1e+300: must lie in [0.05, 100]"),
        (["--dp-clip", "0.5", "--target-epsilon", "1e-300"],
         "--target-epsilon 1e-300: must lie in [0.05, 100]"),
        (["--dp-clip", "1e300"], "--dp-clip 1e+300: must lie in [0.0001, 100]"),
        (["--dp-clip", "0.5", "--simulated-population", "1" + "0" * 21,
          "--noise-cohort-size", "100"],
         "--simulated-population 1e+21: must lie in [1, 1,000,000,000]"),
        (["--replayable-noise"], "--replayable-noise: differential privacy needs"),
    ],
)  # fmt: skip
def test_cli_simulate_bad_values_are_one_line_errors(
    tmp_path: Path,
    tiny_corpus: str,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
) -> None:
    # Prepare
    out = tmp_path / "run"
    argv = ["simulate", "--out", str(out), "--corpus", tiny_corpus, "--rounds", "1"]
    argv += ["--clients-per-round", "2", "--hidden-dim", "8", "--embed-dim", "8"]

    # Execute
    status, err = run_cli([*argv, *options], capsys)

    # Assert: nothing is left behind either
    assert status == 2 and message in err and "Traceback" not in err
    # One line, or argparse's usage and then its one line
    assert err.strip().splitlines()[-1].startswith("fedtype simulate: error: ")
    assert len(err.strip().splitlines()) == 1 or "invalid choice" in message
    assert not out.exists()


@pytest.mark.parametrize("where", ["file", "under-file", "proc"])
def test_cli_out_that_cannot_hold_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    # Prepare
    (tmp_path / "file").write_text("x")
    out = {
        "file": tmp_path / "file",
        "under-file": tmp_path / "file" / "run",
        "proc": Path("/proc/fedtype-run"),
    }[where]

    # Execute
    results = [
        run_cli([command, "--out", str(out), "--max-steps", "1"], capsys)
        if command == "train"
        else run_cli([command, "--out", str(out)], capsys)
        for command in ("simulate", "train", "local-only")
    ]

    # Assert
    for status, err in results:
        assert status == 2 and "Traceback" not in err and "--out" in err


def test_cli_evaluate_and_suggest_refuse_bad_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    limit = run_cli(["evaluate", "--run", str(tmp_path), "--limit", "-5"], capsys)
    k = run_cli(["suggest", "--run", str(tmp_path), "-k", "-1", "hi "], capsys)

    # Assert
    assert limit == (2, "fedtype evaluate: error: --limit must be >= 0 (0 for all), "
                     "not -5\n")  # fmt: skip
    assert k == (2, "fedtype suggest: error: -k must lie in [1, 100], not -1\n")


def test_cli_evaluate_on_a_local_only_run_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    (tmp_path / "config.json").write_text('{"kind": "local-only"}')

    # Execute
    status, err = run_cli(["suggest", "--run", str(tmp_path), "hi "], capsys)

    # Assert
    assert status == 2
    assert "a local-only run trains one model per user and keeps none" in err


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    # Execute
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])

    # Assert
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("fedtype 0.")


def test_compare_caption_of_a_max_steps_run() -> None:
    # Prepare
    config = {"kind": "central", "workers": 1, "training": {"epochs": 1,
              "max_steps": 100, "optimizer": "adam", "lr": 0.002}}  # fmt: skip

    # Execute
    caption = setting(config, {"step": 100, "epoch": 0.125})
    whole = setting({"kind": "train", "training": {"epochs": 2}}, {"step": 5})

    # Assert
    assert "100 steps (--max-steps 100, 0.12 epochs) on the pooled data" in caption
    assert "epoch(s)" not in caption and "2 epoch(s)" in whole


def test_compare_labels_runs_of_the_same_name_apart(tmp_path: Path) -> None:
    # Prepare
    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run"

    # Execute
    labels = run_labels([str(a), str(b), str(tmp_path / "c"), str(a)])

    # Assert
    assert labels == ["a/run", "b/run", "c", "a/run (2)"]


def test_compare_warns_when_corpora_differ(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: two runs of one name, cut from different corpora
    scores = {"top1": 0.1, "top3": 0.2, "perplexity": 100.0, "keystroke_savings": 0.3}
    line = {"tokens_total": 1, "wall_seconds_total": 1.0, "heldout": scores}
    paths = []
    for parent, source in (("x", "chitchat"), ("y", "/data/mine.jsonl")):
        path = tmp_path / parent / "run"
        path.mkdir(parents=True)
        config = {"kind": "train", "corpus": {"source": source, "seed": 0}}
        (path / "config.json").write_text(json.dumps(config))
        (path / "metrics.jsonl").write_text(json.dumps(line) + "\n")
        paths.append(str(path))

    # Execute
    summaries = load_runs(paths)
    status, err = run_cli(["compare", *paths], capsys)

    # Assert
    assert [s.label for s in summaries] == ["x/run", "y/run"]
    assert status == 0
    warning = corpus_warning(summaries)
    assert warning is not None and "x/run: chitchat (seed 0)" in warning
    assert "different corpora" in err
    assert corpus_warning(summaries[:1]) is None


def test_fleet_screen_hint_says_how_many_are_listed() -> None:
    # Execute / Assert: every phone is listed; a search says how many match
    keys = "↑↓ choose, / search by id, Esc back"
    assert list_hint(967) == f"967 phones: {keys}"
    assert list_hint(967, 3) == f"3 of 967 phones match: {keys}"


def test_fleet_screen_search_matches_any_part_of_the_id() -> None:
    # Execute / Assert
    assert matches("a1b2c3d4e5", "C3D")
    assert not matches("a1b2c3d4e5", "zz")
    assert matches("a1b2c3d4e5", "  ")


def test_load_corpus_of_a_missing_file_names_it(tmp_path: Path) -> None:
    # Execute
    with pytest.raises(CorpusError) as caught:
        load_corpus(CorpusConfig(source=str(tmp_path / "none.jsonl")))

    # Assert
    assert "none.jsonl: cannot be read (No such file or directory)" in str(caught.value)
