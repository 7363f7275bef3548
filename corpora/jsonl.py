"""A bring-your-own corpus: JSONL, one message a line.

Each line is `{"user": str, "text": str, "timestamp": number | ISO-8601 string}`;
the timestamp is optional (file order then). Every defect is reported as a
`CorpusError` naming the file, the line and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from corpora.chitchat import parse_timestamp
from corpora.messages import CorpusError, Message


@dataclass(frozen=True)
class JsonlCorpus:
    """Messages read from a JSONL file and how many empty ones were skipped."""

    messages: list[Message]
    skipped_empty: int


def _timestamp(value: object, *, path: str, line: int, position: int) -> float:
    if value is None:
        return float(position)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise CorpusError(
            f"must be a number or an ISO-8601 string, not {type(value).__name__}",
            path=path,
            line=line,
            field="timestamp",
        )
    if isinstance(value, str):
        try:
            return parse_timestamp(value)
        except ValueError:
            raise CorpusError(
                f"{value[:40]!r} is not an ISO-8601 date",
                path=path,
                line=line,
                field="timestamp",
            ) from None
    if not math.isfinite(value):
        raise CorpusError("must be finite", path=path, line=line, field="timestamp")
    return float(value)


def _string_field(record: dict, name: str, *, path: str, line: int) -> str:
    if name not in record:
        raise CorpusError("is missing", path=path, line=line, field=name)
    value = record[name]
    if not isinstance(value, str):
        raise CorpusError(
            f"must be a string, not {type(value).__name__}",
            path=path,
            line=line,
            field=name,
        )
    return value


def parse_line(raw: bytes, *, path: str, line: int, position: int) -> Message | None:
    """One message from one line, or None for a line whose text is empty."""
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CorpusError(
            f"is not valid UTF-8 (byte {error.start})", path=path, line=line
        ) from None
    try:
        record = json.loads(decoded)
    except json.JSONDecodeError as error:
        raise CorpusError(
            f"is not valid JSON ({error.msg})", path=path, line=line
        ) from None
    if not isinstance(record, dict):
        raise CorpusError("must be a JSON object", path=path, line=line)
    user = _string_field(record, "user", path=path, line=line)
    text = _string_field(record, "text", path=path, line=line)
    if not user.strip():
        raise CorpusError("must not be empty", path=path, line=line, field="user")
    timestamp = _timestamp(
        record.get("timestamp"), path=path, line=line, position=position
    )
    if not text.strip():
        return None
    return Message(user=user, text=text, timestamp=timestamp)


def load_jsonl(path: str) -> JsonlCorpus:
    """Read and validate a JSONL corpus; raises `CorpusError` on the first defect."""
    try:
        with open(path, "rb") as handle:
            lines = handle.read().split(b"\n")
    except OSError as error:
        raise CorpusError(f"cannot be read ({error.strerror})", path=path) from None
    messages: list[Message] = []
    skipped = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        message = parse_line(raw, path=path, line=number, position=number)
        if message is None:
            skipped += 1
        else:
            messages.append(message)
    if not messages:
        raise CorpusError("holds no messages", path=path)
    return JsonlCorpus(messages=messages, skipped_empty=skipped)
