"""The paced central run: trained to a token count, across epochs and restarts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from central.config import CentralConfig
from central.paced import PacedCentral, create_paced_run, read_unigram
from corpora.corpus import CorpusConfig, CorpusSplits
from corpora.tokenizer import WordTokenizer
from models.config import ModelConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PACED = CentralConfig(
    epochs=1_000, eval_every=0, heldout_messages=20, future_messages=0,
    keystroke_texts=4,
)  # fmt: skip


@pytest.fixture
def paced_run(
    tmp_path: Path,
    small_splits: CorpusSplits,
    small_config: CorpusConfig,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
) -> Callable[[str], Path]:
    """A function creating a fresh paced run named `name` on the small slice."""

    def create(name: str) -> Path:
        path = tmp_path / name
        create_paced_run(
            path,
            corpus=small_config,
            model=tiny_model_config,
            training=PACED,
            tokenizer=tokenizer,
            splits=small_splits,
        )
        return path

    return create


def test_paced_catch_up_crosses_an_epoch_and_tags_the_round(paced_run, small_splits):
    # Prepare
    central = PacedCentral(paced_run("run"), splits=small_splits)
    epoch_tokens = sum(
        int((batch[:, 1:] != 0).sum()) for batch in central.trainer.stream.epoch(0)
    )

    # Execute
    line = central.catch_up(epoch_tokens * 6 // 5, server_round=7)

    # Assert
    assert line["server_round"] == 7
    assert line["tokens_total"] >= epoch_tokens * 6 // 5
    assert central.trainer.progress.epoch == 1
    assert 1.0 < line["epoch"] < 2.0


def test_paced_resumed_run_equals_one_that_never_stopped(paced_run, small_splits):
    # Prepare
    steady = PacedCentral(paced_run("steady"), splits=small_splits)
    stopped = PacedCentral(paced_run("stopped"), splits=small_splits)

    # Execute: the same two catch-ups, with a restart between them on one side.
    for central in (steady, stopped):
        central.catch_up(3_000, server_round=1)
    resumed = PacedCentral(stopped.run.path, splits=small_splits)
    lines = [c.catch_up(6_000, server_round=2) for c in (steady, resumed)]

    # Assert
    assert lines[0]["tokens_total"] == lines[1]["tokens_total"]
    for a, b in zip(
        steady.model().parameters(), resumed.model().parameters(), strict=True
    ):
        torch.testing.assert_close(a, b)


def test_paced_catch_up_already_there_trains_nothing(paced_run, small_splits):
    # Prepare
    central = PacedCentral(paced_run("run"), splits=small_splits)
    first = central.catch_up(2_000, server_round=1)

    # Execute
    again = central.catch_up(first["tokens_total"], server_round=2)

    # Assert
    assert again == first
    assert len(central.run.read_metrics()) == 1
    assert read_unigram(central.run.path) is not None
