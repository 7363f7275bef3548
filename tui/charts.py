"""Charts on a fixed axis: a metric over rounds in one row of block characters.

Textual's `Sparkline` scales to its own data's range, so a wobble of 0.2 % over a
flat run fills the whole height and reads as a collapse. Here every chart has a
fixed axis from 0 to its `ceiling`, and a reference level (the unigram
baseline's) is drawn as one cell at its height after the chart, in its own
colour, so the eye compares the curve with what a model with no context gets.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

# One row's eight heights, lowest first; a value of 0 still shows the floor.
_BLOCKS = "▁▂▃▄▅▆▇█"
# Cells of a chart row around the curve: the label, a gap and the value.
LABEL_CELLS = 8
VALUE_CELLS = 7
MARK_STYLE = "yellow"


def block(value: float, ceiling: float) -> str:
    """The block character for `value` on an axis from 0 to `ceiling`."""
    share = max(0.0, min(1.0, value / ceiling if ceiling > 0 else 0.0))
    return _BLOCKS[min(len(_BLOCKS) - 1, int(share * len(_BLOCKS)))]


def resample(series: list[float], width: int) -> list[float]:
    """`series` in at most `width` points: means of consecutive, even buckets."""
    if len(series) <= width or width < 1:
        return list(series)
    points = []
    for cell in range(width):
        start = cell * len(series) // width
        stop = max(start + 1, (cell + 1) * len(series) // width)
        bucket = series[start:stop]
        points.append(sum(bucket) / len(bucket))
    return points


def chart_line(
    label: str,
    series: list[float],
    *,
    width: int,
    ceiling: float,
    style: str = "bold",
    mark: float | None = None,
    value: str | None = None,
) -> Text:
    """One chart row: label, the curve on 0..ceiling, the mark cell, the value.

    Args:
        width: Cells of the whole row.
        mark: A reference level drawn as one cell after the curve (None: none).
        value: The text at the right (default: the last value as a percentage).
    """
    text = Text(no_wrap=True, overflow="crop")
    text.append(label[: LABEL_CELLS - 1].ljust(LABEL_CELLS), "dim")
    cells = max(1, width - LABEL_CELLS - VALUE_CELLS - 2)
    points = resample(series, cells)
    text.append("".join(block(v, ceiling) for v in points).ljust(cells), style)
    text.append(" ")
    text.append(block(mark, ceiling) if mark is not None else " ", MARK_STYLE)
    if value is None:
        value = f"{series[-1]:.1%}" if series else "–"
    text.append(value.rjust(VALUE_CELLS))
    return text


class FixedChart(Widget):
    """A metric over rounds on a fixed axis, with a reference mark."""

    DEFAULT_CSS = """
    FixedChart { height: 1; }
    """

    def __init__(
        self, label: str, *, ceiling: float, style: str = "bold", id: str
    ) -> None:
        super().__init__(id=id)
        self.label = label
        self.ceiling = ceiling
        self.style = style
        self.series: list[float] = []
        self.mark: float | None = None
        self.value: str | None = None

    def show(
        self,
        series: list[float],
        *,
        mark: float | None = None,
        value: str | None = None,
    ) -> None:
        """Draw `series` (fractions), the `mark` level and `value` (default: the
        last point)."""
        self.series, self.mark, self.value = list(series), mark, value
        self.refresh()

    def render(self) -> Text:
        return chart_line(
            self.label,
            self.series,
            width=self.size.width or 40,
            ceiling=self.ceiling,
            style=self.style,
            mark=self.mark,
            value=self.value,
        )
