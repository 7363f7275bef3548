"""A bring-your-own corpus: JSONL, one message a line.

Each line is `{"user": str, "text": str, "timestamp": number | ISO-8601 string}`;
the timestamp is optional (file order then). Every defect is reported as a
`CorpusError` naming the file, the line and the field.

Reading is bounded: only a regular file is opened (a FIFO, a device such as
/dev/zero or a directory is refused before anything is read), a file larger than
`MAX_FILE_BYTES` or a line longer than `MAX_LINE_BYTES` is refused, and a UTF-8
byte order mark at the start of the file (as Windows editors write) is skipped.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass

from corpora.chitchat import parse_timestamp
from corpora.messages import CorpusError, Message

# A JSONL corpus is read whole into memory: 256 MiB is about 40 M words, fifteen
# times the Chit-Chat corpus, and a bound keeps a wrong path from exhausting memory.
MAX_FILE_BYTES = 256 * 1024 * 1024
# One message a line: 1 MiB is about 170,000 words, far beyond any chat message
# and far beyond the per-user word cap, which keeps a stray blob from taking a run.
MAX_LINE_BYTES = 1024 * 1024
UTF8_BOM = b"\xef\xbb\xbf"


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
        # Years near 1 or 9999 overflow the conversion to epoch seconds.
        except (ValueError, OverflowError, OSError):
            raise CorpusError(
                f"{value[:40]!r} is not an ISO-8601 date in range",
                path=path,
                line=line,
                field="timestamp",
            ) from None
    try:
        seconds = float(value)
    except OverflowError:  # a JSON integer of hundreds of digits
        seconds = math.inf
    if not math.isfinite(seconds):
        raise CorpusError("must be finite", path=path, line=line, field="timestamp")
    return seconds


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
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:  # JSON may escape a lone surrogate: "\ud800"
        raise CorpusError(
            f"holds an unpaired surrogate escape (character {error.start})",
            path=path,
            line=line,
            field=name,
        ) from None
    return value


def parse_record(raw: bytes, *, path: str, line: int) -> dict:
    """The JSON object of one line."""
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
    # Integers past 4,300 digits raise ValueError; deep nesting RecursionError.
    except (ValueError, RecursionError) as error:
        reason = (
            "nested too deeply"
            if isinstance(error, RecursionError)
            else "a number has too many digits"
        )
        raise CorpusError(
            f"is not usable JSON ({reason})", path=path, line=line
        ) from None
    if not isinstance(record, dict):
        raise CorpusError("must be a JSON object", path=path, line=line)
    return record


def message_from_record(
    record: dict, *, path: str, line: int, position: int
) -> Message | None:
    """The message of one line's object, or None when its text is empty."""
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


def _kind_of(mode: int) -> str:
    """What a non-regular file is, for the error message."""
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def read_bounded(path: str, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file `path`, at most `max_bytes` of them.

    The file is opened without blocking and checked with `fstat` before any read,
    so a FIFO without a writer or a device like /dev/zero is refused at once.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise CorpusError(f"cannot be read ({error.strerror})", path=path) from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise CorpusError(f"is {_kind_of(mode)}, not a regular file", path=path)
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        raise CorpusError(f"cannot be read ({error.strerror})", path=path) from None
    finally:
        os.close(descriptor)
    if len(data) > max_bytes:
        raise CorpusError(
            f"is larger than {max_bytes:,} bytes, the most a corpus may hold",
            path=path,
        )
    return data


def split_lines(data: bytes, *, path: str, max_line_bytes: int) -> list[bytes]:
    """The file's lines, a leading byte order mark dropped, each length-checked."""
    lines = data.removeprefix(UTF8_BOM).split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if len(raw) > max_line_bytes:
            raise CorpusError(
                f"is longer than {max_line_bytes:,} bytes ({len(raw):,}); one "
                "message a line is expected",
                path=path,
                line=number,
            )
    return lines


def load_jsonl(
    path: str,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> JsonlCorpus:
    """Read and validate a JSONL corpus; raises `CorpusError` on the first defect.

    Either every line has a timestamp or none has: line numbers and clock times
    cannot be ordered against each other.
    """
    data = read_bounded(path, max_bytes=max_bytes)
    lines = split_lines(data, path=path, max_line_bytes=max_line_bytes)
    del data
    messages: list[Message] = []
    skipped = 0
    first_timed: tuple[int, bool] | None = None  # (line, has a timestamp)
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        record = parse_record(raw, path=path, line=number)
        timed = record.get("timestamp") is not None
        if first_timed is None:
            first_timed = (number, timed)
        elif timed != first_timed[1]:
            state = "has" if timed else "lacks"
            raise CorpusError(
                f"{state} a timestamp but line {first_timed[0]} does not; give "
                "every line a timestamp or none",
                path=path,
                line=number,
                field="timestamp",
            )
        message = message_from_record(record, path=path, line=number, position=number)
        if message is None:
            skipped += 1
        else:
            messages.append(message)
    if not messages:
        raise CorpusError("holds no messages", path=path)
    return JsonlCorpus(messages=messages, skipped_empty=skipped)
