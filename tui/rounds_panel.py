"""What the global model of earlier rounds would suggest for the text in the field.

One row a round ("round 1", "round 5", ..., "now"), so the user sees suggestions get
better without waiting for the next round.
"""

from __future__ import annotations

from rich.table import Table

from tui.panel import Panel


class RoundsPanel(Panel):
    """A small table: round, and that round's top-3 words for the current text."""

    TITLE = "Suggestions over rounds"
    DEFAULT_CSS = """
    RoundsPanel {
        border: round $primary 50%;
        min-height: 3;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[tuple[str, list[str]]] = []

    def show_rows(self, rows: list[tuple[str, list[str]]]) -> None:
        """Rows of (label, words), oldest round first."""
        # Only a new row changes the panel's height; new words need no layout.
        layout = len(rows) != len(self.rows) or not self.rows
        self.rows = rows
        table = Table.grid(padding=(0, 2))
        table.add_column(style="dim", no_wrap=True)
        table.add_column(no_wrap=True, overflow="ellipsis")
        for label, words in rows:
            table.add_row(label, " · ".join(words) if words else "–")
        if not rows:
            table.add_row("", "no rounds yet")
        self.update(table, layout=layout)
