"""A modal that says why the run cannot be opened and offers a fresh fleet."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ProblemScreen(ModalScreen[bool]):
    """Dismisses with True to start a fresh fleet, False to quit."""

    DEFAULT_CSS = """
    ProblemScreen {
        align: center middle;
    }
    ProblemScreen > Vertical {
        width: 70;
        max-width: 95%;
        height: auto;
        border: thick $error;
        background: $surface;
        padding: 1 2;
    }
    ProblemScreen #problem, ProblemScreen #fresh-note {
        margin-bottom: 1;
    }
    ProblemScreen Horizontal {
        height: auto;
        align: center middle;
    }
    ProblemScreen Button {
        margin: 0 1;
    }
    """
    # No letter keys: the user may still be typing when this opens.
    BINDINGS = [Binding("escape", "quit_demo", "Quit")]

    def __init__(
        self, message: str, *, offer_fresh: bool, fresh_where: str = ""
    ) -> None:
        super().__init__()
        self.message = message
        self.offer_fresh = offer_fresh
        self.fresh_where = fresh_where

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("[b]The run cannot be opened[/b]")
            yield Static(self.message, id="problem", markup=False)
            if self.offer_fresh:
                where = f" in {self.fresh_where}" if self.fresh_where else ""
                yield Static(
                    f"A fresh fleet starts{where}; the run above is left as it is.",
                    id="fresh-note",
                    markup=False,
                )
            with Horizontal():
                if self.offer_fresh:
                    yield Button("Start a fresh fleet", variant="primary", id="fresh")
                yield Button("Quit (Esc)", variant="error", id="quit")

    @on(Button.Pressed, "#fresh")
    def action_fresh(self) -> None:
        """Start a fresh fleet instead."""
        if self.offer_fresh:
            self.dismiss(True)

    @on(Button.Pressed, "#quit")
    def action_quit_demo(self) -> None:
        """Leave the demo."""
        self.dismiss(False)
