"""Ghost text: the most likely completion shown faded after the cursor.

Textual's `Input` asks a `textual.suggester.Suggester` for the whole string it would
become and shows the part past what was typed; the right arrow accepts it.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.suggester import Suggester, SuggestionReady
from textual.widgets import Input

from tui.sources import insert_word


class GhostSuggester(Suggester):
    """Completes the field's value with the active source's best word.

    The cache is off because the model changes every round, and the value is not
    case-folded so that the completion keeps what the user typed.
    """

    def __init__(self, best_word: Callable[[str], str | None]) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self._best_word = best_word

    async def get_suggestion(self, value: str) -> str | None:
        """The whole value with the best word completed, or None."""
        return ghost_completion(value, self._best_word(value))


def ghost_completion(value: str, word: str | None) -> str | None:
    """`value` completed by `word` and a space, when that only adds text after
    `value`: the right arrow then accepts a word as Tab and F1 do, space included
    ("see you tomor", →, "X" gives "see you tomorrow X")."""
    if not word:
        return None
    completed = insert_word(value, word)
    if len(completed) <= len(value) or not completed.startswith(value):
        return None
    return completed + " "


def refresh_ghost(field: Input, best_word: Callable[[str], str | None]) -> None:
    """Recompute the ghost text for the field's value after the model changed.

    The field only asks its suggester when its value changes; a new round or
    source must not leave the old model's completion showing. An empty
    completion (the value itself) clears the ghost.
    """
    value = field.value
    if value:
        completion = ghost_completion(value, best_word(value)) or value
        field.post_message(SuggestionReady(value, completion))
