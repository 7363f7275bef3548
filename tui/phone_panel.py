"""This phone: the private history kept on this device, and its own suggestions."""

from __future__ import annotations

from rich.text import Text

from tui.panel import Panel


class PhonePanel(Panel):
    """How much history this phone keeps, and its personalised words when shown."""

    TITLE = "This phone"
    DEFAULT_CSS = """
    PhonePanel {
        border: round $accent 50%;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.num_messages = 0
        self.last_message = ""
        self.show_personal = False
        self.personal_words: list[str] = []
        self.personal_note = ""
        self._lines = 0

    def on_mount(self) -> None:
        self._draw()

    def set_history(self, messages: list[str]) -> None:
        """This phone's stored messages, oldest first."""
        self.num_messages = len(messages)
        self.last_message = messages[-1] if messages else ""
        self._draw()

    def set_personal(self, words: list[str], note: str) -> None:
        """The personalised model's words for the text, and where the model stands."""
        self.personal_words = words
        self.personal_note = note
        self._draw()

    def toggle_personal(self) -> bool:
        """Show or hide the personalised suggestions; returns whether shown."""
        self.show_personal = not self.show_personal
        self._draw()
        return self.show_personal

    def _draw(self) -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        plural = "" if self.num_messages == 1 else "s"
        text.append(f"{self.num_messages} message{plural} kept on this device only")
        if self.show_personal:
            text.append("\npersonal: ", "dim")
            words = " · ".join(self.personal_words) or "–"
            text.append(words, "bold")
            if self.personal_note:
                text.append(f"  ({self.personal_note})", "dim")
        text.append("\nlast sent: ", "dim")
        text.append(self.last_message or "nothing yet: type and press Enter")
        # Only showing or hiding the personal row changes the height.
        lines = 3 if self.show_personal else 2
        self.update(text, layout=lines != self._lines)
        self._lines = lines
