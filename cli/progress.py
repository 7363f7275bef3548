"""The one progress bar of the console commands (rich), with a status field."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(
    console: Console,
    *,
    label: str = "{task.description}",
    status: str | None = "status",
) -> Progress:
    """A bar: label, bar, done/total, the task's `status` field, elapsed, remaining.

    Args:
        console: Where the bar draws.
        label: The first column's text (a rich format string or a fixed word).
        status: The name of the task field shown after the count, or None for none.
    """
    columns: list[ProgressColumn] = [
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
    ]
    if status is not None:
        columns.append(TextColumn("{task.fields[" + status + "]}"))
    return Progress(
        *columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console
    )
