"""A central baseline paced by another run's training tokens (the demo's live one).

The demo compares the fleet with central training on the pooled text of the same
users at an equal number of training tokens: after each federated round the
central run trains (`CentralTrainer.train_until`, the one central training loop)
until its cumulative targets reach the fleet's, then evaluates on the same
held-out sample and saves a metrics line tagged with the fleet's `server_round`.

    FLEET_RUN/central/     a central run directory ("kind": "central")
      unigram.json         the unigram baseline on the same held-out sample

It lives inside the fleet's run, so it resumes with it; a kill between the
fleet's round and the central catch-up only delays that catch-up to the next one.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from central.config import CentralConfig
from central.runspec import create_run, read_spec
from central.trainer import CentralTrainer, drop_unsaved_metrics
from corpora.corpus import CorpusConfig, CorpusSplits
from corpora.samples import heldout_sample
from corpora.tokenizer import WordTokenizer
from models.baseline import UnigramModel
from models.config import ModelConfig
from models.distributed import WorkerContext
from models.metrics import evaluate
from models.rundir import RunDir, RunKind, write_json_atomic

# The paced run's kind-specific tag in config.json.
PACED_BY = "federated-tokens"
UNIGRAM_FILE = "unigram.json"


def create_paced_run(
    path: str | Path,
    *,
    corpus: CorpusConfig,
    model: ModelConfig,
    training: CentralConfig,
    tokenizer: WordTokenizer,
    splits: CorpusSplits,
) -> RunDir:
    """A new paced central run in `path`, with the unigram baseline's metrics.

    Args:
        tokenizer: The paced run's tokenizer (the fleet's own).
        splits: The corpus loaded with `corpus`: its held-out sample is measured.
    """
    # What pooling costs: the users' train text, sent once to one server.
    pooled = {
        "users": sum(1 for h in splits.training_users.values() if h.train),
        "text_bytes": sum(len(t.encode("utf-8")) for t in splits.train_texts()),
    }
    run = create_run(
        path,
        kind=RunKind.CENTRAL,
        corpus=corpus,
        model=model,
        training=training,
        extra={"paced_by": PACED_BY, "pooled": pooled},
        tokenizer=tokenizer,
    )
    write_unigram(
        run.path,
        splits=splits,
        tokenizer=tokenizer,
        max_len=model.max_len,
        heldout_messages=training.heldout_messages,
        keystroke_texts=training.keystroke_texts,
    )
    return run


def write_unigram(
    path: str | Path,
    *,
    splits: CorpusSplits,
    tokenizer: WordTokenizer,
    max_len: int,
    heldout_messages: int,
    keystroke_texts: int,
) -> None:
    """The unigram baseline's held-out metrics, in PATH/unigram.json: the
    training users' word frequencies, measured on the held-out sample."""
    unigram = UnigramModel.fit(tokenizer, splits.train_texts())
    metrics = evaluate(
        unigram,
        tokenizer,
        heldout_sample(splits, heldout_messages),
        max_len=max_len,
        keystroke_texts=keystroke_texts,
    )
    write_json_atomic(Path(path) / UNIGRAM_FILE, {"heldout": metrics.as_dict()})


def read_unigram(path: str | Path) -> dict[str, Any] | None:
    """The unigram baseline's held-out metrics a paced run saved, or None."""
    try:
        payload = json.loads((Path(path) / UNIGRAM_FILE).read_text(encoding="utf-8"))
        heldout = payload["heldout"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return heldout if isinstance(heldout, dict) else None


def _single_worker() -> WorkerContext:
    # The demo's child trains on its CPU thread, whatever the machine has.
    return WorkerContext(0, 1, 0, torch.device("cpu"))


class PacedCentral:
    """A central run that trains up to a given token count when asked."""

    def __init__(self, path: str | Path, *, splits: CorpusSplits | None = None):
        """Resume the paced run in `path` from its last save point.

        Raises:
            RunDirError: `path` holds no central run one can resume.
        """
        self.run = RunDir(path)
        spec = read_spec(self.run)
        drop_unsaved_metrics(self.run, spec.progress)
        self.trainer = CentralTrainer(
            run=self.run, spec=spec, context=_single_worker(), splits=splits
        )

    @property
    def tokens_total(self) -> int:
        """Targets trained on so far."""
        return self.trainer.progress.tokens_total

    def catch_up(self, tokens_total: int, *, server_round: int) -> dict[str, Any]:
        """Train to `tokens_total` targets, evaluate and save; the metrics line.

        The line carries `server_round`, the fleet round it is paced by. Already
        there, it trains nothing and re-evaluates nothing: the last line is kept.
        """
        records = self.run.read_metrics()
        if records and self.tokens_total >= tokens_total:
            return records[-1]
        self.trainer.train_until(tokens_total, extra={"server_round": server_round})
        return self.run.read_metrics()[-1]

    def model(self) -> nn.Module:
        """A copy of the current model, in eval mode."""
        return copy.deepcopy(self.trainer.model).eval()
