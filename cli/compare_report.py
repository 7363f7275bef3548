"""The comparison table of run summaries (`cli.compare_runs`), and its Markdown.

One row a run, in `COLUMNS` order, and a federated run's personalised phones in
a row of their own just after it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cli.compare_personalized import (
    PERSONALIZED,
    personal_variant,
    personalized_setting,
)
from cli.compare_runs import RunSummary, epsilon_of
from coordinator.privacy.dp import NO_PRIVACY_LABEL as NO_PRIVACY

# Columns of the table: header and how a summary fills it.
COLUMNS = (
    "run",
    "kind",
    "held-out top-1",
    "held-out top-3",
    "held-out ppl",
    "keys saved",
    "future top-1",
    "future top-3",
    "future ppl",
    "future keys saved",
    "mean rel. top-1 gain / phones hurt",
    "tokens",
    "wall time",
    "bytes exchanged",
    "rounds / phones",
    "epsilon (delta)",
    "attack P / R (update)",
    "attack P / R (sum)",
    "attack P / R (noisy)",
    "exposure (most repeats)",
    "exposure (controls)",
    "seconds per round",
)
# A cell for a run without the field (no DP, no attack probe, no canaries).
MISSING = "—"


def _pct(metrics: Any, key: str) -> str:
    value = metrics.get(key) if isinstance(metrics, dict) else None
    return "-" if value is None or math.isnan(value) else f"{value:.2%}"


def _num(metrics: Any, key: str) -> str:
    value = metrics.get(key) if isinstance(metrics, dict) else None
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KB' (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def row(summary: RunSummary) -> list[str]:
    """The table row of a run, in `COLUMNS` order."""
    final = summary.final
    heldout, future = final.get("heldout"), final.get("future")
    rounds = "-"
    if summary.rounds is not None:
        rounds = f"{summary.rounds} / {summary.phone_reports:,} reports"
    return [
        summary.label or Path(summary.name).name or summary.name,
        summary.kind,
        _pct(heldout, "top1"),
        _pct(heldout, "top3"),
        _num(heldout, "perplexity"),
        _pct(heldout, "keystroke_savings"),
        _pct(future, "top1"),
        _pct(future, "top3"),
        _num(future, "perplexity"),
        _pct(future, "keystroke_savings"),
        MISSING,
        f"{int(final.get('tokens_total', 0)):,}",
        f"{float(final.get('wall_seconds_total', 0.0)):.0f} s",
        human_bytes(float(final.get("bytes_total", 0))),
        rounds,
        *privacy_cells(summary),
    ]


def personalized_row(summary: RunSummary) -> list[str] | None:
    """The row of a federated run's gated personal models, when it has a report."""
    report = summary.personalized
    if report is None:
        return None
    variant = personal_variant(report)
    gated, gain = report.future[variant].as_dict(), report.gain[variant]
    mean = "-" if math.isnan(gain.mean_top1) else f"{gain.mean_top1:+.2%}"
    share = gain.significantly_hurt
    share = gain.hurt_share if math.isnan(share) else share
    hurt = "-" if math.isnan(share) else f"{share:.2%}"
    cells = dict.fromkeys(COLUMNS, MISSING)
    cells.update(
        {
            "run": f"{summary.label or summary.name} + personalised ({variant})",
            "kind": PERSONALIZED,
            "future top-1": _pct(gated, "top1"),
            "future top-3": _pct(gated, "top3"),
            "future ppl": _num(gated, "perplexity"),
            "future keys saved": _pct(gated, "keystroke_savings"),
            "mean rel. top-1 gain / phones hurt": f"{mean} / {hurt}",
            "rounds / phones": f"{report.server_round} / {report.phones:,} phones",
        }
    )
    return [cells[name] for name in COLUMNS]


def table_rows(summaries: list[RunSummary]) -> list[list[str]]:
    """Each run's row, a personalised federated run's own row just after it."""
    rows = []
    for summary in summaries:
        rows.append(row(summary))
        personalized = personalized_row(summary)
        if personalized is not None:
            rows.append(personalized)
    return rows


def privacy_cells(summary: RunSummary) -> list[str]:
    """The privacy columns of a run's row: epsilon, the attack, exposure, speed."""
    final = summary.final
    epsilon = epsilon_of(summary)
    cells = [MISSING if epsilon is None else f"{epsilon:.2f} ({final.get('delta')})"]
    if summary.replayable:
        cells[0] += f"; {NO_PRIVACY}"
    simulated = final.get("simulated_privacy")
    if isinstance(simulated, dict) and "epsilon" in simulated:
        cells[0] += (
            f"; simulated population {simulated.get('population')}: "
            f"{float(simulated['epsilon']):.2f}"
        )
    attack = summary.attack or {}
    for name in ("update", "sum", "noisy"):
        figures = attack.get(name)
        cells.append(
            MISSING
            if figures is None
            else f"{figures['precision']:.2f} / {figures['recall']:.2f}"
        )
    cells += exposure_cells(final.get("exposure"))
    cells.append(seconds_per_round(summary))
    return cells


def exposure_cells(exposure: Any) -> list[str]:
    """Mean rank exposure of the most repeated canaries, and of the controls."""
    if not isinstance(exposure, dict):
        return [MISSING, MISSING]
    by_repeats = exposure.get("by_repeats") or {}
    top = max(by_repeats, key=int, default=None)
    value = by_repeats.get(top) if top is not None else None
    controls = exposure.get("controls")
    return [
        MISSING if value is None else f"{value:.2f} bits (x{top})",
        MISSING if controls is None else f"{controls:.2f} bits",
    ]


def seconds_per_round(summary: RunSummary) -> str:
    """Training wall time per round (federated) or per step (central)."""
    wall = float(summary.final.get("wall_seconds_total", 0.0))
    if summary.rounds:
        return f"{wall / summary.rounds:.1f} s"
    step = summary.final.get("step")
    if isinstance(step, int) and step > 0:
        return f"{wall / step:.3f} s/step"
    return MISSING


def markdown(summaries: list[RunSummary], plots: list[str]) -> str:
    """The Markdown report: the table, each run's setting and the plots."""
    lines = [
        "# fedtype comparison",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(summaries)]
    lines += ["", "Settings:", ""]
    for s in summaries:
        lines.append(f"- `{s.name}` ({s.kind}): {s.setting}")
        if s.personalized is not None:
            lines.append(
                f"- `{s.name}` ({PERSONALIZED}): {personalized_setting(s.personalized)}"
            )
    lines += [
        "",
        "Held-out: users who never trained. Future: the training users' newest "
        "messages. Wall time is training time without evaluation; bytes are "
        "weights sent down and up (federated) or gradient all-reduce traffic "
        "(central, ring model). Epsilon is the accountant's at the last "
        "evaluation (no DP: —, drawn at 'ε = ∞'); the attack is the mean "
        "precision / recall of the words recovered from one phone's update, the "
        "round's sum and the noisy sum; exposure is the mean rank exposure of "
        "the most repeated canaries and of the never-planted controls. The "
        "personalised row is `fedtype personalize`'s phone model (the gated "
        "fine-tune with the phone's memory; gated alone in reports made before "
        "the memory), measured on the same future text as its federated row; its "
        "gain is the mean over phones of the relative top-1 gain over the "
        "federated model, and phones hurt are those a sign test at 5 % finds "
        "hurt (in older reports: whose top-1 hits fell).",
        "",
    ]
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"
