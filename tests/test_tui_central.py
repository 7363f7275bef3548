"""The demo's live central baseline: paced by the fleet's tokens, read back by the
dashboard, turned off or replaced by an existing run; and the help screen."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import NewSimulation, small_federation
from test_private_round import dp_federation
from test_tui_app import SIZE, wait_for
from textual.app import App, ComposeResult
from textual.widgets import Static

from central.config import CentralConfig
from central.paced import read_unigram
from cli.main import build_parser
from coordinator.config import FederationConfig
from coordinator.privacy.released import figure
from corpora.corpus import CorpusSplits
from models.rundir import RunDir
from tui.app import CentralReference, FedtypeApp
from tui.charts import FixedChart
from tui.child_fleet import ChildProcessFleet
from tui.dashboard import Dashboard
from tui.help_screen import HelpScreen
from tui.live_central import (
    CentralView,
    central_path,
    open_live_central,
    read_central,
    start_live_central,
)
from tui.sim_fleet import SimulationFleet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def central_fleet(
    tmp_path: Path, small_splits: CorpusSplits, new_simulation: NewSimulation
) -> Callable[[], SimulationFleet]:
    """A small fresh run with its live central baseline, opened in-process."""

    def make() -> SimulationFleet:
        simulation = new_simulation(tmp_path / "run", small_federation())
        start_live_central(simulation.run.path, small_splits)
        central = open_live_central(simulation.run.path, small_splits)
        return SimulationFleet(simulation, name="test-run", central=central)

    return make


def test_live_central_trains_to_the_fleet_tokens_after_a_round(
    central_fleet, small_splits, tiny_model_config
):
    # Prepare
    fleet = central_fleet()
    run = fleet.simulation.run.path
    batch_targets = CentralConfig().batch_size * tiny_model_config.max_len

    # Execute
    records = [fleet.run_round() for _ in range(2)]
    view = read_central(run)
    resumed = open_live_central(run, small_splits)

    # Assert: within one central batch of the fleet's tokens, after every round.
    assert view is not None and view.model is not None
    for record, line in zip(records, view.records, strict=True):
        assert line["server_round"] == record["server_round"]
        assert 0 <= line["tokens_total"] - record["tokens_total"] < batch_targets
        assert set(line["heldout"]) >= {"top3", "perplexity"}
    assert resumed is not None
    assert resumed.tokens_total == view.records[-1]["tokens_total"]
    assert view.unigram is not None and 0 < view.unigram["top3"] < 1
    assert view.users == 30


def _private(secure: bool) -> FederationConfig:
    """DP (and SecAgg) for three phones, evaluated every round."""
    return replace(
        dp_federation(3, rounds=2, secure_aggregation=secure, replayable_noise=True),
        eval_every=1,
        heldout_messages=20,
        future_messages=20,
        keystroke_texts=4,
    )


@pytest.mark.parametrize(
    "federation",
    # Round 1 without evaluation (nothing to overlap the catch-up with); DP and
    # SecAgg + DP, whose released lines carry no tokens (the pacing reads the
    # simulation's truth).
    [small_federation(eval_every=2), _private(False), _private(True)],
    ids=["unevaluated-round", "dp", "secagg-dp"],
)
def test_live_central_catches_up_to_the_fleets_true_tokens_every_round(
    tmp_path, small_splits, new_simulation, federation
):
    # Prepare
    simulation = new_simulation(tmp_path / "run", federation)
    start_live_central(simulation.run.path, small_splits)
    central = open_live_central(simulation.run.path, small_splits)
    fleet = SimulationFleet(simulation, name="test-run", central=central)

    # Execute
    records = [fleet.run_round() for _ in range(2)]
    fleet.close()

    # Assert: a central line per round, paced by its round, caught up
    view = read_central(simulation.run.path)
    assert view is not None
    assert [line["server_round"] for line in view.records] == [1, 2]
    truth = [int(figure(r, "tokens_total")) for r in records]
    assert all(
        line["tokens_total"] >= tokens
        for line, tokens in zip(view.records, truth, strict=True)
    )


def test_a_failed_central_catch_up_fails_its_round(central_fleet, monkeypatch):
    # Prepare: the baseline's catch-up breaks (a full disk, say)
    fleet = central_fleet()

    def broken(tokens_total: int, *, server_round: int) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(fleet.central, "catch_up", broken)

    # Execute: the round fails with the baseline's error; the next one, with
    # the baseline mended, runs
    with pytest.raises(OSError, match="no space left"):
        fleet.run_round()
    monkeypatch.undo()
    record = fleet.run_round()
    fleet.close()

    # Assert: round 1 was saved before its catch-up failed; round 2 caught the
    # baseline up to the fleet's tokens
    view = read_central(fleet.simulation.run.path)
    assert record["server_round"] == 2
    assert view is not None and view.records[-1]["server_round"] == 2
    assert view.records[-1]["tokens_total"] >= record["tokens_total"]


async def test_app_shows_both_curves_and_offers_the_live_central_model(
    central_fleet,
):
    # Prepare
    app = FedtypeApp(central_fleet(), max_rounds=1)

    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.server_round == 1)
        await pilot.pause()

        # Execute: no personal model yet, so the next source is central.
        await pilot.press("f6")
        await pilot.pause()

        # Assert
        assert len(app.query_one("#chart-top3", FixedChart).series) == 1
        central = app.query_one("#chart-central-top3", FixedChart)
        assert central.display and len(central.series) == 1
        assert central.mark is not None  # the unigram level
        assert "central" in str(app.query_one("#perplexity").render())
        assert "30 users' pooled text" in str(app.query_one("#gap").render())
        assert app.sources.active == "central"


async def test_app_existing_central_run_replaces_the_live_one(
    central_fleet, tokenizer, tiny_model_config
):
    # Prepare: `--central RUN` gives a reference; the live one must not show.
    fleet = central_fleet()
    reference = fleet.global_snapshot()
    central = CentralReference(model=reference, tokenizer=tokenizer, top3=0.25)
    app = FedtypeApp(fleet, central=central, max_rounds=1)

    async with app.run_test(size=SIZE) as pilot:
        # Execute
        await wait_for(pilot, lambda: app.server_round == 1)
        await pilot.pause()

        # Assert
        chart = app.query_one("#chart-central-top3", FixedChart)
        assert chart.value == "25.0%" and chart.series == []
        assert app.sources._suggesters["central"].model is reference
        assert app.query_one("#gap").display is False


@pytest.mark.parametrize("live", [True, False], ids=["live", "no-central"])
def test_child_fleet_trains_the_live_central_unless_turned_off(
    tmp_path, small_splits, new_simulation, live
):
    # Prepare: a run that has a live baseline; `--no-central` opens it with False.
    run = tmp_path / "run"
    new_simulation(run, small_federation()).close()
    start_live_central(run, small_splits)
    fleet = ChildProcessFleet(run, splits=small_splits, live_central=live)

    # Execute
    try:
        record, _ = fleet.train_round()
        # Without the baseline the child measures the unigram level aside.
        deadline = time.monotonic() + 60
        while not live and read_unigram(run) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        view = fleet.central_view()
    finally:
        fleet.close()

    # Assert
    lines = RunDir(central_path(run)).read_metrics()
    assert record["server_round"] == 1
    assert view is not None
    if live:
        assert view.records == lines
        assert [line["server_round"] for line in lines] == [1]
        assert lines[0]["tokens_total"] >= record["tokens_total"]
    else:
        # The unigram level alone, the very figures the baseline measured on
        # the same held-out sample; nothing of the baseline trained.
        assert (view.records, view.users, view.model) == ([], 0, None)
        assert view.unigram == read_unigram(central_path(run))
        assert lines == []


def test_demo_options_central_and_no_central_exclude_each_other(capsys):
    # Prepare
    parser = build_parser()

    # Execute
    plain = parser.parse_args(["demo"])
    off = parser.parse_args(["demo", "--no-central"])
    with pytest.raises(SystemExit) as both:
        parser.parse_args(["demo", "--no-central", "--central", "runs/c"])

    # Assert
    assert (plain.no_central, plain.central) == (False, None)
    assert off.no_central
    assert both.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


async def test_app_help_screen_opens_and_closes(central_fleet):
    # Prepare
    app = FedtypeApp(central_fleet(), autostart=False)

    async with app.run_test(size=SIZE) as pilot:
        # Execute
        await pilot.press("f9")
        await pilot.pause()
        opened = app.screen
        text = opened.plain_text()
        await pilot.press("escape")
        await pilot.pause()

        # Assert
        assert isinstance(opened, HelpScreen)
        for term in ("picked", "rejected", "Keystroke savings", "perplexity"):
            assert term in text
        assert "pooled text" in text
        assert not isinstance(app.screen, HelpScreen)


async def test_dashboard_shows_the_unigram_level_without_a_live_baseline() -> None:
    # Prepare: what a --no-central run's child measured (RUN/unigram.json).
    view = CentralView(
        records=[],
        model=None,
        unigram={"top3": 0.125, "perplexity": 480.0},
        users=0,
        text_bytes=0,
    )

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield Dashboard()

    app = One()
    async with app.run_test(size=SIZE) as pilot:
        # Execute
        dashboard = app.query_one(Dashboard)
        dashboard.show_history([{"server_round": 1, "heldout": {"perplexity": 900.0}}])
        dashboard.show_central(view)
        await pilot.pause()

        # Assert: the unigram mark 12.5 % and its perplexity 480; no central
        # line, no "what central read" gap
        axis = str(app.query_one("#axis", Static).render())
        perplexity = str(app.query_one("#perplexity", Static).render())
        assert "unigram 12.5%" in axis
        assert "unigram 480" in perplexity and "central" not in perplexity
        assert app.query_one("#gap").display is False
