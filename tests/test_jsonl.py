"""The JSONL loader: every defect names its file, line and field; nothing else leaks."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from helpers import bytes_corpus, corpus_bytes_examples
from hypothesis import event
from hypothesis import strategies as st

from corpora.corpus import CorpusConfig, group_by_user, load_corpus
from corpora.jsonl import load_jsonl
from corpora.messages import CorpusError

WriteJsonl = Callable[[str | bytes], str]
GOOD = '{"user": "ann", "text": "hello there"}'


def lines(*records: str) -> str:
    return "\n".join(records) + "\n"


def load_error(path: str) -> CorpusError:
    with pytest.raises(CorpusError) as caught:
        load_jsonl(path)
    return caught.value


def test_load_jsonl_reads_messages_in_file_order(write_jsonl: WriteJsonl) -> None:
    # Prepare
    path = write_jsonl(lines(GOOD, '{"user": "bob", "text": "hi"}'))

    # Execute
    corpus = load_jsonl(path)

    # Assert
    assert [(m.user, m.text, m.timestamp) for m in corpus.messages] == [
        ("ann", "hello there", 1.0),
        ("bob", "hi", 2.0),
    ]
    assert corpus.skipped_empty == 0


def test_load_jsonl_malformed_json_names_line(write_jsonl: WriteJsonl) -> None:
    # Prepare
    path = write_jsonl(lines(GOOD, '{"user": "ann", "text": '))

    # Execute
    error = load_error(path)

    # Assert
    assert (error.path, error.line, error.field) == (path, 2, None)
    assert str(error).startswith(f"{path}, line 2: is not valid JSON")


def test_load_jsonl_missing_user_names_field(write_jsonl: WriteJsonl) -> None:
    # Prepare
    path = write_jsonl(lines(GOOD, GOOD, '{"text": "no author"}'))

    # Execute
    error = load_error(path)

    # Assert
    assert str(error) == f"{path}, line 3, field 'user': is missing"


def test_load_jsonl_missing_text_names_field(write_jsonl: WriteJsonl) -> None:
    # Prepare
    path = write_jsonl(lines('{"user": "ann"}'))

    # Execute
    error = load_error(path)

    # Assert
    assert str(error) == f"{path}, line 1, field 'text': is missing"


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        ('{"user": 7, "text": "a"}', "user", "must be a string, not int"),
        ('{"user": "ann", "text": ["a"]}', "text", "must be a string, not list"),
        ('{"user": " ", "text": "a"}', "user", "must not be empty"),
        (
            '{"user": "ann", "text": "a", "timestamp": true}',
            "timestamp",
            "must be a number or an ISO-8601 string, not bool",
        ),
        (
            '{"user": "ann", "text": "a", "timestamp": {"s": 1}}',
            "timestamp",
            "must be a number or an ISO-8601 string, not dict",
        ),
        ('{"user": "ann", "text": "a", "timestamp": NaN}', "timestamp", "finite"),
        ('{"user": "ann", "text": "a", "timestamp": 1e999}', "timestamp", "finite"),
        ('{"user": "\\ud800", "text": "a"}', "user", "unpaired surrogate"),
    ],
)
def test_load_jsonl_wrong_type_names_field(
    write_jsonl: WriteJsonl, record: str, field: str, message: str
) -> None:
    # Prepare
    path = write_jsonl(lines(record))

    # Execute
    error = load_error(path)

    # Assert
    assert (error.line, error.field) == (1, field)
    assert message in str(error)
    assert str(error).startswith(f"{path}, line 1, field '{field}': ")


@pytest.mark.parametrize("stamp", ['"yesterday"', '"2021-13-01"', '"2021-02-30"'])
def test_load_jsonl_bad_timestamp_names_field(
    write_jsonl: WriteJsonl, stamp: str
) -> None:
    # Prepare
    path = write_jsonl(
        lines(
            '{"user": "a", "text": "b", "timestamp": 0}',
            f'{{"user": "a", "text": "b", "timestamp": {stamp}}}',
        )
    )

    # Execute
    error = load_error(path)

    # Assert
    assert (error.line, error.field) == (2, "timestamp")
    assert "is not an ISO-8601 date" in str(error)


def test_load_jsonl_invalid_utf8_names_line(write_jsonl: WriteJsonl) -> None:
    # Prepare
    path = write_jsonl(lines(GOOD).encode() + b'{"user": "a", "text": "caf\xe9"}\n')

    # Execute
    error = load_error(path)

    # Assert
    assert (error.line, error.field) == (2, None)
    assert "is not valid UTF-8 (byte 26)" in str(error)


def test_load_jsonl_not_an_object_names_line(write_jsonl: WriteJsonl) -> None:
    # Prepare
    path = write_jsonl(lines('["ann", "hello"]'))

    # Execute
    error = load_error(path)

    # Assert
    assert str(error) == f"{path}, line 1: must be a JSON object"


def test_load_jsonl_huge_or_deep_json_is_a_corpus_error(
    write_jsonl: WriteJsonl,
) -> None:
    # Prepare
    deep = write_jsonl("[" * 100_000 + "]" * 100_000)
    digits = write_jsonl('{"user": "a", "text": "b", "timestamp": ' + "9" * 5000 + "}")
    long_int = write_jsonl('{"user": "a", "text": "b", "timestamp": ' + "9" * 400 + "}")

    # Execute
    errors = [load_error(deep), load_error(digits), load_error(long_int)]

    # Assert
    assert "nested too deeply" in str(errors[0])
    assert "a number has too many digits" in str(errors[1])
    assert errors[2].field == "timestamp"


def test_load_jsonl_empty_file_names_file(write_jsonl: WriteJsonl) -> None:
    # Prepare
    path = write_jsonl("")

    # Execute
    error = load_error(path)

    # Assert
    assert str(error) == f"{path}: holds no messages"


def test_load_jsonl_all_empty_text_names_file(write_jsonl: WriteJsonl) -> None:
    # Prepare
    path = write_jsonl(lines('{"user": "a", "text": ""}', '{"user": "b", "text": " "}'))

    # Execute
    error = load_error(path)

    # Assert
    assert (error.path, error.line) == (path, None)
    assert "holds no messages" in str(error)


def test_load_jsonl_missing_file_names_file(tmp_path) -> None:
    # Prepare
    path = str(tmp_path / "absent.jsonl")

    # Execute
    error = load_error(path)

    # Assert
    assert str(error) == f"{path}: cannot be read (No such file or directory)"


def test_load_jsonl_empty_text_lines_skipped_and_counted(
    write_jsonl: WriteJsonl,
) -> None:
    # Prepare: two empty texts, one blank line (not a message at all), two messages
    path = write_jsonl(
        lines(
            GOOD,
            '{"user": "ann", "text": ""}',
            "",
            '{"user": "bob", "text": "\\t \\n"}',
            '{"user": "bob", "text": "yes"}',
        )
    )

    # Execute
    corpus = load_jsonl(path)

    # Assert
    assert [m.text for m in corpus.messages] == ["hello there", "yes"]
    assert corpus.skipped_empty == 2


def test_load_jsonl_iso_and_numeric_timestamps_ordered(
    write_jsonl: WriteJsonl,
) -> None:
    # Prepare: 2020-01-01T00:00:00Z is 1,577,836,800 s; a zoneless time is UTC
    path = write_jsonl(
        lines(
            '{"user": "u", "text": "third", "timestamp": 1577836801}',
            '{"user": "u", "text": "second", "timestamp": "2020-01-01T00:00:00Z"}',
            '{"user": "u", "text": "first", "timestamp": 1577836799.5}',
            '{"user": "u", "text": "fourth", "timestamp": "2020-01-01T01:00:00"}',
            '{"user": "u", "text": "fifth", "timestamp": "2020-01-01T02:00:00+01:00"}',
        )
    )

    # Execute
    corpus = load_jsonl(path)
    ordered = group_by_user(corpus.messages)

    # Assert
    assert corpus.messages[1].timestamp == 1_577_836_800.0
    assert corpus.messages[3].timestamp == 1_577_836_800.0 + 3600
    assert ordered == {"u": ["first", "second", "third", "fourth", "fifth"]}


def test_load_jsonl_without_timestamps_keeps_file_order(
    write_jsonl: WriteJsonl,
) -> None:
    # Prepare
    path = write_jsonl(
        lines(
            '{"user": "u", "text": "one"}',
            '{"user": "v", "text": "other"}',
            '{"user": "u", "text": "two", "timestamp": null}',
            '{"user": "u", "text": "three"}',
        )
    )

    # Execute
    ordered = group_by_user(load_jsonl(path).messages)

    # Assert
    assert ordered == {"u": ["one", "two", "three"], "v": ["other"]}


def test_load_jsonl_mixed_timestamps_rejected(write_jsonl: WriteJsonl) -> None:
    # Prepare
    path = write_jsonl(
        lines(
            '{"user": "u", "text": "one", "timestamp": 5}',
            '{"user": "u", "text": "two", "timestamp": 6}',
            '{"user": "u", "text": "three"}',
        )
    )

    # Execute
    error = load_error(path)

    # Assert
    assert (error.line, error.field) == (3, "timestamp")
    assert "line 1" in str(error)


@corpus_bytes_examples(st.binary(max_size=200), examples=200)
def test_load_jsonl_arbitrary_bytes_only_raise_corpus_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    # Prepare
    path = bytes_corpus(tmp_path_factory, data)

    # Execute
    try:
        corpus = load_jsonl(str(path))
    except CorpusError as error:
        # Assert
        assert str(error).startswith(str(path))
    else:
        assert corpus.messages


_TEXTS = st.text(st.characters(exclude_categories=()), max_size=12)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _TEXTS
    | st.sampled_from(["2020-01-01T00:00:00Z", "0001-01-01", "2020-02-30", ""])
)
_VALUES = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=5
)
_RECORDS = st.dictionaries(
    st.sampled_from(["user", "text", "timestamp", "extra"]), _VALUES, max_size=4
) | st.fixed_dictionaries(
    {"user": st.sampled_from(["ann", "bob", " "]), "text": _TEXTS | _SCALARS},
    optional={"timestamp": _SCALARS},
)


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    """Mostly well-formed JSONL with wrong values, sometimes cut or corrupted."""
    records = draw(st.lists(_RECORDS, min_size=0, max_size=6))
    data = b"\n".join(json.dumps(r).encode() for r in records)
    if draw(st.booleans()):
        cut = draw(st.integers(min_value=0, max_value=len(data)))
        data = data[:cut] + draw(st.binary(max_size=4)) + data[cut:]
    return data


@corpus_bytes_examples(jsonl_files(), examples=200)
def test_load_corpus_jsonl_like_bytes_only_raise_corpus_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    # Prepare
    path = bytes_corpus(tmp_path_factory, data)
    config = CorpusConfig(source=str(path), min_words_per_user=0)

    # Execute
    try:
        splits = load_corpus(config)
    except CorpusError as error:
        # Assert
        assert str(error).startswith(str(path))
    else:
        event("loaded")
        users = len(splits.training_users) + len(splits.heldout_users)
        assert users >= 1
