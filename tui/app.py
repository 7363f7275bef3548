"""The typing demo: a phone keyboard whose model a simulated fleet trains live.

The app is a thin shell. Suggestions come from `tui.sources`, the fleet from a
`tui.fleet.DemoFleet`, and rounds run in a worker thread that reports through the
messages of `tui.messages`, so typing never waits for training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Header
from textual.worker import get_current_worker

from tui.dashboard import Dashboard
from tui.fleet import DemoFleet
from tui.fleet_screen import FleetScreen
from tui.freed_memory import give_back_freed_memory
from tui.help_screen import HelpScreen
from tui.keyboard import Keyboard, while_mounted
from tui.live_central import CentralView
from tui.messages import (
    MessageStored,
    Notice,
    PersonalModelReady,
    RoundTrained,
    TrainingEnded,
    TrainingFailed,
    TrainingStatus,
)
from tui.problem_screen import ProblemScreen
from tui.sources import RoundHistory, SuggestionSources
from tui.views import CentralReference, FleetView

__all__ = ["CentralReference", "FedtypeApp", "FleetFactory", "FleetView"]


FleetFactory = Callable[[], DemoFleet]


class FedtypeApp(App[None]):
    """Type as on a phone while the fleet trains the model that suggests."""

    CSS_PATH = "app.tcss"
    TITLE = "fedtype"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("f1", "chip(0)", "Chip", key_display="F1-F3"),
        Binding("f2", "chip(1)", "Chip 2", show=False),
        Binding("f3", "chip(2)", "Chip 3", show=False),
        Binding("tab", "chip(0)", "Top chip", show=False, priority=True),
        Binding("f5", "pause", "Pause", key_display="F5"),
        Binding("f5", "resume", "Resume", key_display="F5"),
        Binding("f6", "cycle_source", "Source", key_display="F6"),
        Binding("f7", "toggle_personal", "Mine", key_display="F7"),
        Binding("f8", "open_phones", "Phones", key_display="F8"),
        Binding("f9", "help", "Help", key_display="F9"),
        Binding("ctrl+q", "quit", "Quit", key_display="^Q", priority=True),
        Binding("f12", "save_screenshot", "Screenshot", show=False),
    ]

    def __init__(
        self,
        fleet: DemoFleet | FleetFactory,
        *,
        central: CentralReference | None = None,
        autostart: bool = True,
        max_rounds: int | None = None,
        fresh_factory: FleetFactory | None = None,
        fresh_where: str = "",
    ) -> None:
        """Args:
        fleet: The fleet, or a factory that opens it (called in a worker).
        central: An existing central baseline to offer as a source and reference
            line; without one, the fleet's live baseline (if any) is shown.
        autostart: Start training rounds as soon as the fleet is open.
        max_rounds: Stop after this server round (None: keep going).
        fresh_factory: Starts a fresh fleet when opening `fleet` fails.
        fresh_where: Where that fresh fleet lives, to tell the user.
        """
        super().__init__()
        self._factory = fleet if callable(fleet) else None
        self.fleet: DemoFleet | None = None if callable(fleet) else fleet
        self.central = central
        self.autostart = autostart
        self.max_rounds = max_rounds
        self.fresh_factory = fresh_factory
        self.fresh_where = fresh_where
        self.paused = not autostart
        # The last round is trained: F5 (pause or resume) has nothing to do.
        self.ended = False
        self.sources: SuggestionSources | None = None
        self.history: RoundHistory | None = None
        self.server_round = 0
        self.records: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="⌨")
        with Horizontal(id="body"):
            yield Keyboard(id="keyboard")
            yield Dashboard(id="dashboard")
        yield Footer()

    def on_mount(self) -> None:
        if self.fleet is not None:
            self._fleet_ready(FleetView.load(self.fleet))
        else:
            self.query_one(Dashboard).set_status("opening the fleet…")
            self._open_fleet(self._factory)

    # Opening the fleet ------------------------------------------------------------

    @work(thread=True, exclusive=True, group="open", exit_on_error=False)
    def _open_fleet(self, factory: FleetFactory | None) -> None:
        if factory is None:
            return
        try:
            view = FleetView.load(factory())
        except Exception as error:  # shown to the user, who may start afresh
            self.call_from_thread(self._open_failed, str(error))
            return
        self.call_from_thread(self._fleet_ready, view)

    def _open_failed(self, message: str) -> None:
        def chosen(fresh: bool | None) -> None:
            if fresh and self.fresh_factory is not None:
                self.query_one(Dashboard).set_status("starting a fresh fleet…")
                self._open_fleet(self.fresh_factory)
            else:
                self.exit(return_code=2, message=f"fedtype demo: {message}")

        screen = ProblemScreen(
            message,
            offer_fresh=self.fresh_factory is not None,
            fresh_where=self.fresh_where,
        )
        self.push_screen(screen, chosen)

    @while_mounted
    def _fleet_ready(self, view: FleetView) -> None:
        fleet = self.fleet = view.fleet
        self.sub_title = fleet.name
        self.sources = SuggestionSources(fleet.tokenizer, view.global_model)
        self.history = view.history
        self.records = view.records
        if self.central is not None:
            self.sources.set_model(
                "central", self.central.model, self.central.tokenizer
            )
            self.query_one(Dashboard).set_reference(self.central.top3)
        self._show_central(view.central)
        self.server_round = fleet.server_round
        # What opening the run had to repair (a truncated last checkpoint, ...).
        for note in getattr(fleet, "repair_notes", ()):
            self.notify(note, title="run repaired", severity="warning", timeout=20)
        self.query_one(Dashboard).show_history(self.records)
        keyboard = self.query_one(Keyboard)
        keyboard.show_messages(view.messages)
        keyboard.attach(self.sources, self.history, self.server_round)
        if view.messages:
            self._personalize()
        if not self.paused:
            self._train_rounds()
        self._show_training_state()

    # Training -----------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="training", exit_on_error=False)
    def _train_rounds(self) -> None:
        worker = get_current_worker()
        fleet, history = self.fleet, self.history
        while fleet is not None and not worker.is_cancelled and not self.paused:
            if self.max_rounds is not None and fleet.server_round >= self.max_rounds:
                self.post_message(TrainingEnded(f"done: {self.max_rounds} rounds"))
                return
            self.post_message(
                TrainingStatus(f"training round {fleet.server_round + 1}…")
            )
            try:
                record, model = fleet.train_round()
                # Both read from disk here, not on the UI thread.
                if history is not None:
                    history.prepare(fleet.server_round)
                central = fleet.central_view()
            except Exception as error:  # reported in the UI; training stops
                self.post_message(TrainingFailed(f"{type(error).__name__}: {error}"))
                return
            self.post_message(
                RoundTrained(int(record["server_round"]), record, model, central)
            )
        self.post_message(TrainingStatus("paused" if self.paused else "stopped"))

    @while_mounted
    def on_round_trained(self, message: RoundTrained) -> None:
        if self.sources is None or self.fleet is None:
            return
        self.server_round = message.server_round
        self.sources.set_model("global", message.model)
        if self.history is not None:
            self.history.remember(message.server_round, message.model)
        self.records.append(message.record)
        self.query_one(Dashboard).show_history(self.records)
        self._show_central(message.central)
        if self.fleet.my_messages():
            self._personalize()
        self.query_one(Keyboard).model_changed(self.server_round)
        give_back_freed_memory()  # the round's unpickled model and the one it replaced

    def _show_central(self, view: CentralView | None) -> None:
        """The live baseline's curve and model, unless `--central RUN` gave one."""
        if view is None or self.sources is None or self.central is not None:
            return
        if view.model is not None:
            self.sources.set_model("central", view.model)
        self.query_one(Dashboard).show_central(view)

    @while_mounted
    def on_training_status(self, message: TrainingStatus) -> None:
        self.query_one(Dashboard).set_status(message.text)

    @while_mounted
    def on_training_ended(self, message: TrainingEnded) -> None:
        self.ended = True
        self.refresh_bindings()
        self.query_one(Dashboard).set_status(message.text)

    @while_mounted
    def on_training_failed(self, message: TrainingFailed) -> None:
        self.paused = True
        self.refresh_bindings()
        self.query_one(Dashboard).set_status("stopped")
        self.query_one(Keyboard).notice(f"training stopped: {message.error}")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool:
        """Show Pause while training and Resume while paused; chips only work
        on the keyboard itself, not under a dialog."""
        if action == "chip":
            return len(self.screen_stack) == 1
        if action == "pause":
            return not self.paused and not self.ended
        if action == "resume":
            return self.paused and not self.ended
        return True

    def action_pause(self) -> None:
        """Stop training after the round in progress."""
        self.paused = True
        self.refresh_bindings()
        self._show_training_state()

    def action_resume(self) -> None:
        """Train rounds again."""
        self.paused = False
        self.refresh_bindings()
        if self.fleet is not None:
            self._train_rounds()

    @while_mounted
    def _show_training_state(self) -> None:
        busy = any(w.group == "training" and w.is_running for w in self.workers)
        if self.paused:
            text = "pausing after this round…" if busy else "paused"
            self.query_one(Dashboard).set_status(text)

    # This phone -----------------------------------------------------------------

    @work(thread=True, exclusive=True, group="personal", exit_on_error=False)
    def _personalize(self) -> None:
        fleet = self.fleet
        if fleet is None:
            return
        try:
            result = fleet.personalize()
        except Exception as error:  # a failed fine-tune only costs the personal view
            self.post_message(TrainingStatus(f"personalising failed: {error}"))
            return
        if result is not None:
            model, server_round, count = result
            self.post_message(PersonalModelReady(model, server_round, count))

    @while_mounted
    def on_personal_model_ready(self, message: PersonalModelReady) -> None:
        if self.sources is None:
            return
        self.sources.set_model("personal", message.model)
        plural = "" if message.num_messages == 1 else "s"
        keyboard = self.query_one(Keyboard)
        keyboard.personal_note = (
            f"round {message.server_round} + {message.num_messages} message{plural}"
        )
        keyboard.refresh_suggestions(ghost=self.sources.active == "personal")

    @on(Keyboard.Sent)
    def _send(self, event: Keyboard.Sent) -> None:
        if self.fleet is not None:
            self._store_message(event.text)

    @work(thread=True, group="send", exit_on_error=False)
    def _store_message(self, text: str) -> None:
        # On this phone's own storage; off the UI thread, since the trainer
        # process may still be starting.
        fleet = self.fleet
        if fleet is None:
            return
        try:
            messages = fleet.send(text)
        except Exception as error:  # the message is lost; say so
            self.post_message(Notice(f"could not store the message: {error}"))
            return
        self.post_message(MessageStored(messages))

    @while_mounted
    def on_message_stored(self, message: MessageStored) -> None:
        self.query_one(Keyboard).show_messages(message.messages)
        self._personalize()

    @while_mounted
    def on_notice(self, message: Notice) -> None:
        self.query_one(Keyboard).notice(message.text)

    # Keys ---------------------------------------------------------------------

    def action_chip(self, index: int) -> None:
        """Accept chip `index` (0-based)."""
        self.query_one(Keyboard).choose_chip(index)

    def action_cycle_source(self) -> None:
        """Switch between the global, personalised and central models."""
        self.query_one(Keyboard).cycle_source()

    def action_toggle_personal(self) -> None:
        """Show or hide this phone's personalised suggestions beside the global."""
        self.query_one(Keyboard).toggle_personal()

    def action_open_phones(self) -> None:
        """Open the fleet's phones: profiles and metrics on their future text."""
        if self.fleet is not None:
            self.push_screen(FleetScreen(self.fleet))

    def action_save_screenshot(self) -> None:
        """Save an SVG of the screen in the run's directory, and say where."""
        folder = Path(self.fleet.name) if self.fleet is not None else Path.cwd()
        if not folder.is_dir():
            folder = Path.cwd()
        path = self.save_screenshot(path=str(folder))
        self.query_one(Keyboard).notice(f"screenshot saved: {path}")

    def action_help(self) -> None:
        """Explain the dashboard's terms."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        """Stop training and leave."""
        self.paused = True
        if self.fleet is not None:
            self.fleet.close()
        self.exit()
