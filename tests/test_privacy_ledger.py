"""The privacy ledger: epsilon never goes down, whatever a kill or a repair does.

A DP run is broken as a kill or a bad disk would break it (each fallback path of
`coordinator.run.repair.repair_for_resume`) and resumed; the accountant is rebuilt
from `privacy_ledger.jsonl`, so the resumed run's epsilon is above the epsilon
it had logged before the damage.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import dp_epsilon, run_cli, tiny_run_options
from safetensors.torch import load_file, save_file

from cli.main import main
from coordinator.privacy.ledger import LedgerError, LedgerEvent, PrivacyLedger
from models.rundir import RunDir

TINY = tiny_run_options(eval_every=0, max_users=None)
DP = ["--secure-aggregation", "--dp-clip", "0.5", "--noise-multiplier", "0.8"]


def event(server_round: int, q: float = 0.1, z: float = 1.0) -> LedgerEvent:
    return LedgerEvent(server_round, q, z, "released")


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory: pytest.TempPathFactory, corpus_file: str) -> Path:
    """A 4-round SecAgg + DP run (C 0.5, z 0.8) on the small slice's 20 users."""
    folder = tmp_path_factory.mktemp("dp")
    corpus = Path(corpus_file)
    run = folder / "run"
    argv = ["simulate", "--out", str(run), "--corpus", str(corpus), "--rounds", "4"]
    assert main([*argv, "--max-users", "20", *TINY, *DP]) == 0
    return run


def damage(run: RunDir, how: str) -> None:
    """Break the run as a kill or a bad disk would."""
    latest = run.checkpoint_path(4)
    if how == "truncated":
        latest.write_bytes(latest.read_bytes()[:1000])
    elif how in ("non-finite", "mis-shaped"):
        tensors = load_file(str(latest))
        first = next(iter(tensors))
        bad = torch.full_like(tensors[first], float("nan"))
        tensors[first] = bad if how == "non-finite" else torch.zeros(3)
        save_file(tensors, str(latest))
    elif how == "lost state.json":
        run.state_path.unlink()
    else:
        run.state_path.write_text('{"server_round": 4, "clo')


@pytest.mark.parametrize(
    "how",
    ["truncated", "non-finite", "mis-shaped", "lost state.json", "unreadable"],
)
def test_every_fallback_keeps_epsilon_monotone(
    dp_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    # Prepare: a copy of the 4-round run, its logged epsilon, then the damage.
    run = RunDir(shutil.copytree(dp_run, tmp_path / "run"))
    before = run.read_metrics()[-1]["epsilon"]
    charged = len(PrivacyLedger(run.path).events())
    damage(run, how)

    # Execute: resume to 5 rounds, from round 3 (the last intact one).
    status, out = run_cli(["simulate", "--resume", str(run.path), "--rounds", "5"],
                          capsys, stdout=True)  # fmt: skip

    # Assert: the ledger kept all 4 events and gained the replayed round 4 and
    # round 5; epsilon is that of all 6 charged events, above the 4 of before.
    assert status == 0, out
    assert "for round 3" in " ".join(out.split()) or "from round 3" in out
    events = PrivacyLedger(run.path).events()
    assert charged == 4 and [e.server_round for e in events] == [1, 2, 3, 4, 4, 5]
    after = run.read_metrics()[-1]["epsilon"]
    assert after > before
    q = events[0].sampling_probability
    assert all(e.sampling_probability == q for e in events)  # --always-eligible
    assert after == pytest.approx(dp_epsilon(q, 0.8, rounds=6, delta=1e-5), rel=1e-9)


def test_a_damaged_ledger_line_stops_the_resume_with_one_line(
    dp_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: garbage in line 2 of 4.
    run = RunDir(shutil.copytree(dp_run, tmp_path / "run"))
    ledger = PrivacyLedger(run.path)
    lines = ledger.path.read_text().splitlines(keepends=True)
    lines[1] = "{garbage\n"
    ledger.path.write_text("".join(lines))

    # Execute
    status, out = run_cli(["simulate", "--resume", str(run.path), "--rounds", "5"],
                          capsys, stdout=True)  # fmt: skip

    # Assert: exit 2, naming the file and line; nothing ran.
    assert status == 2 and "Traceback" not in out
    assert "privacy_ledger.jsonl: line 2 is damaged" in " ".join(out.split())
    assert run.read_metrics()[-1]["server_round"] == 4


def test_a_lost_ledger_stops_the_resume(
    dp_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: the ledger deleted, state.json rebuilt without its accountant.
    run = RunDir(shutil.copytree(dp_run, tmp_path / "run"))
    PrivacyLedger(run.path).path.unlink()
    run.state_path.unlink()

    # Execute
    status, out = run_cli(["simulate", "--resume", str(run.path)], capsys, stdout=True)

    # Assert
    assert status == 2 and "privacy_ledger.jsonl: missing, though" in out


@pytest.mark.parametrize("killed", ["between rounds", "after round 5 was charged"])
def test_a_resume_charges_a_replayed_round_again(
    dp_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], killed: str
) -> None:
    # Prepare: the 4-round run as a kill left it: between rounds 4 and 5, or
    # after round 5's event reached the ledger but before round 5 was saved.
    run = RunDir(shutil.copytree(dp_run, tmp_path / "run"))
    ledger = PrivacyLedger(run.path)
    if killed != "between rounds":
        first = ledger.events()[0]
        ledger.append(LedgerEvent(5, first.sampling_probability, 0.8, "released"))

    # Execute
    status, out = run_cli(["simulate", "--resume", str(run.path), "--rounds", "5"],
                          capsys, stdout=True)  # fmt: skip

    # Assert: epsilon equals the uninterrupted run's (5 events) when the kill
    # fell between rounds, and is above it (6 events) when round 5 ran twice.
    assert status == 0, out
    events = ledger.events()
    charged = 5 if killed == "between rounds" else 6
    last_two = [4, 5] if charged == 5 else [5, 5]
    assert len(events) == charged and [e.server_round for e in events][-2:] == last_two
    q = events[0].sampling_probability
    expected = dp_epsilon(q, 0.8, rounds=charged, delta=1e-5)
    assert run.read_metrics()[-1]["epsilon"] == pytest.approx(expected, rel=1e-9)


def test_a_run_without_a_ledger_carries_its_state_json_accountant(
    dp_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: a DP run made before the ledger existed (state.json intact).
    run = RunDir(shutil.copytree(dp_run, tmp_path / "run"))
    PrivacyLedger(run.path).path.unlink()

    # Execute
    status, out = run_cli(["simulate", "--resume", str(run.path), "--rounds", "5"],
                          capsys, stdout=True)  # fmt: skip

    # Assert: its 4 rounds were carried into a new ledger, then round 5 charged.
    assert status == 0, out
    events = PrivacyLedger(run.path).events()
    assert [e.kind for e in events][:4] == ["carried"] * 4
    assert len(events) == 5 and events[4].kind in ("released", "unreleased")
    q = events[0].sampling_probability
    expected = dp_epsilon(q, 0.8, rounds=5, delta=1e-5)
    assert run.read_metrics()[-1]["epsilon"] == pytest.approx(expected, rel=1e-9)


def test_ledger_leaves_out_a_torn_last_line_and_cuts_it_before_appending(
    tmp_path: Path,
) -> None:
    # Prepare: two events, then half of a third (a kill mid-append).
    ledger = PrivacyLedger(tmp_path)
    ledger.start()
    ledger.append(event(1))
    ledger.append(event(2))
    with open(ledger.path, "a") as handle:
        handle.write(event(3).to_line()[:20])

    # Execute
    found = ledger.events()
    ledger.append(event(3, z=2.0))

    # Assert: the torn append was nothing released; it is gone once a whole
    # event follows it.
    assert [e.server_round for e in found] == [1, 2]
    assert [e.noise_multiplier for e in ledger.events()] == [1.0, 1.0, 2.0]
    assert ledger.path.read_text().count("\n") == 3


def test_ledger_keeps_a_whole_last_event_without_its_newline(tmp_path: Path) -> None:
    # Prepare: a last event whose newline did not reach the disk.
    ledger = PrivacyLedger(tmp_path)
    ledger.start()
    ledger.path.write_text(event(1).to_line().rstrip("\n"))

    # Execute
    ledger.append(event(2))

    # Assert: counted (erring towards more epsilon), and kept apart from the next.
    assert [e.server_round for e in ledger.events()] == [1, 2]


def test_ledger_refuses_damage_before_the_last_line(tmp_path: Path) -> None:
    # Prepare
    ledger = PrivacyLedger(tmp_path)
    ledger.start()
    ledger.append(event(1))
    with open(ledger.path, "a") as handle:
        handle.write('{"server_round": 2, "kind": "released"}\n')
        handle.write(event(3).to_line())

    # Execute / Assert: neither read nor appended to.
    with pytest.raises(LedgerError, match="line 2 is damaged"):
        ledger.events()
    with pytest.raises(LedgerError, match="line 2 is damaged"):
        ledger.append(event(4))


def test_ledger_accountant_composes_every_event(tmp_path: Path) -> None:
    # Prepare: rounds 1, 2 and round 2 replayed after a kill.
    ledger = PrivacyLedger(tmp_path)
    ledger.start()
    for server_round in (1, 2, 2):
        ledger.append(event(server_round, q=0.2, z=1.0))

    # Execute
    epsilon = ledger.accountant().epsilon(1e-5)

    # Assert
    assert epsilon == pytest.approx(dp_epsilon(0.2, 1.0, rounds=3, delta=1e-5))
