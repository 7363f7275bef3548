"""A titled panel of the keyboard's side column: a bordered `Static` with a title.

The rounds, this-phone and server-saw panels share the frame; each picks its
border colour and draws its own content.
"""

from __future__ import annotations

from textual.widgets import Static


class Panel(Static):
    """A `Static` in a rounded border whose title names what it shows."""

    # The border title of each kind of panel.
    TITLE = ""

    DEFAULT_CSS = """
    Panel {
        border-title-color: $text-muted;
        padding: 0 1;
        height: auto;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.border_title = self.TITLE
