"""The fleet dashboard beside the text field: rounds, phones, bytes and accuracy.

It draws whatever metrics.jsonl lines it is given, so a resumed run shows its whole
history at once. Held-out top-3 over rounds is drawn for the fleet and for the
central baseline on one fixed axis (`tui.charts`), with the unigram baseline's
level as a mark, then both perplexities and one line on what central saw that
the fleet never did.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from coordinator.privacy.released import TRUTH
from tui.charts import MARK_STYLE, FixedChart, block
from tui.live_central import CentralView
from tui.privacy_panel import ServerSawPanel, privacy_line

# The fixed axes: accuracy from 0 to 40 % (the demo's models stay well below),
# keystroke savings from 0 to 60 %.
TOP_CEILING = 0.4
KEYS_CEILING = 0.6
# (id, record key inside "heldout", label, ceiling, style) of each chart.
CHARTS = (
    ("chart-top3", "top3", "fleet", TOP_CEILING, "bold"),
    ("chart-central-top3", "top3", "central", TOP_CEILING, "magenta"),
    ("chart-top1", "top1", "top-1", TOP_CEILING, "bold"),
    ("chart-keystroke_savings", "keystroke_savings", "keys", KEYS_CEILING, "bold"),
)


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
    # Under DP the screen's verdicts are the simulation's truth, not released.
    released = "rejected" in record or TRUTH not in record
    text.append(f"\n{dropped} dropped, ")
    text.append(f"{rejected} rejected" if released else "rejections not released")
    down = human_bytes(record.get("bytes_down", 0))
    up = human_bytes(record.get("bytes_up", 0))
    text.append(f"\n↓{down} ↑{up}")
    text.append(" a round", "dim")
    if "bytes_total" in record:
        text.append(f"\n{human_bytes(record['bytes_total'])}")
        text.append(" sent in all", "dim")
    return text


def perplexity_line(
    fleet: float | None, central: float | None, unigram: float | None
) -> Text:
    """Held-out perplexity of the fleet, central and unigram models (lower is
    better)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("perplexity ", "dim")
    text.append("fleet ", "dim")
    text.append(f"{fleet:,.0f}" if fleet is not None else "–", "bold")
    if central is not None:
        text.append(" · central ", "dim")
        text.append(f"{central:,.0f}", "magenta")
    if unigram is not None:
        text.append(" · unigram ", "dim")
        text.append(f"{unigram:,.0f}")
    return text


def gap_line(view: CentralView, fleet_bytes: float) -> Text:
    """What central saw that the fleet never did, and what each moved."""
    last = view.records[-1] if view.records else {}
    read = human_bytes(view.text_bytes * float(last.get("epoch", 0.0)))
    if last.get("bytes_total"):
        read += f" + {human_bytes(last['bytes_total'])} all-reduce"
    text = Text()
    text.append("central read ", "dim")
    text.append(f"{view.users} users' pooled text", "magenta")
    text.append(f" ({read}); the fleet sent no text, ", "dim")
    text.append(f"{human_bytes(fleet_bytes)} of updates", "bold")
    return text


class Dashboard(Vertical):
    """The fleet's progress beside central's: round, phones, bytes, accuracy."""

    DEFAULT_CSS = """
    Dashboard {
        border: round $secondary;
        border-title-color: $secondary;
        padding: 0 1;
        height: auto;
        & > .muted { color: $text-muted; }
        & > Static { text-wrap: nowrap; text-overflow: ellipsis; }
        & > #gap { text-wrap: wrap; }
        & > ServerSawPanel { text-wrap: wrap; text-overflow: fold; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Fleet"
        self.server_round = 0
        self.reference_top3: float | None = None
        self.central: CentralView | None = None
        self._records: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Static("", id="status", classes="muted")
        yield Static(round_lines({}), id="round")
        yield Static(privacy_line({}), id="privacy")
        yield Static("held-out top-3", id="axis", classes="muted")
        for chart_id, _, label, ceiling, style in CHARTS:
            yield FixedChart(label, ceiling=ceiling, style=style, id=chart_id)
        yield Static("", id="perplexity")
        yield Static("", id="gap")
        yield ServerSawPanel(id="server-saw")

    def set_status(self, text: str) -> None:
        """What training is doing now ("training round 4", "paused")."""
        self.query_one("#status", Static).update(text)

    def set_reference(self, top3: float | None) -> None:
        """An existing central run's held-out top-3 (`--central RUN`)."""
        self.reference_top3 = top3
        self._draw_charts()

    def show_central(self, view: CentralView | None) -> None:
        """The live central baseline's lines (None: no live baseline)."""
        self.central = view
        self._draw_charts()

    def show_history(self, records: list[dict[str, Any]]) -> None:
        """Redraw from the run's metrics lines (rounds only, oldest first)."""
        rounds = self._records = [r for r in records if "server_round" in r]
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
        self._draw_charts()

    def _unigram(self, key: str) -> float | None:
        unigram = self.central.unigram if self.central is not None else None
        value = (unigram or {}).get(key)
        return float(value) if isinstance(value, int | float) else None

    def _draw_charts(self) -> None:
        central = self.central.records if self.central is not None else []
        mark = self._unigram("top3")
        axis = Text(f"top-3, axis 0–{TOP_CEILING:.0%}", no_wrap=True)
        if mark is not None:
            axis.append("  ")
            axis.append(block(mark, TOP_CEILING), MARK_STYLE)
            axis.append(f" unigram {mark:.1%}")
        self.query_one("#axis", Static).update(axis)
        for chart_id, key, _, _, _ in CHARTS:
            chart = self.query_one(f"#{chart_id}", FixedChart)
            records = central if chart_id == "chart-central-top3" else self._records
            chart.show(heldout_series(records, key), mark=self._unigram(key))
        central_chart = self.query_one("#chart-central-top3", FixedChart)
        central_chart.display = bool(central) or self.reference_top3 is not None
        if not central and self.reference_top3 is not None:
            central_chart.show([], value=f"{self.reference_top3:.1%}")
        perplexity = heldout_series(self._records, "perplexity")
        central_perplexity = heldout_series(central, "perplexity")
        self.query_one("#perplexity", Static).update(
            perplexity_line(
                perplexity[-1] if perplexity else None,
                central_perplexity[-1] if central_perplexity else None,
                self._unigram("perplexity"),
            )
        )
        gap = self.query_one("#gap", Static)
        # A run without a live baseline has the unigram level alone.
        central_view = self.central if self.central and self.central.users else None
        gap.display = central_view is not None
        if central_view is not None:
            last = self._records[-1] if self._records else {}
            gap.update(gap_line(central_view, float(last.get("bytes_total", 0))))
