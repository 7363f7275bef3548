"""One typed message and the error raised for unreadable corpora."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    """A message one user typed.

    Attributes:
        user: The author's identifier in the corpus.
        text: What they typed.
        timestamp: Seconds since the epoch, or the message's position in its file
            when the corpus has no clock.
    """

    user: str
    text: str
    timestamp: float


class CorpusError(ValueError):
    """A corpus could not be read; the message names the file, line and field."""

    def __init__(
        self,
        message: str,
        *,
        path: str,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        where = path if line is None else f"{path}, line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.field = field
