"""Open a phone of the fleet: its device profile and the model's metrics on its
own future text. The text itself stays on the phone and is never shown."""

from __future__ import annotations

from rich.table import Table
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from tui.dialog import Dialog
from tui.fleet import THIS_PHONE, DemoFleet, PhoneFacts

# Phones listed at most: the list is for browsing, not for the whole fleet.
MAX_LISTED = 500
EXPLAIN = (
    "Choose a phone to see its device profile and how well the current global\n"
    "model predicts its future messages. The metrics are computed on the\n"
    "phone; its text never leaves it and is not shown here."
)


def phone_label(index: int, client_id: str) -> str:
    """A short list label: client ids are long hashes."""
    if client_id == THIS_PHONE:
        return "this phone"
    return f"{index:>3}  {client_id[:8]}"


def list_hint(phones: int) -> str:
    """The line above the list: how many phones there are and how many are listed."""
    if phones > MAX_LISTED:
        return f"{phones:,} phones, the first {MAX_LISTED} listed: ↑↓ choose, Esc back"
    return f"{phones:,} phones: ↑↓ choose, Esc back"


def facts_table(facts: PhoneFacts) -> Table:
    """A phone's profile and metrics as a two-column grid."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    table.add_row("phone", facts.client_id)
    for name, value in facts.profile:
        table.add_row(name, value)
    table.add_row("", "")
    if facts.metrics is None:
        table.add_row("future text", "none on this phone")
    else:
        table.add_row("global model", f"round {facts.server_round}")
        table.add_row("measured on", f"its next {facts.future_messages} messages")
        for name, value in facts.metrics:
            table.add_row(name, value)
    return table


class FleetScreen(Dialog):
    """A list of phones; choosing one shows its profile and metrics."""

    DEFAULT_CSS = """
    FleetScreen > Vertical {
        width: 96%;
        max-width: 100;
        height: 90%;
    }
    FleetScreen #phone-list {
        width: 20;
        height: 1fr;
    }
    FleetScreen #phone-facts {
        width: 1fr;
        height: 1fr;
        padding: 0 1;
        overflow-y: auto;
    }
    FleetScreen #fleet-hint {
        height: 1;
        color: $text-muted;
    }
    """
    BINDINGS = [Binding("escape,f8", "close", "Back")]

    def __init__(self, fleet: DemoFleet) -> None:
        super().__init__()
        self.fleet = fleet
        # The facts shown now as plain text (for tests and screen readers).
        self.facts_text = ""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("loading the fleet's phones…", id="fleet-hint")
            with Horizontal():
                yield OptionList(id="phone-list")
                yield Static(EXPLAIN, id="phone-facts")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()
        self._list_phones()

    @work(thread=True, exclusive=True, group="phone-list", exit_on_error=False)
    def _list_phones(self) -> None:
        try:
            ids = self.fleet.phone_ids()
        except Exception as error:  # the trainer may have stopped
            self.app.call_from_thread(self._show_error, "the fleet", str(error))
            return
        self.app.call_from_thread(self._fill, ids)

    def _fill(self, ids: list[str]) -> None:
        shown = sorted(ids, key=lambda c: c != THIS_PHONE)[:MAX_LISTED]
        self.query_one(OptionList).add_options(
            Option(phone_label(i, c), id=c) for i, c in enumerate(shown)
        )
        self.query_one("#fleet-hint", Static).update(list_hint(len(ids)))

    @on(OptionList.OptionHighlighted)
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id is not None:
            self.query_one("#phone-facts", Static).update(
                f"{event.option.id}\nmeasuring the model on its future text…"
            )
            self._measure(event.option.id)

    @work(thread=True, exclusive=True, group="phone-facts", exit_on_error=False)
    def _measure(self, client_id: str) -> None:
        try:
            facts = self.fleet.phone_facts(client_id)
        except Exception as error:  # a phone that cannot be read is reported
            self.app.call_from_thread(self._show_error, client_id, str(error))
            return
        self.app.call_from_thread(self._show, facts)

    def _show(self, facts: PhoneFacts) -> None:
        highlighted = self.query_one(OptionList).highlighted_option
        if highlighted is not None and highlighted.id == facts.client_id:
            rows = [*facts.profile, *(facts.metrics or [("future text", "none")])]
            self.facts_text = "\n".join(f"{name}: {value}" for name, value in rows)
            self.query_one("#phone-facts", Static).update(facts_table(facts))

    def _show_error(self, client_id: str, message: str) -> None:
        self.query_one("#phone-facts", Static).update(f"{client_id}: {message}")
