"""The comparison's plots: held-out top-3 against tokens, wall time and epsilon."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from cli.compare_report import RunSummary, epsilon_of  # noqa: E402
from models.files import atomic_write  # noqa: E402
from models.rundir import RunKind  # noqa: E402

PRIVACY_PLOT = "top3_vs_epsilon.png"

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
        _save(figure, path)
        written.append(str(path))
    written.append(privacy_plot(summaries, out_dir / PRIVACY_PLOT))
    return written


def privacy_plot(summaries: list[RunSummary], path: Path) -> str:
    """Held-out top-3 against epsilon, one point per run; no DP at 'epsilon = inf'.

    The central run and the unprotected federated runs are marked apart; runs
    without an accounted epsilon stand at a labelled position right of the others.
    """
    finite = [e for s in summaries if (e := epsilon_of(s)) is not None]
    infinity = 2 * max(finite) if finite else 1.0
    figure, axes = plt.subplots(figsize=(8, 5))
    for summary in summaries:
        epsilon = epsilon_of(summary)
        x = infinity if epsilon is None else epsilon
        y = float(summary.final["heldout"]["top3"]) * 100
        if summary.kind != RunKind.FEDERATED:
            marker, note = "s", f"{summary.kind} (pooled data)"
        elif not summary.protected:
            marker, note = "X", "federated, unprotected"
        else:
            marker, note = "o", "federated"
        axes.scatter([x], [y], marker=marker, s=60, label=f"{summary.label}: {note}")
        axes.annotate(summary.label, (x, y), fontsize=7, xytext=(4, 4),
                      textcoords="offset points")  # fmt: skip
    ticks = sorted(set(finite)) + [infinity]
    axes.set_xticks(ticks, [f"{t:g}" for t in ticks[:-1]] + ["\u03b5 = \u221e"])
    axes.set_xlabel("\u03b5 at the last evaluation (no DP: \u03b5 = \u221e)")
    axes.set_ylabel("held-out top-3 accuracy (%)")
    axes.set_title("Privacy against utility")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    _save(figure, path)
    return str(path)


def _save(figure: Any, path: Path) -> None:
    """Write `figure` as a PNG to `path`, atomically, and close it."""
    try:
        atomic_write(path, lambda out: figure.savefig(out, dpi=120, format="png"))
    finally:
        plt.close(figure)
