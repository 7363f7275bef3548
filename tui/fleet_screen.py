"""Open a phone of the fleet: its device profile and the model's metrics on its
own future text. The text itself stays on the phone and is never shown.

Every phone is listed (a `DataTable` holds thousands of rows), and "/" searches
them by id."""

from __future__ import annotations

from rich.table import Table
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Static

from tui.dialog import Dialog
from tui.fleet import THIS_PHONE, DemoFleet, PhoneFacts

EXPLAIN = (
    "Choose a phone to see its device profile and how well the current global\n"
    "model predicts its future messages. The metrics are computed on the\n"
    "phone; its text never leaves it and is not shown here."
)


def phone_label(client_id: str) -> str:
    """A short list label: client ids are long hashes."""
    return "this phone" if client_id == THIS_PHONE else client_id[:12]


def list_hint(phones: int, shown: int | None = None) -> str:
    """The line above the list: how many phones there are (and match a search)."""
    keys = "↑↓ choose, / search by id, Esc back"
    if shown is None or shown == phones:
        return f"{phones:,} phones: {keys}"
    return f"{shown:,} of {phones:,} phones match: {keys}"


def matches(client_id: str, query: str) -> bool:
    """Whether a search (any part of the id, or "this phone") finds the phone."""
    query = query.strip().lower()
    return not query or query in client_id.lower() or query in phone_label(client_id)


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
        width: 22;
        height: 1fr;
    }
    FleetScreen #phone-search {
        height: 3;
        width: 40;
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
    BINDINGS = [
        Binding("escape,f8", "close", "Back"),
        Binding("slash", "search", "Search", key_display="/"),
    ]

    def __init__(self, fleet: DemoFleet) -> None:
        super().__init__()
        self.fleet = fleet
        # Every phone, this phone first, in the list's order.
        self.phone_ids: list[str] = []
        # The facts shown now as plain text (for tests and screen readers).
        self.facts_text = ""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("loading the fleet's phones…", id="fleet-hint")
            yield Input(placeholder="/ search by phone id", id="phone-search")
            with Horizontal():
                yield DataTable(id="phone-list", cursor_type="row")
                yield Static(EXPLAIN, id="phone-facts")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("#", "phone")
        table.focus()
        self._list_phones()

    def action_search(self) -> None:
        """Type part of a phone's id; Enter goes back to the list."""
        self.query_one("#phone-search", Input).focus()

    @on(Input.Changed, "#phone-search")
    def _search(self, event: Input.Changed) -> None:
        self._show_rows(event.value)

    @on(Input.Submitted, "#phone-search")
    def _searched(self) -> None:
        self.query_one(DataTable).focus()

    def _show_rows(self, query: str) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for index, client_id in enumerate(self.phone_ids):
            if matches(client_id, query):
                table.add_row(str(index), phone_label(client_id), key=client_id)
        self.query_one("#fleet-hint", Static).update(
            list_hint(len(self.phone_ids), table.row_count)
        )

    @work(thread=True, exclusive=True, group="phone-list", exit_on_error=False)
    def _list_phones(self) -> None:
        try:
            ids = self.fleet.phone_ids()
        except Exception as error:  # the trainer may have stopped
            self.app.call_from_thread(self._show_error, "the fleet", str(error))
            return
        self.app.call_from_thread(self._fill, ids)

    def _fill(self, ids: list[str]) -> None:
        self.phone_ids = sorted(ids, key=lambda c: c != THIS_PHONE)
        self._show_rows(self.query_one("#phone-search", Input).value)

    def highlighted_id(self) -> str | None:
        """The client_id of the row under the cursor, None in an empty list."""
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return None if key.value is None else str(key.value)

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        client_id = event.row_key.value
        if client_id is not None:
            self.query_one("#phone-facts", Static).update(
                f"{client_id}\nmeasuring the model on its future text…"
            )
            self._measure(str(client_id))

    @work(thread=True, exclusive=True, group="phone-facts", exit_on_error=False)
    def _measure(self, client_id: str) -> None:
        try:
            facts = self.fleet.phone_facts(client_id)
        except Exception as error:  # a phone that cannot be read is reported
            self.app.call_from_thread(self._show_error, client_id, str(error))
            return
        self.app.call_from_thread(self._show, facts)

    def _show(self, facts: PhoneFacts) -> None:
        if self.highlighted_id() == facts.client_id:
            rows = [*facts.profile, *(facts.metrics or [("future text", "none")])]
            self.facts_text = "\n".join(f"{name}: {value}" for name, value in rows)
            self.query_one("#phone-facts", Static).update(facts_table(facts))

    def _show_error(self, client_id: str, message: str) -> None:
        self.query_one("#phone-facts", Static).update(f"{client_id}: {message}")
