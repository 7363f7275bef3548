"""The strip of three suggestion chips under the text field, as on a phone keyboard."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.events import Click
from textual.message import Message
from textual.widgets import Static

CHIP_KEYS = ("F1", "F2", "F3")


class Chip(Static):
    """One suggestion: its key and its word; empty when there is none."""

    DEFAULT_CSS = """
    Chip {
        width: 1fr;
        height: 3;
        border: round $primary 60%;
        padding: 0 1;
        content-align: center middle;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    Chip.-empty {
        border: round $panel-lighten-2;
        color: $text-disabled;
    }
    Chip:hover {
        background: $boost;
    }
    """

    def __init__(self, index: int, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self.index = index
        self.word = ""

    def show_word(self, word: str) -> None:
        """Display `word` (or nothing) with this chip's key in the border."""
        if word == self.word and self.border_title:
            return
        self.word = word
        self.set_class(not word, "-empty")
        self.border_title = CHIP_KEYS[self.index]
        # A chip's size never changes: skipping the layout pass keeps typing light.
        self.update(word, layout=False)

    def on_click(self, event: Click) -> None:
        if self.word:
            self.post_message(ChipStrip.Chosen(self.index, self.word))


class ChipStrip(Horizontal):
    """Three chips showing the current top-3 words; reports which one is chosen."""

    DEFAULT_CSS = """
    ChipStrip {
        height: 3;
    }
    """

    @dataclass
    class Chosen(Message):
        """A chip was picked (by click or key): insert `word`."""

        index: int
        word: str

    def compose(self) -> ComposeResult:
        for index in range(len(CHIP_KEYS)):
            yield Chip(index, id=f"chip-{index + 1}")

    def on_mount(self) -> None:
        self.show_words([])

    @property
    def words(self) -> list[str]:
        """The words shown now, best first (empty strings for empty chips)."""
        return [chip.word for chip in self.query(Chip)]

    def show_words(self, words: list[str]) -> None:
        """Show up to three words, best first; missing ones leave empty chips."""
        padded = [*words[: len(CHIP_KEYS)], *[""] * len(CHIP_KEYS)]
        for chip, word in zip(self.query(Chip), padded, strict=False):
            chip.show_word(word)

    def choose(self, index: int) -> None:
        """Post `Chosen` for chip `index` if it holds a word."""
        words = self.words
        if 0 <= index < len(words) and words[index]:
            self.post_message(self.Chosen(index, words[index]))
