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
        "sent in all",
        "The bytes of every round so far added up, both ways: what the fleet has "
        "cost the phones' networks since the run began.",
    ),
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
    (
        "ε / no DP",
        "The differential-privacy budget this fleet's phones have spent so far "
        '(with its δ): lower is more private, and it only grows. "no DP": the '
        "run adds no noise, so no guarantee is accounted.",
    ),
    (
        "what the server saw",
        "A curious server's attempt to read the words typed from what it "
        "received this round: one phone's update without secure aggregation, "
        "only the round's sum with it, a noisy sum under DP. Precision: the share "
        "of the words it guessed that were really typed; recall: the share of "
        "the typed words it found.",
    ),
)
# Every key of the keyboard screen, as its footer abbreviates them.
KEY_ROWS: tuple[tuple[str, str], ...] = (
    ("F1-F3, Tab", "accept a chip (Tab: the first), with a space"),
    ("→", "accept the faded ghost text, with a space"),
    ("Enter", "send: the message joins this phone's own history"),
    ("F5", "pause training after this round, or resume"),
    ("F6", "suggestions from the global, this phone's or the central model"),
    ("F7", "this phone's own suggestions beside the global ones"),
    ("F8", "the fleet's phones: a profile and metrics, never their text"),
    ("F9", "this help"),
    ("F12", "save a screenshot (SVG) in the run's directory"),
    ("Ctrl+Q", "quit; the run resumes where it stopped next time"),
)


def help_table(rows: tuple[tuple[str, str], ...] = TERMS) -> Table:
    """Terms (or keys) and their explanations as a two-column table."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True, max_width=24)
    table.add_column()
    for term, explanation in rows:
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
    HelpScreen #help-keys-title { margin-top: 1; }
    HelpScreen #help-close { color: $text-muted; margin-top: 1; }
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
                yield Static(Text("Keys", style="bold"), id="help-keys-title")
                yield Static(help_table(KEY_ROWS), id="help-keys")
            yield Static("Esc or F9 closes", id="help-close")

    def plain_text(self) -> str:
        """The terms, then the keys, as plain text, one a line."""
        rows = (*TERMS, *KEY_ROWS)
        return "\n".join(f"{term}: {explanation}" for term, explanation in rows)
