"""Where suggestions come from: the global model, this phone's, the central one.

The app asks `SuggestionSources` for words and never touches a model itself, so
switching source is one call and a new round is one `set_model`. `RoundHistory`
keeps the global models of a few earlier rounds for the "over rounds" panel.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from corpora.tokenizer import PARTIAL_WORD, WordTokenizer
from models.suggest import Suggester

SOURCES = ("global", "personal", "central")
# The model reads at most a few dozen tokens, so a pasted book is cut to its tail
# (at a space, so no word is cut in half) before it is tokenized on every keystroke.
CONTEXT_CHARS = 400
# Earlier rounds the history panel shows, besides the current one.
HISTORY_ROUNDS = (1, 5, 20)


def context_tail(text: str, limit: int = CONTEXT_CHARS) -> str:
    """The end of `text` that the model can use, cut at a space when long."""
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    space = tail.find(" ")
    return tail[space + 1 :] if 0 <= space < len(tail) - 1 else tail


def insert_word(text: str, word: str) -> str:
    """`text` with its unfinished word replaced by `word` (or `word` appended)."""
    partial = PARTIAL_WORD.search(text)
    if partial:
        return text[: partial.start()] + word
    if not text or text[-1].isspace():
        return text + word
    return f"{text} {word}"


class SuggestionSources:
    """One `Suggester` per source and the name of the active one."""

    def __init__(self, tokenizer: WordTokenizer, global_model: nn.Module) -> None:
        self.tokenizer = tokenizer
        self._suggesters: dict[str, Suggester] = {
            "global": Suggester(global_model, tokenizer)
        }
        self.active = "global"
        self.last_error: str | None = None

    def available(self) -> list[str]:
        """The sources that have a model now, in `SOURCES` order."""
        return [name for name in SOURCES if name in self._suggesters]

    def set_model(
        self, source: str, model: nn.Module, tokenizer: WordTokenizer | None = None
    ) -> None:
        """Use `model` for `source` from now on (a new round, a new fine-tune)."""
        tokenizer = tokenizer or self.tokenizer
        current = self._suggesters.get(source)
        if current is not None and tokenizer is self.tokenizer:
            current.set_model(model)
        else:
            self._suggesters[source] = Suggester(model, tokenizer)

    def cycle(self) -> str:
        """Switch to the next available source and return its name."""
        names = self.available()
        index = names.index(self.active) if self.active in names else -1
        self.active = names[(index + 1) % len(names)]
        return self.active

    def suggest(self, text: str, k: int = 3, source: str | None = None) -> list[str]:
        """Up to `k` words for `text` from `source` (default: the active one).

        Never raises: a failure gives no suggestions and is kept in `last_error`.
        """
        suggester = self._suggesters.get(source or self.active)
        if suggester is None:
            return []
        try:
            return suggester.suggest(context_tail(text), k=k)
        except Exception as error:  # any model failure must not reach the keyboard
            self.last_error = f"{type(error).__name__}: {error}"
            return []


def pick_rounds(
    available: list[int],
    current: int,
    wanted: tuple[int, ...] = HISTORY_ROUNDS,
    limit: int = len(HISTORY_ROUNDS),
) -> list[int]:
    """Up to `limit` earlier rounds to show: the `wanted` ones that were kept,
    filled up with kept rounds evenly spread over the run, ascending."""
    earlier = sorted({r for r in available if 0 < r < current})
    chosen = [r for r in wanted if r in earlier][:limit]
    if len(chosen) < limit and earlier:
        step = max(1, len(earlier) // limit)
        for r in earlier[::step]:
            if len(chosen) >= limit:
                break
            if r not in chosen:
                chosen.append(r)
    return sorted(chosen)


class RoundHistory:
    """The global models of a few earlier rounds, each loaded once."""

    def __init__(
        self,
        tokenizer: WordTokenizer,
        model_at: Callable[[int], nn.Module],
        kept_rounds: Callable[[], list[int]],
        wanted: tuple[int, ...] = HISTORY_ROUNDS,
    ) -> None:
        self.tokenizer = tokenizer
        self.wanted = wanted
        self._model_at = model_at
        self._kept_rounds = kept_rounds
        self._available: set[int] = set()
        self._suggesters: dict[int, Suggester | None] = {}

    def remember(self, server_round: int, model: nn.Module) -> None:
        """Keep a wanted round's model in memory: the run may prune its checkpoint."""
        if server_round in self.wanted:
            self._suggesters[server_round] = Suggester(model, self.tokenizer)
            self._available.add(server_round)

    def prepare(self, server_round: int) -> None:
        """Load the kept models the panel will need once `server_round` is done.

        Reads checkpoints: call it off the UI thread (the training worker does).
        """
        self._available = set(self._kept_rounds()) | set(self._in_memory())
        shown = self.rounds_before(server_round)
        for earlier in shown:
            if earlier not in self._suggesters:
                self._suggesters[earlier] = self._load(earlier)
        # Models no longer shown are let go (a wanted round's is kept: its
        # checkpoint may be pruned), so memory stays at a few models a run.
        for held in set(self._suggesters) - set(shown) - set(self.wanted):
            del self._suggesters[held]

    def rounds_before(self, server_round: int) -> list[int]:
        """The earlier rounds the panel shows, ascending."""
        return pick_rounds(sorted(self._available), server_round, self.wanted)

    def suggest(self, server_round: int, text: str, k: int = 3) -> list[str]:
        """What the global model of `server_round` suggests; [] if not loaded."""
        suggester = self._suggesters.get(server_round)
        if suggester is None:
            return []
        try:
            return suggester.suggest(context_tail(text), k=k)
        except Exception:  # an old model failing must not reach the keyboard
            return []

    def _in_memory(self) -> list[int]:
        return [r for r, s in self._suggesters.items() if s is not None]

    def _load(self, server_round: int) -> Suggester | None:
        try:
            model = self._model_at(server_round)
        except Exception:  # pruned or unreadable checkpoint: show nothing for it
            return None
        return None if model is None else Suggester(model, self.tokenizer)
