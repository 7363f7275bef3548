"""The word-level tokenizer, built with HF `tokenizers`.

Lower-cased, words with inner apostrophes kept whole (`don't`, `i'm`), every
punctuation mark its own token. The default vocabulary is public: the top-N English
words of `wordfreq` plus ASCII punctuation, so no phone's private text shapes it.
`from_texts` builds it from training text instead, which leaks private words into a
shared artefact and exists only for comparison.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import string
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel

from corpora.messages import CorpusError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
PUNCTUATION = tuple(string.punctuation)
# A word: letters or digits, optionally joined by inner apostrophes. The normaliser
# turns U+2019 into ', so normalised text has one apostrophe.
_ALNUM = r"[^\W_]"  # a letter or digit, in any script
WORD_BODY = rf"{_ALNUM}+(?:'{_ALNUM}+)*"
# What the pre-tokenizer splits out: a word, else one mark.
WORD_PATTERN = rf"{WORD_BODY}|[^\w\s]|_"
# A whole word in normalised text (every module that asks "is this a word?").
WORD = re.compile(WORD_BODY)
# The apostrophes of raw, typed text: ' and U+2019 (which normalises to ').
APOSTROPHES = "'\u2019"
# The word being typed at the end of raw text: the word rule with either apostrophe,
# and an apostrophe may be pending ("don'").
PARTIAL_WORD = re.compile(rf"{_ALNUM}+(?:[{APOSTROPHES}]{_ALNUM}*)*\Z")


def _backend(vocab: dict[str, int]) -> Tokenizer:
    tokenizer = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Replace("\u2019", "'"),
            normalizers.Lowercase(),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated"),
        ]
    )
    return tokenizer


class WordTokenizer:
    """Text to token ids and back, with the vocabulary facts the model needs."""

    def __init__(self, backend: Tokenizer) -> None:
        self.backend = backend
        vocab = backend.get_vocab()
        self.id_to_token: list[str] = [""] * len(vocab)
        for token, index in vocab.items():
            self.id_to_token[index] = token
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (
            vocab[s] for s in SPECIALS
        )
        # Ids a keyboard may suggest: real words, never specials or punctuation.
        self.word_ids: list[int] = [
            i for i, t in enumerate(self.id_to_token) if WORD.fullmatch(t)
        ]

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_token)

    @classmethod
    def from_words(cls, words: Iterable[str]) -> WordTokenizer:
        """A tokenizer over specials, punctuation and `words` (in order, once each)."""
        vocab: dict[str, int] = {}
        for token in (*SPECIALS, *PUNCTUATION, *words):
            vocab.setdefault(token, len(vocab))
        return cls(_backend(vocab))

    @classmethod
    def public(cls, vocab_size: int = 10_000) -> WordTokenizer:
        """The default: the `vocab_size` most frequent English words of wordfreq."""
        from wordfreq import top_n_list

        candidates = top_n_list("en", vocab_size * 2)
        words = [w for w in candidates if WORD.fullmatch(w)][:vocab_size]
        return cls.from_words(words)

    @classmethod
    def from_texts(
        cls, texts: Iterable[str], vocab_size: int = 10_000
    ) -> WordTokenizer:
        """Vocabulary of the most frequent words in `texts`: leaks private data."""
        counts: Counter[str] = Counter()
        base = _backend({UNK: 0})
        for text in texts:
            pieces = base.pre_tokenizer.pre_tokenize_str(
                base.normalizer.normalize_str(text)
            )
            counts.update(p for p, _ in pieces if WORD.fullmatch(p))
        words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        return cls.from_words(words[:vocab_size])

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        """Load a `tokenizer.json` written by `save`."""
        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception
            raise CorpusError(
                f"is not a valid tokenizer file ({error})", path=str(path)
            ) from None
        if not all(backend.token_to_id(s) is not None for s in SPECIALS):
            raise CorpusError("lacks the special tokens", path=str(path))
        return cls(backend)

    def save(self, path: str | Path) -> None:
        """Write `tokenizer.json` (the caller decides where)."""
        self.backend.save(str(path))

    @functools.cached_property
    def _fingerprint(self) -> str:
        vocab = json.dumps(self.id_to_token, ensure_ascii=False).encode()
        return hashlib.sha256(vocab).hexdigest()[:16]

    def fingerprint(self) -> str:
        """A short hash of the vocabulary: checkpoints record it to catch mismatches."""
        return self._fingerprint

    def tokenize(self, text: str) -> list[str]:
        """The normalised pieces of `text` (words, marks) before vocabulary lookup."""
        normalized = self.backend.normalizer.normalize_str(text)
        return [p for p, _ in self.backend.pre_tokenizer.pre_tokenize_str(normalized)]

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without <bos>/<eos>."""
        return self.backend.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of many texts at once (parallel in Rust)."""
        return [e.ids for e in self.backend.encode_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        """The tokens of `ids` joined by spaces."""
        return " ".join(self.id_to_token[i] for i in ids)

    def is_word(self, token_id: int) -> bool:
        """Whether an id is a suggestible word."""
        return WORD.fullmatch(self.id_to_token[token_id]) is not None
