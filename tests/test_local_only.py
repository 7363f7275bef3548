"""Local-only training: shares, pooling, averaging and a resumable run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from central.local_only import (
    LocalOnlyConfig,
    UserResult,
    averaged_metrics,
)
from central.local_only_run import (
    create_local_only_run,
    read_done,
    run_local_only,
)
from cli.main import main
from corpora.corpus import CorpusConfig
from models.config import ModelConfig
from models.rundir import RunDir, RunDirError

CONFIG = LocalOnlyConfig(
    local_epochs=1,
    future_messages=60,
    keystroke_texts=6,
    heldout_models=2,
    heldout_messages_per_model=20,
    heldout_keystroke_texts=3,
)


class Interrupt(Exception):
    """Raised by a callback to kill a run mid-way."""


@pytest.fixture(autouse=True)
def one_thread() -> object:
    """One intra-op thread: on 2 shared cores a second one mostly waits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_averaged_metrics_means_rates_and_geometric_mean_perplexity() -> None:
    # Prepare
    one = {
        "top1": 0.1,
        "top3": 0.2,
        "perplexity": 10.0,
        "keystroke_savings": 0.3,
        "num_targets": 50,
        "num_messages": 5,
    }
    two = {**one, "top1": 0.3, "top3": 0.4, "perplexity": 1000.0}
    # Execute
    mean = averaged_metrics([one, two])
    # Assert
    assert mean is not None
    assert mean["top1"] == pytest.approx(0.2) and mean["top3"] == pytest.approx(0.3)
    assert mean["perplexity"] == pytest.approx(100.0)
    assert mean["num_models"] == 2 and mean["num_messages"] == 5


def test_run_local_only_resumes_after_kill_with_the_same_result(
    tmp_path: Path, corpus_file: str, tiny_model_config: ModelConfig
) -> None:
    # Prepare: one run straight through, one killed after its third user.
    corpus = CorpusConfig(source=corpus_file)
    whole = create_local_only_run(
        tmp_path / "whole", corpus=corpus, model=tiny_model_config, config=CONFIG
    )
    broken = create_local_only_run(
        tmp_path / "broken", corpus=corpus, model=tiny_model_config, config=CONFIG
    )
    expected = run_local_only(whole.path)

    def kill_at_third(done: int, total: int, result: UserResult) -> None:
        if done == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_local_only(broken.path, on_user=kill_at_third)
    assert len(read_done(broken)) == 3
    # Execute
    found = run_local_only(broken.path)
    # Assert
    strip = ("wall_seconds_total",)
    assert {k: v for k, v in found.items() if k not in strip} == {
        k: v for k, v in expected.items() if k not in strip
    }
    assert found["users_trained"] == len(read_done(whole)) >= 3
    assert found["future"]["num_messages"] >= 60
    assert found["heldout"]["num_models"] == 2
    assert found["heldout"]["num_messages"] == 20
    assert RunDir(broken.path).read_metrics() == [found]


def test_run_local_only_rejects_a_central_run(tmp_path: Path) -> None:
    # Prepare
    (tmp_path / "config.json").write_text('{"kind": "train"}')
    # Execute / Assert
    with pytest.raises(RunDirError, match="not a local-only one"):
        run_local_only(tmp_path)


def test_cli_local_only_bad_input_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    status = main(["local-only", "--out", str(tmp_path / "a"), "--local-epochs", "0"])
    # Assert
    err = capsys.readouterr().err
    assert status == 2 and "local_epochs must be >= 1" in err
    assert not (tmp_path / "a").exists()
