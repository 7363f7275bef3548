"""The keyboard column: the text field, the chips, and the panels under them.

It asks `SuggestionSources` for the chips on every keystroke, in the keystroke's
own frame, and fills the slower panels (earlier rounds, this phone's own words)
once typing rests. It knows nothing of training: the app hands it sources and
tells it when a model changed; it posts `Keyboard.Sent` when Enter sends.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from textual import events, on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, Static

from tui.chips import ChipStrip
from tui.ghost import GhostSuggester, refresh_ghost
from tui.phone_panel import PhonePanel
from tui.rounds_panel import RoundsPanel
from tui.sources import RoundHistory, SuggestionSources, insert_word

# Seconds after the last keystroke before the panels below the chips follow.
PANELS_DELAY_S = 0.12
# Longest message the field takes; longer pastes are cut (a phone's SMS limit is
# far lower), which keeps every keystroke's work bounded.
MAX_MESSAGE_CHARS = 2000
SOURCE_LABELS = {
    "global": "the fleet's global model",
    "personal": "this phone's own model",
    "central": "the central baseline",
}
Handler = TypeVar("Handler", bound=Callable[..., None])


def while_mounted(method: Handler) -> Handler:
    """Skip a handler whose widgets are gone: a round, a timer or a fine-tune may
    report back while the app is shutting down."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> None:
        try:
            method(*args, **kwargs)
        except NoMatches:
            return

    return call  # type: ignore[return-value]


class PhoneField(Input):
    """The text field. A paste joins its lines and is cut to the room left, where
    Textual's `Input` would refuse a paste longer than `max_length` outright."""

    def _on_paste(self, event: events.Paste) -> None:
        event.stop()
        start, end = sorted(self.selection)
        room = MAX_MESSAGE_CHARS - len(self.value) + (end - start)
        text = " ".join(event.text.splitlines())[: max(0, room)]
        if text:
            self.replace(text, start, end)


class Keyboard(Vertical):
    """The field, three chips, the source line, and the panels below."""

    DEFAULT_CSS = """
    Keyboard {
        height: 1fr;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
        & > #field {
            /* A fixed height spares a layout pass on every keystroke. */
            height: 3;
            border: tall $primary;
        }
        & > #source {
            height: 1;
            padding: 0 1;
            color: $text-muted;
        }
        & > #notice {
            height: auto;
            max-height: 3;
            padding: 0 1;
            color: $warning;
            display: none;
        }
        & > #notice.-shown {
            display: block;
        }
    }
    """

    @dataclass
    class Sent(Message):
        """Enter sent `text` (already stripped, never empty)."""

        text: str

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.sources: SuggestionSources | None = None
        self.history: RoundHistory | None = None
        self.server_round = 0
        self.personal_note = "send messages first"
        self._panels_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield PhoneField(
            placeholder="Type as on a phone; Enter sends",
            suggester=GhostSuggester(self.best_word),
            max_length=MAX_MESSAGE_CHARS,
            id="field",
        )
        yield ChipStrip(id="chips")
        yield Static("", id="source")
        yield Static("", id="notice")
        yield RoundsPanel(id="rounds")
        yield PhonePanel(id="phone")

    def on_mount(self) -> None:
        field = self.query_one("#field", Input)
        field.focus()
        self.watch(field, "value", self._typed, init=False)

    def attach(
        self, sources: SuggestionSources, history: RoundHistory, server_round: int
    ) -> None:
        """Suggest from `sources` from now on; `history` fills the rounds panel."""
        self.sources, self.history = sources, history
        self.model_changed(server_round, ghost=False)

    def model_changed(self, server_round: int, *, ghost: bool = True) -> None:
        """A source's model changed (a round, a fine-tune): redraw everything."""
        self.server_round = server_round
        self.refresh_suggestions(ghost=ghost)

    def best_word(self, text: str) -> str | None:
        """The active source's best word for `text` (the ghost text's source)."""
        words = self.sources.suggest(text, k=1) if self.sources else []
        return words[0] if words else None

    def _typed(self, value: str) -> None:
        # Watched, not waiting for Input.Changed to bubble up: the chips then
        # change in the same frame as the letter. The panels below need no such
        # hurry and follow once typing pauses.
        self.refresh_suggestions(panels=False)
        if self._panels_timer is not None:
            self._panels_timer.stop()
        self._panels_timer = self.set_timer(PANELS_DELAY_S, self.refresh_panels)

    @while_mounted
    def refresh_suggestions(self, *, ghost: bool = False, panels: bool = True) -> None:
        """Redraw the chips for the field's text; `ghost` also the ghost text (the
        field renews it itself on each keystroke), `panels` also the panels."""
        if self.sources is None:
            return
        field = self.query_one("#field", Input)
        if ghost:
            refresh_ghost(field, self.best_word)
        self.query_one(ChipStrip).show_words(self.sources.suggest(field.value))
        source = self.sources.active
        label = SOURCE_LABELS[source]
        if source == "global":
            label += f", round {self.server_round}"
        self.query_one("#source", Static).update(f"from {label}", layout=False)
        if panels:
            self.refresh_panels()

    @while_mounted
    def refresh_panels(self) -> None:
        """The earlier rounds' words and this phone's own, for the field's text."""
        if self.sources is None or self.history is None:
            return
        text = self.query_one("#field", Input).value
        rows = [
            (f"round {r}", self.history.suggest(r, text))
            for r in self.history.rounds_before(self.server_round)
        ]
        now = self.sources.suggest(text, source="global")
        rows.append((f"now ({self.server_round})", now))
        self.query_one(RoundsPanel).show_rows(rows)
        panel = self.query_one(PhonePanel)
        if panel.show_personal:
            words = self.sources.suggest(text, source="personal")
            panel.set_personal(words, self.personal_note)

    @on(ChipStrip.Chosen)
    def _chip_chosen(self, event: ChipStrip.Chosen) -> None:
        field = self.query_one("#field", Input)
        field.value = insert_word(field.value, event.word) + " "
        field.cursor_position = len(field.value)
        field.focus()

    @on(Input.Submitted, "#field")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if text:
            event.input.clear()
            self.post_message(self.Sent(text))

    def choose_chip(self, index: int) -> None:
        """Accept chip `index` (0-based) if it holds a word."""
        self.query_one(ChipStrip).choose(index)

    def cycle_source(self) -> None:
        """Switch between the global, personalised and central models."""
        if self.sources is not None:
            self.sources.cycle()
            self.refresh_suggestions(ghost=True)

    def toggle_personal(self) -> None:
        """Show or hide this phone's personalised words beside the global ones."""
        self.query_one(PhonePanel).toggle_personal()
        self.refresh_suggestions()

    def show_messages(self, messages: list[str]) -> None:
        """This phone's stored history, oldest first."""
        self.query_one(PhonePanel).set_history(messages)

    def notice(self, text: str) -> None:
        """A line under the chips for something the user should know."""
        notice = self.query_one("#notice", Static)
        notice.update(text)
        notice.set_class(bool(text), "-shown")
