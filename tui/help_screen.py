"""The help screen (F9): what the dashboard's words and numbers mean.

F9, not `?`: the text field takes every printable key, and F1-F3 accept chips.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from tui.dialog import Dialog

# (term, explanation) rows, in the dashboard's order.
TERMS: tuple[tuple[str, str], ...] = (
    (
        "13 phones picked, 10 in",
        "The server picks more phones than it needs each round (13), since some "
        "go offline or miss the deadline; 10 reported an update in time.",
    ),
    ("dropped", "Picked phones that never answered: unplugged, off Wi-Fi, too slow."),
    (
        "rejected",
        "Updates that arrived but failed screening (broken numbers, far too "
        "large), so the round left them out.",
    ),
    ("↓ ↑", "Bytes the server sent the phones (the model) and they sent back."),
    (
        "top-3",
        "How often the next word typed by held-out users (never in training) is "
        "among the three chips. The charts draw it on a fixed axis, 0 to 40 %.",
    ),
    (
        "keys",
        "Keystroke savings: the share of key presses a user saves by tapping a "
        "chip as soon as it shows the word being typed.",
    ),
    (
        "perplexity",
        "How surprised the model is by the held-out text, on average: the number "
        "of equally likely words it is choosing between. Lower is better.",
    ),
    (
        "unigram",
        "The yellow mark: a model with no context that always offers the most "
        "frequent words. A model below it has learned nothing yet.",
    ),
    (
        "central",
        "The same model trained on one server on the pooled text of the same "
        "users, after every round up to as many training words as the fleet. "
        "It saw every user's text; the fleet's server saw only model updates. "
        "The gap between the two lines is what keeping the text on the phones "
        "costs in accuracy.",
    ),
)
KEYS = "F1-F3/Tab chips · → ghost text · Enter send · F5 pause · F6 source · F7 mine"


def help_table() -> Table:
    """The terms and their explanations as a two-column table."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True, max_width=24)
    table.add_column()
    for term, explanation in TERMS:
        table.add_row(term, explanation)
    return table


class HelpScreen(Dialog):
    """Explains the dashboard; Escape or F9 closes it."""

    DEFAULT_CSS = """
    HelpScreen > Vertical {
        width: 90;
        max-width: 95%;
        height: auto;
        max-height: 90%;
    }
    HelpScreen VerticalScroll { height: auto; max-height: 1fr; }
    HelpScreen #help-keys { color: $text-muted; margin-top: 1; }
    """
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("f9", "close", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text("What the dashboard shows", style="bold"))
            with VerticalScroll():
                yield Static(help_table(), id="help-terms")
            yield Static(KEYS + " · F8 phones · Esc closes", id="help-keys")

    def plain_text(self) -> str:
        """The terms and explanations as plain text, one term a line."""
        return "\n".join(f"{term}: {explanation}" for term, explanation in TERMS)
