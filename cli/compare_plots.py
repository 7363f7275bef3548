"""The comparison's plots: held-out top-3 against tokens and against wall time."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from cli.compare_report import RunSummary  # noqa: E402

# (file name, x label, the CurvePoint field on the x axis)
PLOTS = (
    ("top3_vs_tokens.png", "tokens processed", "tokens"),
    ("top3_vs_wall.png", "training wall time (s)", "wall_seconds"),
)


def _label(summary: RunSummary) -> str:
    return f"{Path(summary.name).name} ({summary.kind})"


def plot(summaries: list[RunSummary], out_dir: Path) -> list[str]:
    """Write one PNG per entry of `PLOTS`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    caption = "\n".join(
        textwrap.shorten(f"{_label(s)}: {s.setting}", 120) for s in summaries
    )
    written = []
    for name, xlabel, field in PLOTS:
        figure, axes = plt.subplots(figsize=(8, 5 + 0.22 * len(summaries)))
        for summary in summaries:
            xs = [getattr(p, field) for p in summary.curve]
            ys = [p.heldout_top3 * 100 for p in summary.curve]
            axes.plot(xs, ys, marker="o", markersize=3, label=_label(summary))
        axes.set_xlabel(xlabel)
        axes.set_ylabel("held-out top-3 accuracy (%)")
        axes.set_title(f"Held-out top-3 accuracy against {xlabel}")
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize=8)
        figure.subplots_adjust(bottom=0.12 + 0.045 * len(summaries))
        figure.text(0.01, 0.01, caption, fontsize=7, va="bottom")
        path = out_dir / name
        figure.savefig(path, dpi=120)
        plt.close(figure)
        written.append(str(path))
    return written
