"""A dialog over the keyboard: the frame and the close action of the modal screens.

The phone list (F8) and the help (F9) are both a bordered box in the middle of
the screen that Escape closes; each sets its own size and content.
"""

from __future__ import annotations

from textual.screen import ModalScreen


class Dialog(ModalScreen[None]):
    """A modal screen whose first `Vertical` is a centred, bordered box."""

    DEFAULT_CSS = """
    Dialog {
        align: center middle;
    }
    Dialog > Vertical {
        border: thick $secondary;
        background: $surface;
        padding: 0 1;
    }
    """

    def action_close(self) -> None:
        """Back to the keyboard."""
        self.dismiss(None)
