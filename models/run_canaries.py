"""A run's canaries: made from its seed, planted in train text, saved, measured.

`--canaries K` (simulate and central) plants the Secret Sharer's canaries
(`corpora.canaries`, Carlini et al. 2019, arXiv 1802.08232) into the train text of
the run's training users when the corpus is loaded, and measures their exposure
(`models.exposure`) at every evaluation. The canaries are a pure function of
(seed, K, the users dealt, the vocabulary), so every rank and every resume makes
the same ones and plants them at the same places; the file

    RUN_DIR/canaries.json   the canaries planted and the controls (the truth)

records them for readers and the measurement, written atomically once and
checked on every later load: a resume that would plant other canaries (another
code version, another corpus cut) is refused rather than measured wrongly. The
aggregation never reads it; the planted text reaches the model only through the
phones' (or the pooled set's) train text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corpora.canaries import (
    Canary,
    CanaryConfig,
    make_canaries,
    plant,
    vocabulary_words,
)
from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer
from models.exposure import exposure_summary, exposures
from models.model import NextWordModel
from models.rundir import RunDir, RunDirError, write_json_atomic

CANARIES_FILE = "canaries.json"
# Random phrases each canary is ranked among at an evaluation: the rank exposure
# tops out at log2(2001) = 10.97 bits, and scoring 2,000 five-word phrases costs
# about a second of one CPU core with the default model (the extrapolated
# exposure reads beyond the ceiling).
CANDIDATES = 2000


@dataclass(frozen=True)
class RunCanaries:
    """The canaries of one run and how their exposure is measured."""

    canaries: tuple[Canary, ...]  # planted ones first, then the controls
    seed: int  # the run's seed: canaries, planting and candidates derive from it
    candidates: int = CANDIDATES

    @classmethod
    def make(
        cls,
        *,
        count: int,
        seed: int,
        users: Sequence[str],
        tokenizer: WordTokenizer,
        candidates: int = CANDIDATES,
    ) -> RunCanaries:
        """`count` canaries per repeat value (other settings `CanaryConfig`'s).

        Raises:
            CanaryConfigError: a count out of range, or no users to plant in.
        """
        config = CanaryConfig(count=count)
        made = make_canaries(
            vocabulary_words(tokenizer), config, seed=seed, users=users
        )
        return cls(tuple(made), seed, candidates)

    @property
    def planted(self) -> list[Canary]:
        """The canaries in some train text."""
        return [c for c in self.canaries if c.planted]

    @property
    def controls(self) -> list[Canary]:
        """The canaries made the same way and never planted."""
        return [c for c in self.canaries if not c.planted]

    def plant(self, splits: CorpusSplits) -> CorpusSplits:
        """`splits` with the canaries in their users' train text (a new object)."""
        return plant(splits, self.planted, seed=self.seed)

    def measure(self, model: NextWordModel, tokenizer: WordTokenizer) -> dict[str, Any]:
        """The `exposure` field of a metrics line (see `exposure_summary`)."""
        results = exposures(
            model,
            self.canaries,
            tokenizer=tokenizer,
            vocabulary_words=vocabulary_words(tokenizer),
            candidates=self.candidates,
            seed=self.seed,
        )
        return exposure_summary(results)

    def to_dict(self) -> dict[str, Any]:
        """canaries.json's contents."""
        return {
            "seed": self.seed,
            "candidates": self.candidates,
            "canaries": [c.to_dict() for c in self.planted],
            "controls": [c.text for c in self.controls],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunCanaries:
        """What `to_dict` wrote (KeyError, TypeError or ValueError if not that)."""
        planted = [Canary.from_dict(c) for c in data["canaries"]]
        controls = [Canary(str(text), 0, ()) for text in data["controls"]]
        return cls(
            tuple(planted + controls), int(data["seed"]), int(data["candidates"])
        )


def canaries_path(run: RunDir) -> Path:
    """Where a run keeps its canaries."""
    return run.path / CANARIES_FILE


def read_canaries(run: RunDir) -> RunCanaries | None:
    """The run's canaries.json, or None when it has none."""
    path = canaries_path(run)
    if not path.exists():
        return None
    try:
        return RunCanaries.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunDirError(f"{path}: unreadable ({error})") from None


def keep_canaries(run: RunDir, canaries: RunCanaries, *, write: bool) -> None:
    """Check `canaries` against the run's canaries.json, or write it if missing.

    Args:
        write: whether this process may write the file (rank 0); the others
            only check it when it is there.

    Raises:
        RunDirError: the file records other canaries than these.
    """
    saved = read_canaries(run)
    if saved is None:
        if write:
            write_json_atomic(canaries_path(run), canaries.to_dict())
        return
    if saved != canaries:
        raise RunDirError(
            f"{canaries_path(run)}: records other canaries than the run's seed "
            "and corpus make now; the phones' text would not be the text the run "
            "trained on (start a new run)"
        )


def run_canaries(
    run: RunDir,
    *,
    count: int,
    seed: int,
    splits: CorpusSplits,
    tokenizer: WordTokenizer,
    write: bool,
) -> RunCanaries | None:
    """The run's canaries (None when `count` is 0), kept in its canaries.json.

    Every rank and every resume calls this with the corpus as loaded, before
    planting; see `keep_canaries` for what is checked.
    """
    if count == 0:
        return None
    canaries = RunCanaries.make(
        count=count,
        seed=seed,
        users=sorted(splits.training_users),
        tokenizer=tokenizer,
    )
    keep_canaries(run, canaries, write=write)
    return canaries
