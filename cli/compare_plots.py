"""The comparison's plots: held-out top-3 against tokens, wall time, rounds, bytes
sent and epsilon.

Runs of one recipe (the same kind, setting and protections: several seeds) are
drawn as one line, their mean at each evaluation with the standard deviation as
error bars.
"""

from __future__ import annotations

import statistics
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cli.compare_runs import CurvePoint, RunSummary, epsilon_of  # noqa: E402
from models.files import atomic_write  # noqa: E402
from models.rundir import POOLED_KINDS, RunKind  # noqa: E402

PRIVACY_PLOT = "top3_vs_epsilon.png"

# (file name, x label, the CurvePoint field on the x axis)
PLOTS = (
    ("top3_vs_tokens.png", "tokens processed", "tokens"),
    ("top3_vs_wall.png", "training wall time (s)", "wall_seconds"),
    ("top3_vs_rounds.png", "federated rounds", "server_round"),
    ("top3_vs_bytes.png", "bytes sent (phones and server, or workers)", "bytes_total"),
)


def kind_note(summary: RunSummary) -> str:
    """What a run is, for a legend: which corner, and its protections."""
    if summary.kind in POOLED_KINDS:
        return f"{summary.kind}, pooled data"
    if summary.kind == RunKind.LOCAL_ONLY:
        return "local-only, nothing merged"
    if not summary.protections:
        return "federated, unprotected"
    return "federated + " + " + ".join(summary.protections)


def _label(group: list[RunSummary]) -> str:
    names = ", ".join(s.label or Path(s.name).name for s in group)
    if len(group) == 1:
        return f"{names} ({kind_note(group[0])})"
    return f"{names} ({kind_note(group[0])}; {len(group)} seeds, mean ± sd)"


def recipes(summaries: list[RunSummary]) -> list[list[RunSummary]]:
    """The runs grouped by recipe (kind, setting, protections), in given order."""
    groups: dict[tuple[str, str, tuple[str, ...]], list[RunSummary]] = {}
    for summary in summaries:
        key = (summary.kind, summary.setting, summary.protections)
        groups.setdefault(key, []).append(summary)
    return list(groups.values())


def mean_curve(
    group: list[RunSummary], field: str
) -> tuple[list[float], list[float], list[float]]:
    """(x, mean top-3 %, sd) at each evaluation all the group's runs reached."""
    curves = [[p for p in s.curve if getattr(p, field) is not None] for s in group]
    length = min(len(c) for c in curves)
    xs, ys, sds = [], [], []
    for index in range(length):
        points: list[CurvePoint] = [c[index] for c in curves]
        xs.append(statistics.fmean(float(getattr(p, field)) for p in points))
        values = [p.heldout_top3 * 100 for p in points]
        ys.append(statistics.fmean(values))
        sds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    return xs, ys, sds


def plot(summaries: list[RunSummary], out_dir: Path) -> list[str]:
    """Write one PNG per entry of `PLOTS` that has a curve, and the privacy plot;
    returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    caption = "\n".join(
        textwrap.shorten(f"{_label([s])}: {s.setting}", 120) for s in summaries
    )
    written = []
    for name, xlabel, field in PLOTS:
        groups = [
            g for g in recipes(summaries) if all(mean_curve([s], field)[0] for s in g)
        ]
        if not groups:
            continue  # no run has this axis (rounds: no federated run)
        figure, axes = plt.subplots(figsize=(8, 5 + 0.22 * len(summaries)))
        for group in groups:
            xs, ys, sds = mean_curve(group, field)
            errors = sds if len(group) > 1 else None
            axes.errorbar(
                xs, ys, yerr=errors, marker="o", markersize=3, capsize=3,
                label=_label(group),
            )  # fmt: skip
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


def epsilon_ticks(finite: list[float]) -> list[float]:
    """A few round ticks over [0, the largest epsilon] (8.30958 is no tick)."""
    if not finite:
        return []
    top = max(finite)
    return [t for t in MaxNLocator(nbins=5).tick_values(0, top) if 0 <= t <= top]


def privacy_plot(summaries: list[RunSummary], path: Path) -> str:
    """Held-out top-3 against epsilon, one point per run; no DP at 'epsilon = inf'.

    Each point's legend entry names the run and its corner (pooled, local-only,
    federated with its protections); runs without an accounted epsilon stand at a
    labelled position right of the others. The legend alone names the points, so
    no two labels overlap on the plot.
    """
    finite = [e for s in summaries if (e := epsilon_of(s)) is not None]
    infinity = 2 * max(finite) if finite else 1.0
    figure, axes = plt.subplots(figsize=(8, 5))
    for summary in summaries:
        epsilon = epsilon_of(summary)
        x = infinity if epsilon is None else epsilon
        y = float(summary.final["heldout"]["top3"]) * 100
        note = kind_note(summary)
        if summary.kind != RunKind.FEDERATED:
            marker = "s"
        else:
            marker = "o" if summary.protections else "X"
        shown = f"{summary.label}: {note}"
        if epsilon is not None:
            shown += f", ε {epsilon:.2f}"
        axes.scatter([x], [y], marker=marker, s=60, label=shown)
    ticks = [*epsilon_ticks(finite), infinity]
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
