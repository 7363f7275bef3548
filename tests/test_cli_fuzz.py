"""Every subcommand fed random option values: exit status 0 or 2, no traceback.

Each example draws one to three options of a subcommand and a value for each from
a pool of hostile values (negative, zero, huge, NaN, Inf, not a number, empty,
devices, missing paths) and cheap valid ones, appended to a tiny base command
(a six-user corpus, an 8-wide model, one round or step), so that the examples
that succeed finish in about a second. `demo` opens a terminal app when its
options are valid, so only invalid values are drawn for it.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from helpers import run_cli
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cli.main import main
from coordinator.round.robust_aggregation import AGGREGATORS
from device_sim.config import FAULT_KINDS

INTS = ["-1", "0", "x", "1.5", "", "99999999999999999999"]
FLOATS = ["nan", "inf", "-inf", "-1", "0", "1e30", "x", ""]
FRACTIONS = ["-0.1", "0", "0.5", "1", "1.5", "nan"]
# (option, values) per subcommand; a value of None means "the flag alone".
SIMULATE = {
    "--rounds": ["0", "-1", "x", "1"],
    "--clients-per-round": ["0", "-3", "2", "1000", "x"],
    "--strategy": ["fedavg", "fedadam", "nope"],
    "--server-lr": [*FLOATS, "0.5"],
    "--local-epochs": ["0", "-1", "2", "99999999999"],
    "--max-local-steps": ["0", "-2", "1", "99999999999"],
    "--client-lr": [*FLOATS, "0.5"],
    "--prox-mu": [*FLOATS, "0.1"],
    "--eval-every": ["-1", "0", "1", "x"],
    "--seed": ["-5", "0", "12345678901234567890", "x"],
    "--max-users": ["0", "-1", "2", "100000"],
    "--shard-messages": ["0", "-1", "1", "x"],
    "--dropout-rate": FRACTIONS,
    "--hidden-dim": ["0", "-5", "8", "100000"],
    "--embed-dim": ["0", "-5", "8", "100000"],
    "--threads": ["0", "1", "100000"],
    "--workers": ["0", "-1", "1", "100000"],
    "--precision": ["fp32", "bf16", "fp8"],
    "--faulty-fraction": FRACTIONS,
    "--fault-kind": [*FAULT_KINDS, "melted"],
    "--fault-scale": [*FLOATS, "5"],
    "--aggregator": [*AGGREGATORS, "mode"],
    "--corpus": ["/dev/zero", "/nonexistent.jsonl", "", "/"],
    "--max-words-per-user": ["0", "-1", "5", "x"],
    "--min-words-per-user": ["-1", "0", "100000"],
    "--heldout-fraction": FRACTIONS,
    "--future-fraction": FRACTIONS,
    "--always-eligible": [None],
}
TRAIN = {
    "--epochs": ["0", "-1", "1", "x"],
    "--max-steps": ["0", "-1", "1", "x"],
    "--seed": ["-5", "0", "x"],
    "--batch-size": ["0", "-1", "4", "100000"],
    "--lr": [*FLOATS, "0.01"],
    "--eval-every": ["-1", "0", "1"],
    "--shard-messages": ["0", "-1", "3"],
    "--hidden-dim": ["0", "-5", "8", "100000"],
    "--embed-dim": ["0", "8"],
    "--optimizer": ["adam", "sgd", "lbfgs"],
    "--threads": ["0", "1", "100000"],
    "--corpus": ["/dev/zero", "/nonexistent.jsonl", ""],
    "--heldout-fraction": FRACTIONS,
}
CENTRAL = {
    **{k: v for k, v in TRAIN.items() if k != "--threads"},
    "--workers": ["0", "-1", "1", "100000"],
    "--threads": ["0", "1", "100000"],
    "--timeout": [*FLOATS, "60"],
}
LOCAL_ONLY = {
    "--seed": ["-5", "0", "x"],
    "--local-epochs": ["0", "-1", "1"],
    "--batch-size": ["0", "-1", "4"],
    "--lr": [*FLOATS, "0.1"],
    "--heldout-models": ["0", "-1", "1", "100000"],
    "--heldout-messages": ["0", "-1", "5"],
    "--all-users": [None],
    "--threads": ["0", "1", "100000"],
    "--corpus": ["/dev/zero", "/nonexistent.jsonl", ""],
    "--min-words-per-user": ["-1", "100000"],
}
CORPUS_STATS = {
    "--seed": ["-5", "0", "x"],
    "--vocab": ["public", "private", "secret"],
    "--vocab-size": ["0", "-1", "5", "x", "20000"],
    "--corpus": ["/dev/zero", "/nonexistent.jsonl", "", "/", "chitchat-typo"],
    "--max-words-per-user": ["0", "-1", "5"],
    "--min-words-per-user": ["-1", "0", "100000"],
    "--heldout-fraction": FRACTIONS,
    "--future-fraction": FRACTIONS,
}
EVALUATE = {"--step": ["-1", "0", "1", "999", "x"], "--limit": ["-5", "0", "3", "x"]}
SUGGEST = {
    "-k": ["-1", "0", "1", "1000", "x"],
    "--step": ["-1", "0", "1", "999"],
    "--run": ["/nonexistent", "/dev/null", ""],
}
COMPARE = {"--out": ["", "/dev/null/x", "/proc/x"]}
DEMO = {"--clients-per-round": ["0", "-1", "x"], "--rounds": ["0", "-3", "x"]}

_fresh = itertools.count()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A six-user corpus, a finished one-round run on it, and a scratch folder."""
    folder = tmp_path_factory.mktemp("fuzz")
    corpus = folder / "tiny.jsonl"
    texts = [
        "see you at six then",
        "ok talk to you later tonight",
        "how are you",
        "we can meet at the station tomorrow",
        "thanks that sounds good",
    ]
    rows = [
        {"user": f"user{u}", "text": f"{texts[(u + m) % 5]} {m}", "timestamp": m}
        for u in range(6)
        for m in range(10)
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = folder / "run"
    argv = ["simulate", "--out", str(run), "--corpus", str(corpus), "--rounds", "1",
            "--clients-per-round", "2", "--hidden-dim", "8", "--embed-dim", "8",
            "--eval-every", "1", "--always-eligible", "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    return {"corpus": str(corpus), "run": str(run), "folder": str(folder)}


def fresh(world: dict[str, str]) -> str:
    return str(Path(world["folder"]) / f"out{next(_fresh)}")


def base(command: str, world: dict[str, str]) -> list[str]:
    """The tiny, valid command that the drawn options are appended to."""
    corpus, run = world["corpus"], world["run"]
    small = ["--hidden-dim", "8", "--embed-dim", "8"]
    commands = {
        "simulate": ["simulate", "--out", fresh(world), "--corpus", corpus,
                     "--rounds", "1", "--clients-per-round", "2", "--eval-every",
                     "0", "--max-users", "4", "--threads", "1", *small],
        "train": ["train", "--out", fresh(world), "--corpus", corpus,
                  "--max-steps", "1", "--threads", "1", *small],
        "central": ["central", "--workers", "1", "--out", fresh(world), "--corpus",
                    corpus, "--max-steps", "1", "--threads", "1", *small],
        "local-only": ["local-only", "--out", fresh(world), "--corpus", corpus,
                       "--heldout-models", "1", "--heldout-messages", "5"],
        "corpus stats": ["corpus", "stats", "--corpus", corpus],
        "evaluate": ["evaluate", "--run", run, "--limit", "3"],
        "suggest": ["suggest", "--run", run, "how are "],
        "compare": ["compare", run],
        "demo": ["demo", "--run", fresh(world)],
    }  # fmt: skip
    return commands[command]


def draws(options: dict[str, list[str | None]]) -> st.SearchStrategy[list[str]]:
    """One to three options of `options`, each with a drawn value."""
    names = st.lists(st.sampled_from(sorted(options)), min_size=1, max_size=3,
                     unique=True)  # fmt: skip

    def with_values(chosen: list[str]) -> st.SearchStrategy[list[str]]:
        parts = [
            st.sampled_from(options[name]).map(
                lambda value, name=name: [name] if value is None else [name, value]
            )
            for name in chosen
        ]
        return st.tuples(*parts).map(lambda pairs: [x for pair in pairs for x in pair])

    return names.flatmap(with_values)


def fuzz(max_examples: int) -> settings:
    """Few examples, reproducible, without a per-example deadline."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
        ],
    )


def check(command: str, extra: list[str], world: dict[str, str], capsys) -> None:
    # Execute
    status, err = run_cli([*base(command, world), *extra], capsys)

    # Assert
    event(f"exit status {status}")
    assert status in (0, 2), (extra, status, err)
    assert "Traceback" not in err, (extra, err)
    if status == 2:
        assert err.strip().splitlines()[-1].startswith("fedtype "), (extra, err)


@pytest.mark.parametrize(
    ("command", "options", "examples"),
    [
        pytest.param("simulate", SIMULATE, 80, id="simulate"),
        pytest.param("train", TRAIN, 30, id="train"),
        pytest.param("central", CENTRAL, 20, id="central"),
        pytest.param("local-only", LOCAL_ONLY, 10, id="local-only"),
        pytest.param("corpus stats", CORPUS_STATS, 30, id="corpus-stats"),
    ],
)
def test_fuzz_command(
    command: str,
    options: dict[str, list[str | None]],
    examples: int,
    world: dict[str, str],
    capsys,
) -> None:
    @fuzz(examples)
    @given(extra=draws(options))
    def fuzz_one(extra: list[str]) -> None:
        check(command, extra, world, capsys)

    fuzz_one()


@fuzz(40)
@given(
    command=st.sampled_from(["evaluate", "suggest", "compare", "demo"]),
    data=st.data(),
)
def test_fuzz_readers_and_demo(
    command: str, data: st.DataObject, world: dict[str, str], capsys
) -> None:
    options = {"evaluate": EVALUATE, "suggest": SUGGEST, "compare": COMPARE,
               "demo": DEMO}[command]  # fmt: skip
    check(command, data.draw(draws(options)), world, capsys)
