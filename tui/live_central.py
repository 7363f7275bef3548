"""The demo's live central baseline: a paced central run inside the fleet's run.

`central.paced` trains it; this module decides where it lives (RUN/central),
derives its settings from the fleet's so both are measured on the same held-out
sample, and reads back what the parent process shows: its metrics lines, its
latest model and the unigram baseline. The child process trains it right after
each round (`tui.sim_fleet.SimulationFleet.run_round`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from central.config import CentralConfig
from central.paced import PacedCentral, create_paced_run, read_unigram, write_unigram
from corpora.corpus import CorpusConfig, CorpusSplits, load_corpus
from models.config import ModelConfig
from models.rundir import RunDir, RunDirError

# The live baseline's directory inside the fleet's run.
CENTRAL_DIR = "central"
# Epochs the paced run may take: it stops only when the fleet stops.
PACED_EPOCHS = 1_000_000


def central_path(run_path: str | Path) -> Path:
    """Where the live central baseline of the fleet run in `run_path` lives."""
    return Path(run_path) / CENTRAL_DIR


def paced_config(federation: dict[str, Any]) -> CentralConfig:
    """The live baseline's settings: the fleet's seed and held-out sample."""
    return CentralConfig(
        seed=int(federation.get("seed", 0)),
        epochs=PACED_EPOCHS,
        # Only the fleet's rounds set save points (`train_until`).
        eval_every=0,
        heldout_messages=int(federation["heldout_messages"]),
        # The dashboard compares held-out users only; measuring future text too
        # would double the catch-up's evaluation time after every round.
        future_messages=0,
        future_messages_per_user=int(federation["future_messages_per_phone"]),
        keystroke_texts=int(federation["keystroke_texts"]),
    )


def start_live_central(run_path: str | Path, splits: CorpusSplits) -> RunDir:
    """Create the live baseline of the fleet run in `run_path` (at step 0).

    Args:
        splits: The corpus the fleet was created with.
    """
    fleet = RunDir(run_path)
    config = fleet.read_config()
    return create_paced_run(
        central_path(run_path),
        corpus=CorpusConfig(**config["corpus"]),
        model=ModelConfig(**config["model"]),
        training=paced_config(config["federation"]),
        tokenizer=fleet.load_tokenizer(),
        splits=splits,
    )


def open_live_central(
    run_path: str | Path, splits: CorpusSplits | None = None
) -> PacedCentral | None:
    """The live baseline of the fleet run in `run_path`; None if it has none."""
    path = central_path(run_path)
    if not (path / "config.json").exists():
        return None
    return PacedCentral(path, splits=splits)


@dataclass(frozen=True)
class CentralView:
    """What the dashboard shows of the live baseline, read from disk."""

    records: list[dict[str, Any]]  # its metrics lines, oldest first
    model: nn.Module | None  # its latest model (None before its first save)
    unigram: dict[str, Any] | None  # the unigram baseline's held-out metrics
    users: int  # users whose train text was pooled
    text_bytes: int  # bytes of that text (one pass)


def unigram_view(run_path: str | Path) -> CentralView | None:
    """A run without a live baseline: the unigram level alone, once the child
    wrote it (`write_fleet_unigram`), else None."""
    unigram = read_unigram(run_path)
    if unigram is None:
        return None
    return CentralView(records=[], model=None, unigram=unigram, users=0, text_bytes=0)


def write_fleet_unigram(run_path: str | Path, splits: CorpusSplits | None) -> None:
    """RUN/unigram.json for a run without a live baseline (kept once written),
    on the fleet's held-out sample, as the live baseline measures it; `splits`
    None loads the run's corpus, only when the file is not there yet."""
    run = RunDir(run_path)
    if read_unigram(run.path) is not None:
        return
    if splits is None:
        splits = load_corpus(run.corpus_config())
    config = run.read_config()
    federation, model = config["federation"], ModelConfig(**config["model"])
    write_unigram(
        run.path,
        splits=splits,
        tokenizer=run.load_tokenizer(),
        max_len=model.max_len,
        heldout_messages=int(federation["heldout_messages"]),
        keystroke_texts=int(federation["keystroke_texts"]),
    )


def read_central(run_path: str | Path) -> CentralView | None:
    """The live baseline's lines, model and unigram level; None without one.

    Reads files: call it off the UI thread.
    """
    path = central_path(run_path)
    if not (path / "config.json").exists():
        return None
    run = RunDir(path)
    records = [r for r in run.read_metrics() if "server_round" in r]
    model: nn.Module | None = None
    if run.checkpoint_steps():
        try:
            model = run.load_model()[0].eval()
        except RunDirError:  # mid-prune or damaged: keep showing the last one
            model = None
    pooled = run.read_config().get("pooled") or {}
    return CentralView(
        records=records,
        model=model,
        unigram=read_unigram(path),
        users=int(pooled.get("users", 0)),
        text_bytes=int(pooled.get("text_bytes", 0)),
    )
