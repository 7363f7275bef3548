"""Reading any mix of run directories into one comparison table.

Only the runs' JSON files are read (config.json, metrics.jsonl, and a federated
run's personalization.json), so federated, central (`train`, `central`) and
local-only runs compare without loading their models.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cli.compare_personalized import (
    PERSONALIZED,
    personal_variant,
    personalized_report,
    personalized_setting,
)
from coordinator.dp import NO_PRIVACY_LABEL as NO_PRIVACY
from coordinator.dp import NOISE_SOURCES
from coordinator.personalization import PersonalizationReport
from coordinator.released import TRUTH, with_truth
from models.rundir import POOLED_KINDS, RunDir, RunDirError, RunKind

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
# A DP metrics line's noise_source when the noise came from the seed.
REPLAYABLE = NOISE_SOURCES[True]


@dataclass(frozen=True)
class CurvePoint:
    """One evaluation of a run: where it stood and how well it did."""

    tokens: int  # targets trained on so far
    wall_seconds: float  # training wall time so far
    heldout_top3: float
    bytes_total: int = 0  # bytes sent so far (phones and server, or workers)
    server_round: int | None = None  # federated runs: the round evaluated


@dataclass(frozen=True)
class RunSummary:
    """What the comparison needs of one run."""

    name: str  # the path as given
    kind: str
    setting: str  # a one-line caption of how it trained
    final: dict[str, Any]  # its last evaluated metrics line
    curve: list[CurvePoint]
    rounds: int | None = None  # federated only
    phone_reports: int | None = None  # federated: reports aggregated, all rounds
    label: str = ""  # the column header: the shortest path tail that is unique
    corpus: str = ""  # the corpus and its cut, as JSON: runs compare on one only
    # The attack's mean {"precision", "recall"} per input over the rounds.
    attack: dict[str, dict[str, float]] | None = None
    protected: bool = False  # federated with SecAgg or DP
    protections: tuple[str, ...] = ()  # federated: "SecAgg", "DP", both or none
    # Federated: its personalization.json, when measured on the row's future text.
    personalized: PersonalizationReport | None = None
    notes: tuple[str, ...] = ()  # one line each, why something is left out
    # Federated: DP noise drawn from the seed (PrivacyConfig.replayable_noise).
    replayable: bool = False


def epsilon_of(summary: RunSummary) -> float | None:
    """The run's epsilon at its last evaluation (None: no DP accounted)."""
    value = summary.final.get("epsilon")
    return float(value) if isinstance(value, int | float) else None


def mean_attack(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The mean precision and recall of each attacked input over `records`."""
    sums: dict[str, list[list[float]]] = {}
    for record in records:
        attack = record.get("attack")
        for name, figures in attack.items() if isinstance(attack, dict) else ():
            if not isinstance(figures, dict):
                continue
            precision, recall = figures.get("precision"), figures.get("recall")
            if isinstance(precision, int | float) and isinstance(recall, int | float):
                sums.setdefault(name, []).append([float(precision), float(recall)])
    return {
        name: {
            "precision": sum(p for p, _ in pairs) / len(pairs),
            "recall": sum(r for _, r in pairs) / len(pairs),
        }
        for name, pairs in sums.items()
    }


class NotEvaluatedError(RunDirError):
    """A run holds no evaluation yet (such as one stopped by its privacy budget
    before its first evaluation): nothing of it can be compared."""


def _evaluated(record: dict[str, Any]) -> bool:
    return isinstance(record.get("heldout"), dict)


def load_run(path: str) -> RunSummary:
    """The summary of the run at `path`.

    Raises:
        RunDirError: the directory, its config or its metrics are missing,
            unreadable, of an unknown kind or hold no evaluation yet.
    """
    run = RunDir(path)
    run.read_kind()  # a clear error for a run of no known kind
    config = run.read_config()
    # A protected run files what the server never learned (tokens, under DP the
    # future-text figures) as the simulation's truth: the comparison reads it.
    logged = run.read_metrics()
    records = [with_truth(r) if isinstance(r, dict) else r for r in logged]
    evaluated = [r for r in records if isinstance(r, dict) and _evaluated(r)]
    if not evaluated:
        raise NotEvaluatedError(f"{run.metrics_path}: no evaluation recorded yet")
    try:
        curve = [
            CurvePoint(
                int(r["tokens_total"]),
                float(r["wall_seconds_total"]),
                float(r["heldout"]["top3"]),
                bytes_total=int(r.get("bytes_total") or 0),
                server_round=r.get("server_round"),
            )
            for r in evaluated
        ]
    except (KeyError, TypeError, ValueError) as error:
        raise RunDirError(f"{run.metrics_path}: malformed line ({error})") from None
    kind = config["kind"]
    summary = RunSummary(
        path,
        kind,
        setting(config, evaluated[-1]),
        evaluated[-1],
        curve,
        label=Path(path).name or path,
        corpus=corpus_key(config),
    )
    if kind == RunKind.FEDERATED:
        # Up to the evaluated round, as the metrics in the row are.
        last = int(evaluated[-1].get("server_round", 0))
        upto = [r for r in records if int(r.get("server_round", 0)) <= last]
        privacy = config.get("federation", {}).get("privacy", {}) or {}
        protections = tuple(
            name
            for name, key in (("SecAgg", "secure_aggregation"), ("DP", "dp"))
            if privacy.get(key)
        )
        personalized, notes = personalized_report(run, evaluated[-1], last)
        if any(isinstance(r, dict) and TRUTH in r for r in logged):
            notes = (
                *notes,
                f"{path}: its tokens (and, under DP, its future-text figures) are "
                "the simulation's truth, not figures its server learned",
            )
        return replace(
            summary,
            personalized=personalized,
            notes=notes,
            attack=mean_attack(upto) or None,
            protected=bool(protections),
            protections=protections,
            replayable=any(r.get("noise_source") == REPLAYABLE for r in upto),
            rounds=last,
            phone_reports=sum(
                int(r.get("reported", 0))
                for r in records
                if int(r.get("server_round", 0)) <= last
            ),
        )
    return summary


def load_runs(paths: list[str]) -> list[RunSummary]:
    """The summaries of `paths`, labelled so that no two columns look alike."""
    summaries = [load_run(path) for path in paths]
    labels = run_labels(paths)
    return [
        replace(s, label=label + (f" ({NO_PRIVACY})" if s.replayable else ""))
        for s, label in zip(summaries, labels, strict=True)
    ]


def load_comparable(paths: list[str]) -> tuple[list[RunSummary], list[str]]:
    """The summaries of the runs that hold an evaluation, and a note for each run
    left out for holding none; the other errors stop the comparison.

    Raises:
        NotEvaluatedError: no run holds an evaluation.
    """
    kept: list[tuple[str, RunSummary]] = []
    notes = []
    for path in paths:
        try:
            kept.append((path, load_run(path)))
        except NotEvaluatedError as error:
            notes.append(f"{path}: left out, {str(error).split(': ', 1)[-1]}")
            if len(notes) == len(paths):
                raise
    labels = run_labels([path for path, _ in kept])
    summaries = [
        replace(s, label=label) for (_, s), label in zip(kept, labels, strict=True)
    ]
    return summaries, notes


def run_labels(paths: list[str]) -> list[str]:
    """The shortest tail of each path's parts that no other path shares.

    ["a/run", "b/run", "c"] -> ["a/run", "b/run", "c"]; a path given twice gets
    " (2)" on its second label.
    """
    parts = [Path(p).resolve().parts for p in paths]
    distinct = list(dict.fromkeys(parts))
    depth = dict.fromkeys(distinct, 1)
    for _ in range(max((len(p) for p in distinct), default=0)):
        tails = {p: "/".join(p[-depth[p] :]) for p in distinct}
        counts = Counter(tails.values())
        clashing = [p for p in distinct if counts[tails[p]] > 1]
        if not clashing:
            break
        for p in clashing:
            depth[p] = min(depth[p] + 1, len(p))
    seen: Counter[tuple[str, ...]] = Counter()
    labels = []
    for p in parts:
        seen[p] += 1
        label = "/".join(p[-depth[p] :]).lstrip("/") or "/"
        labels.append(label if seen[p] == 1 else f"{label} ({seen[p]})")
    return labels


def corpus_key(config: dict[str, Any]) -> str:
    """The run's corpus, its cut and its fingerprint, comparable across runs.

    The training users kept count whether a run cut them in its corpus settings
    or (runs made before that) in its fleet's `max_users`.
    """
    corpus: dict[str, Any] = config.get("corpus") or {}
    fleet = (config.get("federation") or {}).get("fleet") or {}
    users = corpus.get("max_users") or fleet.get("max_users")
    corpus = {key: value for key, value in corpus.items() if key != "max_users"}
    if users is not None:
        corpus["max_users"] = users
    return json.dumps(
        {"corpus": corpus, "fingerprint": config.get("corpus_fingerprint")},
        sort_keys=True,
    )


def corpus_warning(summaries: list[RunSummary]) -> str | None:
    """A warning when the runs were cut from different corpora or settings."""
    keys = {s.corpus for s in summaries}
    if len(keys) <= 1:
        return None
    described = []
    for s in summaries:
        data = json.loads(s.corpus) if s.corpus else {}
        corpus = data.get("corpus") or {}
        described.append(
            f"{s.label}: {corpus.get('source', '?')} (seed {corpus.get('seed', '?')})"
        )
    return (
        "the runs were cut from different corpora or corpus settings, so their "
        "held-out and future texts differ and the figures do not compare: "
        + "; ".join(described)
    )


def _trained_for(training: dict[str, Any], final: dict[str, Any]) -> str:
    """How long a central run trained: its steps, or its epochs."""
    step, epoch = final.get("step"), final.get("epoch")
    if training.get("max_steps") is not None and isinstance(step, int):
        text = f"{step:,} steps (--max-steps {training['max_steps']:,}"
        if isinstance(epoch, int | float):
            text += f", {epoch:.2f} epochs"
        return text + ")"
    return f"{training.get('epochs', '?')} epoch(s)"


def setting(config: dict[str, Any], final: dict[str, Any] | None = None) -> str:
    """A one-line description of how a run trained, from its config.json (and its
    last evaluated metrics line, for how far a central run went)."""
    kind = config.get("kind")
    if kind == RunKind.FEDERATED:
        fed = config.get("federation", {})
        local = fed.get("local", {})
        strategy = fed.get("strategy", "?")  # a name in runs made before it nested
        if isinstance(strategy, dict):
            strategy = strategy.get("name", "?")
        return (
            f"{strategy}, {fed.get('clients_per_round', '?')} "
            f"phones/round, {fed.get('rounds', '?')} rounds, "
            f"{local.get('local_epochs', '?')} local epoch(s) of SGD lr "
            f"{local.get('client_lr', '?')}, <= {local.get('max_local_steps', '?')} "
            "steps"
        )
    if kind in POOLED_KINDS:
        t = config.get("training", {})
        workers = config.get("workers", 1)
        return (
            f"{workers} worker(s), {t.get('optimizer', '?')} lr {t.get('lr', '?')}, "
            f"batch {t.get('batch_size', '?')}, {_trained_for(t, final or {})} "
            "on the pooled data"
        )
    lo = config.get("local_only", {})
    users = "every user" if lo.get("all_users") else "the future cohort's users"
    return (
        f"{users} alone, {lo.get('local_epochs', '?')} epochs of SGD lr "
        f"{lo.get('lr', '?')}; held-out = mean of {lo.get('heldout_models', '?')} "
        "users' models"
    )


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
