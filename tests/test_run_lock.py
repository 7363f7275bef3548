"""One writer per run directory (`models.run_lock`): a second writer is refused in
one line naming the directory and the holder's process id, with exit status 2;
readers take no lock; a killed holder's lock goes with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import run_cli, tiny_run_options

from corpora.messages import Message
from models.run_lock import LOCK_FILE, RunLock, RunLockedError

ROOT = Path(__file__).resolve().parents[1]
HOLD = (
    "import sys, time\n"
    "from models.run_lock import lock_run\n"
    "lock = lock_run(sys.argv[1], create=sys.argv[2] == '1')\n"
    "print('locked', flush=True)\n"
    "time.sleep(120)\n"
)


def one_round(run: Path, corpus: Path) -> list[str]:
    """`fedtype simulate --out RUN` of one tiny round on `corpus`."""
    argv = ["simulate", "--out", str(run), "--corpus", str(corpus), "--rounds", "1"]
    return [*argv, *tiny_run_options(eval_every=1)]


class Holder:
    """Another process holding a run directory's write lock until `kill`."""

    def __init__(self, run: Path, *, create: bool = False) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(run), "1" if create else "0"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "locked"
        self.pid = self.process.pid

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """The run directory a test writes while another process may hold it."""
    return tmp_path / "run"


@pytest.fixture
def hold(run: Path) -> Iterator[Callable[..., Holder]]:
    """Starts another process holding `run`'s lock (`create`: making it, as a
    `--out` does); each is killed at the test's end whatever happens."""
    started: list[Holder] = []

    def start(*, create: bool = False) -> Holder:
        started.append(Holder(run, create=create))
        return started[-1]

    yield start
    for one in started:
        one.kill()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, small_messages: list[Message]):
    path = tmp_path_factory.mktemp("lock") / "slice.jsonl"
    path.write_text(
        "".join(
            json.dumps({"user": m.user, "text": m.text, "timestamp": m.timestamp})
            + "\n"
            for m in small_messages
        )
    )
    return path


def test_run_lock_refuses_a_second_holder_in_this_process(tmp_path: Path) -> None:
    # Prepare
    (tmp_path / "config.json").write_text("{}")
    first = RunLock(tmp_path).acquire()

    # Execute
    with pytest.raises(RunLockedError) as refused:
        RunLock(tmp_path).acquire()
    first.release()
    again = RunLock(tmp_path).acquire()
    again.release()

    # Assert
    assert f"process {os.getpid()}" in str(refused.value)
    assert str(tmp_path) in str(refused.value)


def test_run_lock_new_directory_left_without_trace(tmp_path: Path) -> None:
    # Prepare
    run = tmp_path / "new" / "run"

    # Execute
    with RunLock(run, create=True):
        inside = sorted(p.name for p in run.iterdir())

    # Assert
    assert inside == [LOCK_FILE]
    assert not run.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["simulate", "--resume", "{run}"],
        ["local-only", "--resume", "{run}"],
        ["central", "--resume", "{run}", "--workers", "1"],
        ["train", "--resume", "{run}"],
        ["personalize", "--run", "{run}"],
    ],
)
def test_second_writer_refused_with_holder_pid(
    command: list[str],
    run: Path,
    hold: Callable[..., Holder],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Prepare
    run.mkdir()
    config = {"kind": "federated", "marker": 1}
    (run / "config.json").write_text(json.dumps(config))
    holder = hold()

    # Execute
    status, err = run_cli([part.format(run=run) for part in command], capsys)

    # Assert
    assert status == 2
    assert err.count("\n") == 1
    assert f"{run}: process {holder.pid} is writing this run" in err
    assert json.loads((run / "config.json").read_text()) == config


def test_simulate_out_refused_while_an_unstarted_run_is_created(
    run: Path,
    hold: Callable[..., Holder],
    corpus: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Prepare: another `simulate --out` before its round 0 is saved
    holder = hold(create=True)
    (run / "config.json").write_text(json.dumps({"kind": "federated"}))

    # Execute
    status, err = run_cli(one_round(run, corpus), capsys)

    # Assert: refused, and the first run's file is still there
    assert status == 2
    assert f"process {holder.pid}" in err
    assert (run / "config.json").exists()


def test_reader_works_while_writer_holds_and_crash_releases(
    run: Path,
    hold: Callable[..., Holder],
    corpus: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Prepare: a finished 1-round run whose lock another process holds
    assert run_cli(one_round(run, corpus), capsys)[0] == 0
    holder = hold()

    # Execute
    compared, _ = run_cli(["compare", str(run)], capsys)
    refused, _ = run_cli(["simulate", "--resume", str(run), "--rounds", "2"], capsys)
    holder.kill()  # kill -9: the operating system releases the lock
    resumed, _ = run_cli(["simulate", "--resume", str(run), "--rounds", "2"], capsys)

    # Assert
    assert (compared, refused, resumed) == (0, 2, 0)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["server_round"] for line in lines] == [1, 2]
