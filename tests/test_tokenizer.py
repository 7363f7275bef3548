"""The word tokenizer: pieces, specials, the public vocabulary, save and load."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpora.corpus import CorpusSplits
from corpora.messages import CorpusError
from corpora.stats import part_stats
from corpora.tokenizer import PUNCTUATION, SPECIALS, WordTokenizer


def test_tokenizer_keeps_contractions_whole_and_lowercased(
    tokenizer: WordTokenizer,
) -> None:
    # Prepare
    text = "I'm sure you DON'T know"

    # Execute
    pieces = tokenizer.tokenize(text)

    # Assert
    assert pieces == ["i'm", "sure", "you", "don't", "know"]


def test_tokenizer_curly_apostrophe_becomes_straight(tokenizer: WordTokenizer) -> None:
    # Prepare
    text = "Don\u2019t"

    # Execute
    pieces = tokenizer.tokenize(text)

    # Assert
    assert pieces == ["don't"]
    assert tokenizer.encode(text) == tokenizer.encode("don't")


def test_tokenizer_punctuation_marks_are_separate_tokens(
    tokenizer: WordTokenizer,
) -> None:
    # Prepare
    text = "Hello,world...? 'quoted' e-mail!!"

    # Execute
    pieces = tokenizer.tokenize(text)

    # Assert
    assert pieces == [
        "hello", ",", "world", ".", ".", ".", "?",
        "'", "quoted", "'", "e", "-", "mail", "!", "!",
    ]  # fmt: skip
    assert tokenizer.unk_id not in tokenizer.encode(text)


def test_tokenizer_specials_are_ids_zero_to_three(tokenizer: WordTokenizer) -> None:
    # Prepare
    expected = (0, 1, 2, 3)

    # Execute
    ids = (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id)

    # Assert
    assert ids == expected
    assert tuple(tokenizer.id_to_token[:4]) == SPECIALS


def test_tokenizer_public_vocabulary_size(tokenizer: WordTokenizer) -> None:
    # Prepare: 4 specials, 32 ASCII punctuation marks, 10,000 words
    expected = 4 + 32 + 10_000

    # Execute
    size = tokenizer.vocab_size

    # Assert
    assert size == expected == 10_036
    assert len(tokenizer.word_ids) == 10_000
    assert not any(tokenizer.is_word(i) for i in range(4 + len(PUNCTUATION)))


def test_tokenizer_unknown_word_maps_to_unk(tokenizer: WordTokenizer) -> None:
    # Prepare
    text = "I'm zzqxv"

    # Execute
    ids = tokenizer.encode(text)

    # Assert
    assert ids[1] == tokenizer.unk_id
    assert tokenizer.decode(ids) == "i'm <unk>"


def test_tokenizer_save_load_round_trip(
    tokenizer: WordTokenizer, small_splits: CorpusSplits, tmp_path: Path
) -> None:
    # Prepare
    path = tmp_path / "tokenizer.json"
    texts = small_splits.heldout_texts()

    # Execute
    tokenizer.save(path)
    loaded = WordTokenizer.load(path)

    # Assert
    assert loaded.encode_batch(texts) == tokenizer.encode_batch(texts)
    assert loaded.fingerprint() == tokenizer.fingerprint()
    assert loaded.id_to_token == tokenizer.id_to_token
    assert loaded.word_ids == tokenizer.word_ids


def test_tokenizer_fingerprint_differs_with_vocabulary() -> None:
    # Prepare
    first = WordTokenizer.from_words(["cat", "dog"])
    swapped = WordTokenizer.from_words(["dog", "cat"])

    # Execute
    prints = {first.fingerprint(), swapped.fingerprint()}

    # Assert
    assert len(prints) == 2
    assert first.fingerprint() == WordTokenizer.from_words(["cat", "dog"]).fingerprint()


def test_tokenizer_from_texts_orders_words_by_frequency() -> None:
    # Prepare: "b" 3 times, "a" and "c" twice (ties alphabetical), "d" once
    texts = ["b a c b", "c, a! b", "d"]

    # Execute
    tokenizer = WordTokenizer.from_texts(texts, vocab_size=3)

    # Assert
    assert [tokenizer.id_to_token[i] for i in tokenizer.word_ids] == ["b", "a", "c"]
    assert tokenizer.encode("d") == [tokenizer.unk_id]


def test_tokenizer_load_bad_file_names_it(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "tokenizer.json"
    path.write_text("{not json")

    # Execute
    with pytest.raises(CorpusError) as caught:
        WordTokenizer.load(path)

    # Assert
    assert str(caught.value).startswith(f"{path}: is not a valid tokenizer file")


def test_tokenizer_oov_rate_on_small_slice(
    tokenizer: WordTokenizer, small_splits: CorpusSplits
) -> None:
    # Prepare: the whole corpus measures 4.9 %; this slice's train part 4.3 %
    texts = small_splits.train_texts()

    # Execute
    part = part_stats(tokenizer, texts)

    # Assert
    assert (part.unknown_tokens, part.word_tokens) == (459, 10_575)
    assert 0.03 < part.oov_rate < 0.06
