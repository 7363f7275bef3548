"""The demo's child-process fleet: rounds, this phone and failures across the pipe."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from helpers import NewSimulation, small_federation

from coordinator.run import store
from models.run_lock import RunLock, RunLockedError
from models.rundir import RunDir, RunDirError
from tui.app import FedtypeApp
from tui.child_fleet import ChildProcessFleet, TrainerError, repair_run
from tui.fleet import THIS_PHONE


@pytest.fixture
def small_run(tmp_path: Path, new_simulation: NewSimulation) -> Path:
    """A small federated run at round 0, closed again."""
    run = tmp_path / "run"
    new_simulation(run, small_federation()).close()
    return run


def test_child_fleet_rounds_messages_and_personal_model(small_run, small_splits):
    # Prepare
    fleet = ChildProcessFleet(small_run, splits=small_splits)
    try:
        # Execute
        record, model = fleet.train_round()
        messages = fleet.send("see you at the lake")
        personal = fleet.personalize()
        facts = fleet.phone_facts(fleet.phone_ids()[1])
    finally:
        fleet.close()

    # Assert
    assert record["server_round"] == 1 == fleet.server_round
    assert model.config.vocab_size == fleet.tokenizer.vocab_size
    assert messages == ["see you at the lake"]
    assert personal is not None and personal[1:] == (1, 1)
    assert facts.profile and facts.profile[0][0] == "time zone"
    reopened = ChildProcessFleet(small_run, splits=small_splits)
    try:
        assert reopened.my_messages() == ["see you at the lake"]
        assert THIS_PHONE in reopened.phone_ids()
        assert [r["server_round"] for r in reopened.records()] == [1]
    finally:
        reopened.close()


def test_child_fleet_missing_run_raises_rundir_error(tmp_path):
    # Prepare
    missing = tmp_path / "nowhere"

    # Execute
    with pytest.raises(RunDirError) as raised:
        ChildProcessFleet(missing)

    # Assert
    assert "no such run directory" in str(raised.value)


def test_child_fleet_run_the_child_cannot_resume_fails_its_rounds(small_run):
    # Prepare
    (small_run / "config.json").write_text('{"kind": "federated"}')
    fleet = ChildProcessFleet(small_run)

    # Execute
    try:
        with pytest.raises(TrainerError) as raised:
            fleet.train_round()
    finally:
        fleet.close()

    # Assert
    assert "incomplete" in str(raised.value)


def test_child_fleet_close_during_round_fails_the_round(small_run, small_splits):
    # Prepare
    fleet = ChildProcessFleet(small_run, splits=small_splits)
    errors: list[Exception] = []

    def train() -> None:
        try:
            while True:
                fleet.train_round()
        except Exception as error:  # the round in flight fails when the child stops
            errors.append(error)

    thread = threading.Thread(target=train)
    thread.start()
    time.sleep(0.5)

    # Execute: the timeout guards against a hang; how long closing takes is
    # measured by benchmarks/tui.py.
    fleet.close()
    thread.join(60)

    # Assert
    assert not thread.is_alive()
    assert errors


async def test_child_fleet_drives_the_app(small_run, small_splits):
    # Prepare
    fleet = ChildProcessFleet(small_run, splits=small_splits)
    app = FedtypeApp(fleet, max_rounds=2)

    async with app.run_test(size=(100, 40)) as pilot:
        # Execute: up to 120 s for two rounds in the child (it returns as soon as
        # they are in; a busy machine or `pytest -n 2` starves the child for long)
        for _ in range(2400):
            if app.server_round == 2:
                break
            await pilot.pause(0.05)
        await pilot.press(*"how ar")
        await pilot.pause()

        # Assert
        assert app.server_round == 2
        assert len([w for w in app.query_one("ChipStrip").words if w]) == 3
        await pilot.press("ctrl+q")


def test_repair_run_mends_a_truncated_last_checkpoint_as_resume_does(
    tmp_path: Path, new_simulation: NewSimulation
):
    # Prepare: two rounds, then round 2's model cut in half as a full disk would
    path = tmp_path / "run"
    simulation = new_simulation(path, small_federation())
    for _ in range(2):
        simulation.run_round()
    simulation.close()
    run = RunDir(path)
    step = run.checkpoint_path(2)
    step.write_bytes(step.read_bytes()[: step.stat().st_size // 2])

    # Execute
    notes = repair_run(run)

    # Assert: the demo opens round 1, says what was moved and what runs again
    assert store.read_progress(run)[0] == 1
    assert any("step_000002.safetensors.damaged" in note for note in notes)
    assert any("rounds 2 to 2 run again" in note for note in notes)
    assert run.load_model()[1] == 1


def test_repair_run_refused_while_another_process_writes(small_run):
    # Prepare
    with RunLock(small_run):
        # Execute
        with pytest.raises(RunLockedError) as refused:
            repair_run(RunDir(small_run))

    # Assert
    assert f"process {os.getpid()} is writing this run" in str(refused.value)
