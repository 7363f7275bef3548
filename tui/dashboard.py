"""The fleet dashboard beside the text field: rounds, phones, bytes and accuracy.

It draws whatever metrics.jsonl lines it is given, so a resumed run shows its whole
history at once. Accuracy over rounds uses Textual's built-in `Sparkline`; the
central baseline is a bar on the same scale as the federated model's latest value.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from tui.privacy_panel import ServerSawPanel, privacy_line

# (record key inside "heldout", label) of each chart, top to bottom.
CHARTS = (("top1", "top-1"), ("top3", "top-3"), ("keystroke_savings", "keys"))
_EIGHTHS = " ▏▎▍▌▋▊▉"


def human_bytes(count: float) -> str:
    """`count` bytes as a short human figure: 980 B, 12.3 MB, 1.2 GB."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def _count(value: Any) -> int:
    """A record's phone field as a number, whether a count or a list of ids."""
    if isinstance(value, list | tuple):
        return len(value)
    return int(value or 0)


def heldout_series(records: list[dict[str, Any]], key: str) -> list[float]:
    """`heldout[key]` of every evaluated record, in order."""
    series = []
    for record in records:
        value = (record.get("heldout") or {}).get(key)
        if isinstance(value, int | float):
            series.append(float(value))
    return series


def bar(value: float, scale: float, width: int) -> str:
    """A horizontal bar of `value / scale` of `width` cells, in eighths."""
    cells = max(0.0, min(1.0, value / scale if scale > 0 else 0.0)) * width
    full = int(cells)
    partial = _EIGHTHS[int((cells - full) * 8)] if full < width else ""
    return ("█" * full + partial).ljust(width)


def round_lines(record: dict[str, Any]) -> Text:
    """The latest round's numbers: round, phones, bytes sent."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("round ", "dim")
    text.append(str(record.get("server_round", 0)), "bold")
    if record.get("abandoned"):
        text.append(" (abandoned)", "dim")
    if not record:
        return text
    picked, reported = _count(record.get("selected")), _count(record.get("reported"))
    dropped, rejected = _count(record.get("dropped")), _count(record.get("rejected"))
    text.append(f"\n{picked} phones picked, {reported} in")
    text.append(f"\n{dropped} dropped, {rejected} rejected")
    down = human_bytes(record.get("bytes_down", 0))
    up = human_bytes(record.get("bytes_up", 0))
    text.append(f"\n↓{down} ↑{up}")
    text.append(" a round", "dim")
    if "bytes_total" in record:
        text.append(f"\n{human_bytes(record['bytes_total'])}")
        text.append(" sent in all", "dim")
    return text


class MetricChart(Horizontal):
    """One metric over rounds: its name, a sparkline and the latest value."""

    DEFAULT_CSS = """
    MetricChart {
        height: 1;
        & > .label { width: 6; color: $text-muted; }
        & > Sparkline { width: 1fr; margin: 0 1 0 0; }
        & > .value { width: 6; text-align: right; }
    }
    """

    def __init__(self, key: str, label: str) -> None:
        super().__init__(id=f"chart-{key}")
        self.key = key
        self.label = label

    def compose(self) -> ComposeResult:
        yield Static(self.label, classes="label")
        yield Sparkline([])
        yield Static("–", classes="value")

    def show(self, series: list[float]) -> None:
        """Draw `series` (fractions) and its last value as a percentage."""
        self.query_one(Sparkline).data = series
        value = f"{series[-1]:.1%}" if series else "–"
        self.query_one(".value", Static).update(value, layout=False)


class Dashboard(Vertical):
    """The fleet's progress: round, phones, bytes, held-out accuracy over rounds."""

    DEFAULT_CSS = """
    Dashboard {
        border: round $secondary;
        border-title-color: $secondary;
        padding: 0 1;
        height: auto;
        & > .muted { color: $text-muted; }
        & > Static { text-wrap: nowrap; text-overflow: ellipsis; }
        & > #reference { height: 3; }
        & > ServerSawPanel { text-wrap: wrap; text-overflow: fold; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Fleet"
        self.server_round = 0
        self.reference_top3: float | None = None
        self._latest_top3: float | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="status", classes="muted")
        yield Static(round_lines({}), id="round")
        yield Static(privacy_line({}), id="privacy")
        yield Static("held-out users", classes="muted")
        for key, label in CHARTS:
            yield MetricChart(key, label)
        yield Static("", id="reference")
        yield ServerSawPanel(id="server-saw")

    def set_status(self, text: str) -> None:
        """What training is doing now ("training round 4", "paused")."""
        self.query_one("#status", Static).update(text)

    def set_reference(self, top3: float | None) -> None:
        """The central baseline's held-out top-3, or None without a central run."""
        self.reference_top3 = top3
        self._draw_reference()

    def show_history(self, records: list[dict[str, Any]]) -> None:
        """Redraw from the run's metrics lines (rounds only, oldest first)."""
        rounds = [r for r in records if "server_round" in r]
        last = rounds[-1] if rounds else {}
        self.server_round = int(last.get("server_round", 0))
        self.query_one("#round", Static).update(round_lines(last))
        deployment = last.get("simulated_privacy")
        target = (deployment if isinstance(deployment, dict) else last).get(
            "target_epsilon"
        )
        self.query_one("#privacy", Static).update(
            privacy_line(last, target=target if isinstance(target, float) else None)
        )
        self.query_one(ServerSawPanel).show_record(last)
        for key, _ in CHARTS:
            self.query_one(f"#chart-{key}", MetricChart).show(
                heldout_series(rounds, key)
            )
        top3 = heldout_series(rounds, "top3")
        self._latest_top3 = top3[-1] if top3 else None
        self._draw_reference()

    def _draw_reference(self) -> None:
        reference = self.query_one("#reference", Static)
        if self.reference_top3 is None:
            reference.display = False
            return
        reference.display = True
        fed = self._latest_top3 or 0.0
        scale = max(fed, self.reference_top3) * 1.1 or 1.0
        width = max(4, reference.size.width - 15) if reference.size.width else 12
        text = Text(no_wrap=True)
        text.append("held-out top-3 vs central", "dim")
        text.append("\nfleet   ", "dim")
        text.append(bar(fed, scale, width), "bold")
        text.append(f" {fed:6.1%}")
        text.append("\ncentral ", "dim")
        text.append(bar(self.reference_top3, scale, width), "magenta")
        text.append(f" {self.reference_top3:6.1%}")
        reference.update(text)

    def on_resize(self) -> None:
        self._draw_reference()
