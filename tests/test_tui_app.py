"""Headless tests of the typing demo with a small real fleet (30 phones, tiny model)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import NewSimulation, small_federation
from textual import events
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from coordinator.privacy.dp import DPConfig
from coordinator.privacy.privacy_config import PrivacyConfig
from coordinator.run.simulation import Simulation
from corpora.corpus import CorpusSplits
from models.rundir import RunDirError
from tui.app import CentralReference, FedtypeApp
from tui.charts import FixedChart
from tui.chips import ChipStrip
from tui.dashboard import Dashboard
from tui.fleet_screen import FleetScreen
from tui.keyboard import MAX_MESSAGE_CHARS
from tui.phone_panel import PhonePanel
from tui.privacy_panel import ServerSawPanel
from tui.problem_screen import ProblemScreen
from tui.rounds_panel import RoundsPanel
from tui.sim_fleet import SimulationFleet

SIZE = (100, 40)


@pytest.fixture
def make_fleet(
    tmp_path: Path, small_splits: CorpusSplits, new_simulation: NewSimulation
) -> Callable[[], SimulationFleet]:
    """Creates (first call) or resumes (later calls) a small run in tmp_path."""

    def make() -> SimulationFleet:
        run = tmp_path / "run"
        if (run / "config.json").exists():
            simulation = Simulation.resume(run, splits=small_splits)
        else:
            simulation = new_simulation(run, small_federation())
        return SimulationFleet(simulation, name="test-run")

    return make


async def wait_for(pilot: Pilot, condition: Callable[[], bool], timeout: float = 20):
    """Let the app run until `condition()` holds; fails after `timeout` seconds."""
    steps = int(timeout / 0.05)
    for _ in range(steps):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not reached in time")


async def test_app_typing_prefix_shows_three_chips(make_fleet):
    # Prepare
    app = FedtypeApp(make_fleet(), autostart=False)

    async with app.run_test(size=SIZE) as pilot:
        # Execute
        await pilot.press(*"how ar")
        await pilot.pause()

        # Assert
        words = app.query_one(ChipStrip).words
        assert len(words) == 3
        assert all(word.lower().startswith("ar") for word in words)


@pytest.mark.parametrize(
    ("typed", "key", "chip", "expected"),
    [
        pytest.param("see you to", "f2", 1, "see you {} ", id="chip-key-inserts-word"),
        pytest.param("hello ", "tab", 0, "hello {} ", id="tab-after-space-top-chip"),
        pytest.param("Th", "right", 0, "{} ", id="right-arrow-ghost-completion"),
    ],
)
async def test_app_key_accepts_a_chip(make_fleet, typed, key, chip, expected):
    # Prepare: the chip's word completes the partly typed word ("" after a space).
    app = FedtypeApp(make_fleet(), autostart=False)
    partial = typed.split(" ")[-1]

    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*typed)
        await pilot.pause()
        word = app.query_one(ChipStrip).words[chip]

        # Execute
        await pilot.press(key)
        await pilot.pause()

        # Assert
        assert word.startswith(partial)
        assert app.query_one("#field", Input).value == expected.format(word)


async def test_app_right_arrow_then_typing_starts_a_new_word(make_fleet):
    # Prepare: a partly typed word with its ghost completion showing
    app = FedtypeApp(make_fleet(), autostart=False)

    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"how ar")
        await pilot.pause()
        word = app.query_one(ChipStrip).words[0]

        # Execute: accept the ghost text, then type on
        await pilot.press("right", "x")
        await pilot.pause()

        # Assert: "are x", not "arex"
        assert len(word) > len("ar")
        assert app.query_one("#field", Input).value == f"how {word} x"


async def test_app_trained_round_advances_counter_and_chart(make_fleet):
    # Prepare
    app = FedtypeApp(make_fleet(), max_rounds=1)

    async with app.run_test(size=SIZE) as pilot:
        # Execute
        await wait_for(pilot, lambda: app.server_round == 1)
        await pilot.pause()

        # Assert
        assert app.query_one(Dashboard).server_round == 1
        assert len(app.query_one("#chart-top3", FixedChart).series) == 1
        assert app.query_one(RoundsPanel).rows[-1][0] == "now (1)"


async def test_app_footer_after_the_last_round_offers_no_pause(make_fleet):
    # Prepare: a demo that stops after round 1, F5 offered while it trains
    app = FedtypeApp(make_fleet(), max_rounds=1)

    async with app.run_test(size=SIZE) as pilot:
        offered_while_training = "f5" in app.active_bindings

        # Execute
        await wait_for(pilot, lambda: app.ended)
        await pilot.pause()

        # Assert: neither Pause nor Resume is left in the footer
        assert offered_while_training
        assert "f5" not in app.active_bindings
        assert app.server_round == 1


async def test_app_f12_saves_the_screenshot_in_the_run_directory(
    tmp_path: Path, small_splits: CorpusSplits, new_simulation: NewSimulation
):
    # Prepare: a fleet whose name is its run directory, as `fedtype demo` gives
    run = tmp_path / "run"
    fleet = SimulationFleet(new_simulation(run, small_federation()), name=str(run))
    app = FedtypeApp(fleet, autostart=False)

    async with app.run_test(size=SIZE) as pilot:
        # Execute
        await pilot.press("f12")
        await pilot.pause()

        # Assert: one SVG there, and the notice names it
        saved = list(run.glob("*.svg"))
        notice = str(app.query_one("#notice", Static).render())
        assert len(saved) == 1
        assert notice == f"screenshot saved: {saved[0]}"


async def test_app_pause_stops_rounds(make_fleet):
    # Prepare
    app = FedtypeApp(make_fleet())

    async with app.run_test(size=SIZE) as pilot:
        # Execute
        await pilot.press("f5")
        await wait_for(pilot, lambda: not app.workers)
        stopped_at = app.server_round
        await pilot.pause(0.5)

        # Assert
        assert app.paused
        assert stopped_at <= 1
        assert app.server_round == stopped_at
        assert "paused" in str(app.query_one("#status").render())


async def test_app_resume_trains_again(make_fleet):
    # Prepare
    app = FedtypeApp(make_fleet(), autostart=False, max_rounds=1)

    async with app.run_test(size=SIZE) as pilot:
        # Execute
        await pilot.press("f5")
        await wait_for(pilot, lambda: app.server_round == 1)

        # Assert
        assert not app.paused


async def test_app_send_adds_message_to_this_phone_and_persists(make_fleet):
    # Prepare
    app = FedtypeApp(make_fleet(), autostart=False)

    async with app.run_test(size=SIZE) as pilot:
        # Execute
        await pilot.press(*"see you at the lake", "enter")
        await wait_for(pilot, lambda: app.query_one(PhonePanel).num_messages == 1)

        # Assert
        assert app.query_one("#field", Input).value == ""
    assert make_fleet().my_messages() == ["see you at the lake"]


async def test_app_personal_toggle_shows_personalised_words(make_fleet):
    # Prepare
    app = FedtypeApp(make_fleet(), autostart=False)

    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"pizza tonight at mine", "enter")
        await wait_for(pilot, lambda: "personal" in app.sources.available())

        # Execute
        await pilot.press("f7", *"pizza ")
        await pilot.pause()

        # Assert
        panel = app.query_one(PhonePanel)
        assert panel.show_personal
        assert len(panel.personal_words) == 3


async def test_app_source_switch_reaches_central(make_fleet, tokenizer):
    # Prepare
    fleet = make_fleet()
    central = CentralReference(
        model=fleet.global_snapshot(), tokenizer=tokenizer, top3=0.25
    )
    app = FedtypeApp(fleet, central=central, autostart=False)

    async with app.run_test(size=SIZE) as pilot:
        # Execute
        await pilot.press("f6")
        await pilot.pause()

        # Assert
        assert app.sources.active == "central"
        assert "central" in str(app.query_one("#source").render())


async def test_app_fleet_screen_shows_phone_metrics_not_text(make_fleet, small_splits):
    # Prepare
    app = FedtypeApp(make_fleet(), autostart=False)

    async with app.run_test(size=SIZE) as pilot:
        # Execute
        await pilot.press("f8")
        await wait_for(pilot, lambda: isinstance(app.screen, FleetScreen))
        screen = app.screen
        await wait_for(pilot, lambda: screen.query_one(DataTable).row_count > 0)
        await pilot.press("down", "down")
        await wait_for(pilot, lambda: "top-3" in screen.facts_text)
        client_id = screen.highlighted_id()
        await pilot.press("escape")
        await pilot.pause()

        # Assert
        assert "time zone" in screen.facts_text
        future = small_splits.training_users[client_id].future
        assert future and not any(text in screen.facts_text for text in future)
        assert not isinstance(app.screen, FleetScreen)


async def test_app_fleet_screen_reaches_the_last_phone_and_finds_by_id(make_fleet):
    # Prepare
    fleet = make_fleet()
    app = FedtypeApp(fleet, autostart=False)
    ids = fleet.phone_ids()

    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f8")
        await wait_for(pilot, lambda: isinstance(app.screen, FleetScreen))
        screen = app.screen
        table = screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count > 0)

        # Execute: to the bottom of the list, then a search by part of an id
        listed = table.row_count
        await pilot.press("ctrl+end")
        await pilot.pause()
        last = screen.highlighted_id()
        await pilot.press("slash", *screen.phone_ids[-1][2:7], "enter")
        await pilot.pause()

        # Assert: every phone listed, the last one reached, the search finds it
        assert listed == len(ids)
        assert last == screen.phone_ids[-1]
        assert screen.phone_ids[-1] in [key.value for key in table.rows]
        assert table.row_count < len(ids)


async def test_app_long_paste_and_odd_unicode_never_crash(make_fleet):
    # Prepare
    app = FedtypeApp(make_fleet(), autostart=False)
    texts = ["word " * 20_000, "ñandú 😀 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ", "\u200b\u0301 ", "zxqv", "?!"]

    async with app.run_test(size=SIZE) as pilot:
        for text in texts:
            # Execute
            app.query_one("#field", Input).value = text
            await pilot.pause()
            await pilot.press("f1", "right")
            await pilot.pause()

            # Assert
            assert len(app.query_one(ChipStrip).words) == 3


async def test_app_long_paste_is_cut_to_the_field_and_still_suggests(make_fleet):
    # Prepare
    app = FedtypeApp(make_fleet(), autostart=False)
    text = "see you at the lake\n" * 10_000

    async with app.run_test(size=SIZE) as pilot:
        field = app.query_one("#field", Input)

        # Execute
        field.post_message(events.Paste(text))
        await pilot.pause()

        # Assert
        assert len(field.value) == MAX_MESSAGE_CHARS
        assert "\n" not in field.value
        assert len(app.query_one(ChipStrip).words) == 3


async def test_app_missing_run_offers_a_fresh_fleet(make_fleet):
    # Prepare
    def broken() -> SimulationFleet:
        raise RunDirError("runs/nowhere: no such run directory")

    app = FedtypeApp(broken, fresh_factory=make_fleet, autostart=False)

    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ProblemScreen))
        await pilot.pause()
        message = app.screen.message

        # Execute
        await pilot.click("#fresh")
        await wait_for(pilot, lambda: app.fleet is not None)

        # Assert
        assert "no such run directory" in message
        assert app.fleet.server_round == 0


async def test_app_missing_run_quit_exits_with_message():
    # Prepare
    def broken() -> SimulationFleet:
        raise RunDirError("runs/nowhere: no such run directory")

    app = FedtypeApp(broken)

    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ProblemScreen))

        # Execute
        await pilot.press("escape")
        await pilot.pause()

    # Assert
    assert app.return_code == 2


@pytest.mark.parametrize(
    ("privacy", "epsilon_shown", "seen_from"),
    [
        (PrivacyConfig(), False, "update"),
        (PrivacyConfig(secure_aggregation=True), False, "round's sum"),
        (
            PrivacyConfig(
                dp=DPConfig(clip_norm=0.5, noise_multiplier=1.0, expected_clients=3),
                delta=1e-5,
            ),
            True,
            "update",  # central DP without SecAgg: the server still sees updates
        ),
        (
            PrivacyConfig(
                secure_aggregation=True,
                dp=DPConfig(clip_norm=0.5, noise_multiplier=1.0, expected_clients=3),
                delta=1e-5,
            ),
            True,
            "noisy sum",
        ),
    ],
)
async def test_app_shows_epsilon_and_what_the_server_saw(
    tmp_path, new_simulation, privacy, epsilon_shown, seen_from
):
    # Prepare: a fresh small fleet under the privacy settings, probed each round.
    simulation = new_simulation(tmp_path / "run", small_federation(privacy=privacy))
    app = FedtypeApp(SimulationFleet(simulation, name="test-run"), max_rounds=1)

    async with app.run_test(size=SIZE) as pilot:
        # Execute
        await wait_for(pilot, lambda: app.server_round == 1)
        await pilot.pause()

        # Assert: the epsilon line and the panel drawn from the round's record.
        line = str(app.query_one("#privacy", Static).render())
        assert line.startswith("ε ") == epsilon_shown
        assert ("no DP" in line) == (not epsilon_shown)
        panel = app.query_one(ServerSawPanel)
        assert panel.display
        assert seen_from in str(panel.render())
