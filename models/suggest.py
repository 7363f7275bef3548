"""Keyboard suggestions: the next word after a space, completions inside a word.

Every suggestion for one word position comes from a single next-token
distribution, the model's output after the text before the word. Typing more
letters of the same word only narrows that distribution to the words starting
with the typed prefix, so the `Suggester` caches it and a keystroke inside a word
costs a binary search and a top-k over a slice of a sorted array. `WordIndex`
holds that sorted array; `models.metrics` ranks words with it too, so the
keystroke-savings metric simulates exactly the strip this module fills.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from corpora.tokenizer import PARTIAL_WORD, WORD, WordTokenizer

# After these a new sentence starts and the next word is capitalised.
_SENTENCE_END = frozenset(".!?")
# Only this much of a long text is read: far more than the context window needs.
_TAIL_CHARS = 2000
_LAST_CODE_POINT = chr(0x10FFFF)


class WordIndex:
    """The suggestible words of a vocabulary in sorted order, for prefix queries.

    Scores handed to its methods are arrays over `ids`, in the index's sorted
    order. Ties in score are broken alphabetically, so rankings are deterministic.
    """

    def __init__(self, tokenizer: WordTokenizer) -> None:
        pairs = sorted((tokenizer.id_to_token[i], i) for i in tokenizer.word_ids)
        self.words: list[str] = [word for word, _ in pairs]
        self.ids = np.array([i for _, i in pairs], dtype=np.int64)  # (W,)
        self.ids_tensor = torch.from_numpy(self.ids)
        # Token id -> position in `words`, or -1 for specials and punctuation.
        self.position_of = np.full(tokenizer.vocab_size, -1, dtype=np.int64)
        self.position_of[self.ids] = np.arange(len(self.ids))

    def span(self, prefix: str) -> tuple[int, int]:
        """The half-open range of positions of the words starting with `prefix`."""
        if not prefix:
            return 0, len(self.words)
        low = bisect_left(self.words, prefix)
        return low, bisect_left(self.words, prefix + _LAST_CODE_POINT, lo=low)

    def top_k(self, scores: np.ndarray, prefix: str, k: int) -> list[int]:
        """Positions of the `k` best words starting with `prefix`, best first."""
        low, high = self.span(prefix)
        if k <= 0 or low >= high:
            return []
        segment = scores[low:high]
        if len(segment) > 4 * k:
            # Partition first: a full sort of 10,000 scores per keystroke is waste.
            threshold = np.partition(segment, len(segment) - k)[len(segment) - k]
            candidates = np.flatnonzero(segment >= threshold)
        else:
            candidates = np.arange(len(segment))
        order = np.lexsort((candidates, -segment[candidates]))
        return [low + int(i) for i in candidates[order[:k]]]

    def rank(self, scores: np.ndarray, prefix: str, position: int) -> int:
        """How many words starting with `prefix` rank above the word at `position`.

        `position` must itself start with `prefix`; rank 0 is the best word.
        """
        low, high = self.span(prefix)
        segment = scores[low:high]
        score = scores[position]
        return int((segment > score).sum() + (segment[: position - low] == score).sum())


@dataclass(frozen=True)
class _Context:
    """The model's view after one context: what a new keystroke may reuse."""

    ids: tuple[int, ...]
    state: object  # the model's recurrent state after `ids`, or None
    scores: np.ndarray  # (W,) next-token logits over the WordIndex, sorted order


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _clean(text: str) -> str:
    """The tail of `text` worth reading, with lone surrogates made harmless."""
    if len(text) > _TAIL_CHARS:
        text = text[-_TAIL_CHARS:]
        # Drop the first, probably cut, word; keep everything if there is no space.
        cut = re.search(r"\s", text)
        text = text[cut.start() :] if cut else text
    return text.encode("utf-8", "replace").decode("utf-8")


def _match_case(word: str, typed: str, normalized: str) -> str:
    """`word` as the user would write it after typing `typed`."""
    if typed and len(typed) == len(normalized):
        word = typed + word[len(normalized) :]
    if sum(c.isupper() for c in typed) >= 2 and typed.isupper():
        word = word.upper()
    return word


def _capitalise_i(word: str) -> str:
    if word == "i" or word.startswith("i'"):
        return "I" + word[1:]
    return word


class Suggester:
    """Next-word predictions and word completions from a next-word model.

    Call `set_model` whenever the weights change (every federated round): the
    cached context belongs to one model and is dropped with it.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: WordTokenizer,
        *,
        context_tokens: int | None = None,
    ) -> None:
        """Index the vocabulary and start with `model`.

        Args:
            model: Maps (B, T) token ids to ((B, T, V) logits, state).
            tokenizer: The tokenizer the model was trained with.
            context_tokens: Longest context fed to the model, <bos> included; by
                default the model's training window (`model.config.max_len`),
                else 32.
        """
        self.tokenizer = tokenizer
        self.index = WordIndex(tokenizer)
        config = getattr(model, "config", None)
        default = getattr(config, "max_len", 32)
        self.context_tokens = max(1, context_tokens or default)
        self._cache: _Context | None = None
        self.set_model(model)

    @property
    def model(self) -> nn.Module:
        """The model suggestions come from."""
        return self._model

    def set_model(self, model: nn.Module) -> None:
        """Use `model` from now on (put in eval mode) and forget the cached context."""
        model.eval()
        self._model = model
        self._cache = None

    def suggest(self, text: str, k: int = 3) -> list[str]:
        """The `k` best words for the end of `text`, best first.

        After a space, a punctuation mark or at the start: the next word. Inside a
        word: the words starting with what was typed, in the user's case. Never a
        special token or a punctuation mark; [] when no vocabulary word fits.
        """
        if k <= 0:
            return []
        text = _clean(text)
        typed_match = PARTIAL_WORD.search(text)
        typed = typed_match.group() if typed_match else ""
        context = text[: len(text) - len(typed)]
        prefix = self.tokenizer.backend.normalizer.normalize_str(typed)
        pieces = self.tokenizer.tokenize(context)
        scores = self._scores(self.tokenizer.encode(context))
        words = [self.index.words[p] for p in self.index.top_k(scores, prefix, k)]
        sentence_start = not any(WORD.fullmatch(p) for p in pieces) or (
            pieces[-1] in _SENTENCE_END
        )
        shown = []
        for word in words:
            word = _capitalise_i(_match_case(word, typed, prefix))
            if sentence_start and not typed:
                word = word[:1].upper() + word[1:]
            shown.append(word)
        return shown

    def _context_ids(self, ids: list[int]) -> tuple[int, ...]:
        """<bos> and the context, or its last window when too long (as in training)."""
        if len(ids) + 1 <= self.context_tokens:
            return (self.tokenizer.bos_id, *ids)
        return tuple(ids[-self.context_tokens :])

    @torch.inference_mode()
    def _scores(self, ids: list[int]) -> np.ndarray:
        """The next-token logits over the word index after `ids`, cached."""
        context = self._context_ids(ids)
        cache = self._cache
        if cache is not None and cache.ids == context:
            return cache.scores
        state, start = None, 0
        extends = cache is not None and context[: len(cache.ids)] == cache.ids
        if extends and cache is not None and cache.state is not None:
            state, start = cache.state, len(cache.ids)
        tokens = torch.tensor([context[start:]], device=_model_device(self._model))
        logits, new_state = self._model(tokens, state)  # (1, T, V)
        last = logits[0, -1].float().cpu()
        scores = torch.nan_to_num(last[self.index.ids_tensor], nan=-torch.inf)
        self._cache = _Context(context, new_state, scores.numpy())
        return self._cache.scores
