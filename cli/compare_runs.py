"""Reading any mix of run directories into summaries that compare.

Only the runs' JSON files are read (config.json, metrics.jsonl, and a federated
run's personalization.json), so federated, central (`train`, `central`) and
local-only runs compare without loading their models. `cli.compare_report` lays
the summaries out as a table.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cli.compare_personalized import personalized_report
from coordinator.privacy.dp import NO_PRIVACY_LABEL as NO_PRIVACY
from coordinator.privacy.dp import NOISE_SOURCES
from coordinator.privacy.released import TRUTH, with_truth
from coordinator.run.personalization import PersonalizationReport
from models.rundir import POOLED_KINDS, RunDir, RunDirError, RunKind

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
    kind = config["kind"]
    summary = RunSummary(
        path,
        kind,
        setting(config, evaluated[-1]),
        evaluated[-1],
        _curve(run, evaluated),
        label=Path(path).name or path,
        corpus=corpus_key(config),
    )
    if kind == RunKind.FEDERATED:
        truth = any(isinstance(r, dict) and TRUTH in r for r in logged)
        return _federated(summary, run, config, records, truth=truth)
    return summary


def _curve(run: RunDir, evaluated: list[dict[str, Any]]) -> list[CurvePoint]:
    """A point for each evaluated metrics line."""
    try:
        return [
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


def _federated(
    summary: RunSummary,
    run: RunDir,
    config: dict[str, Any],
    records: list[Any],
    *,
    truth: bool,
) -> RunSummary:
    """A federated run's summary: its rounds, reports, protections, attack and
    personalised phones, up to its last evaluated round as the row's metrics."""
    last = int(summary.final.get("server_round", 0))
    upto = [r for r in records if int(r.get("server_round", 0)) <= last]
    protections = _protections(config)
    personalized, notes = personalized_report(run, summary.final, last)
    if truth:
        notes = (
            *notes,
            f"{summary.name}: its tokens (and, under DP, its future-text figures) "
            "are the simulation's truth, not figures its server learned",
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
        phone_reports=sum(int(r.get("reported", 0)) for r in upto),
    )


def _protections(config: dict[str, Any]) -> tuple[str, ...]:
    """ "SecAgg", "DP", both or neither, from a federated run's config."""
    privacy = config.get("federation", {}).get("privacy", {}) or {}
    return tuple(
        name
        for name, key in (("SecAgg", "secure_aggregation"), ("DP", "dp"))
        if privacy.get(key)
    )


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
