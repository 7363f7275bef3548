"""`fedtype --help`, a subcommand's --help and an argument error load no torch.

Each runs `python -m cli.main` in a fresh interpreter and reads back which heavy
packages it imported: the parser is built from config dataclasses whose modules
import neither torch, Textual, dp_accounting nor the corpus, and every command
imports those in its run function. `benchmarks/cli_startup.py` times them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "textual", "dp_accounting", "chitchat_dataset", "matplotlib")
# Runs the CLI with `argv`, then prints (on the last line of stdout) its exit
# status and which of HEAVY were imported.
PROBE = """
import json, runpy, sys
watched = json.loads(sys.argv[2])
sys.argv = ["fedtype", *json.loads(sys.argv[1])]
try:
    runpy.run_module("cli.main", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as exit:
    code = exit.code
heavy = [name for name in watched if name in sys.modules]
print("\\n" + json.dumps({"code": code, "heavy": heavy}))
"""


def _run(argv: list[str]) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["--version"], 0),
        (["simulate", "--help"], 0),
        (["demo", "--help"], 0),
        (["simulate", "--out", "x", "--rounds", "two"], 2),
        (["local-only", "--no-such-option"], 2),
    ],
)
def test_cli_startup_loads_no_torch(argv: list[str], code: int) -> None:
    # Prepare: the command line. Execute
    result = _run(argv)

    # Assert
    assert result == {"code": code, "heavy": []}


@pytest.mark.parametrize("command", ["simulate", "train", "central", "local-only"])
def test_training_commands_share_the_corpus_options(command: str) -> None:
    # Prepare
    from cli.main import build_parser
    from cli.options import corpus_config

    argv = [command, "--out", "x", "--max-users", "7", "--min-words-per-user", "50"]

    # Execute
    args = build_parser().parse_args(argv)

    # Assert
    corpus = corpus_config(args)
    assert (corpus.max_users, corpus.min_words_per_user) == (7, 50)


def test_the_demo_and_a_plain_round_load_no_scipy() -> None:
    # Prepare: what the demo's app and its training process import (scipy and
    # dp_accounting add about 60 MB to each; only DP runs and canaries use them)
    probe = (
        "import sys, json\n"
        "import tui.app, tui.child_fleet, coordinator.run.simulation\n"
        "print(json.dumps([m for m in ('scipy', 'dp_accounting') if m in sys.modules]))"
    )

    # Execute
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Assert
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == []
