"""Crash repair of a federated run before it resumes (`repair_for_resume`).

What a kill or a damaged disk can still leave is mended, never deleting
anything that was saved: temporary files of killed writes are removed; a latest
checkpoint that is truncated, zero-filled or non-finite is moved aside and the
run falls back to the last intact round; a lost state.json is rebuilt from the
checkpoints and metrics; a damaged metrics.jsonl is moved aside and rewritten
with its readable lines; a run killed before round 0 was saved is reported as
unstarted, so that the caller starts it again from its config.

No repair touches a DP run's privacy ledger (`coordinator.privacy.ledger`): a fallback
rewrites state.json without the accountant, and the resume rebuilds it from the
ledger's every event, so epsilon after a repair is at least epsilon before it.
A fallback keeps the screen's memory of the state.json it replaces, when that
was readable. What each round saves is `coordinator.run.store`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from coordinator.privacy.released import figure
from coordinator.round.robust import ScreenHistory
from coordinator.run.store import (
    Totals,
    load_global,
    load_server_state,
    server_state_path,
    write_progress,
)
from corpora.tokenizer import WordTokenizer
from models.checkpoint import CheckpointError
from models.rundir import RunDir, RunDirError, RunKind, move_aside


@dataclass(frozen=True)
class Repair:
    """What `repair_for_resume` did, in sentences for the user."""

    notes: tuple[str, ...] = ()
    # The run was killed before round 0 was saved: nothing of it is worth keeping,
    # and the caller starts it again from its config.json (`clear_unstarted`).
    unstarted: bool = False


def is_unstarted(run: RunDir) -> bool:
    """Whether a federated run directory never completed its round-0 save."""
    try:
        kind = run.read_kind()
    except RunDirError:
        return False
    return (
        kind is RunKind.FEDERATED
        and not run.state_path.exists()
        and not run.read_metrics()
        and all(step == 0 for step in run.checkpoint_steps())
        and not (run.path / "phones").exists()
    )


def clear_unstarted(run: RunDir) -> None:
    """Remove the few files of an unstarted run, so that it can be created again.

    Only what round 0 regenerates from the seed is removed: config.json,
    tokenizer.json and round 0's model and server state.
    """
    if not is_unstarted(run):
        raise RunDirError(f"{run.path}: not an unstarted run; nothing removed")
    for path in (
        run.checkpoint_path(0),
        server_state_path(run, 0),
        run.tokenizer_path,
        run.config_path,
    ):
        path.unlink(missing_ok=True)


def _damage(run: RunDir, server_round: int, tokenizer: WordTokenizer) -> str | None:
    """Why round `server_round` cannot be resumed from, or None when it can."""
    try:
        load_global(run, server_round, tokenizer)
        load_server_state(run, server_round)
    except (RunDirError, CheckpointError) as error:
        return str(error)
    return None


def _last_records(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The last metrics line of each round."""
    by_round: dict[int, dict[str, Any]] = {}
    for record in records:
        value = record.get("server_round")
        if isinstance(value, int) and not isinstance(value, bool):
            by_round[value] = record
    return by_round


def _progress_at(
    server_round: int, records: dict[int, dict[str, Any]], start_clock: float
) -> tuple[float, Totals] | None:
    """Clock and totals after `server_round`, from the metrics lines, if known.

    The clock after a round is when the next round started, so the next round's
    line is needed; round 0's clock is the fleet's start.
    """
    try:
        if server_round == 0:
            clock = start_clock
            totals = Totals()
        else:
            clock = float(records[server_round + 1]["started_at"])
            line = records[server_round]
            totals = Totals(
                int(figure(line, "tokens_total")),  # the truth's, when protected
                int(line["bytes_total"]),
                float(line["wall_seconds_total"]),
            )
    except (KeyError, TypeError, ValueError):
        return None
    return (clock, totals) if math.isfinite(clock) else None


def _fall_back(
    run: RunDir,
    *,
    latest: int | None,
    tokenizer: WordTokenizer,
    start_clock: float,
    screen: ScreenHistory | None = None,
) -> tuple[int, list[str]]:
    """Rewrite state.json for the last intact round at or before `latest`.

    `latest` is state.json's round (None: state.json is lost); `screen` the
    screen's memory to keep. The privacy state is left out: the resume rebuilds
    it from the privacy ledger. Damaged files are moved aside. Returns the round
    resumed from and notes.
    """
    notes: list[str] = []
    records = _last_records(run.read_metrics())
    servers = {
        int(p.name[len("server_") : -len(".safetensors")])
        for p in run.checkpoint_dir.glob("server_*.safetensors")
        if p.name[len("server_") : -len(".safetensors")].isdigit()
    }
    candidates = sorted(set(run.checkpoint_steps()) & servers, reverse=True)
    if latest is not None:
        candidates = [r for r in candidates if r <= latest]
    for server_round in candidates:
        reason = _damage(run, server_round, tokenizer)
        if reason is not None:
            for path in (
                run.checkpoint_path(server_round),
                server_state_path(run, server_round),
            ):
                if path.exists() and str(path) in reason:
                    notes.append(
                        f"moved the damaged {path.name} to {move_aside(path).name}"
                    )
            notes.append(f"round {server_round} cannot be resumed from: {reason}")
            continue
        progress = _progress_at(server_round, records, start_clock)
        if progress is None:
            continue  # its clock is unknown: an earlier round replays this one
        clock, totals = progress
        write_progress(
            run, server_round=server_round, clock=clock, totals=totals, screen=screen
        )
        return server_round, notes
    raise RunDirError(
        f"{run.path}: no saved round can be resumed from "
        f"({'; '.join(notes) or 'no intact checkpoint with its metrics'}); start a "
        "new run"
    )


def _repair_metrics(run: RunDir, server_round: int) -> list[str]:
    """Move a damaged metrics.jsonl aside and keep its readable lines; notes."""
    records, damaged = run.scan_metrics()
    notes = []
    if damaged:
        aside = run.rewrite_metrics(records)
        shown = ", ".join(str(n) for n in damaged[:5]) + (
            ", ..." if len(damaged) > 5 else ""
        )
        notes.append(
            f"metrics.jsonl had {len(damaged)} unreadable line(s) ({shown}); the "
            f"file was moved to {aside.name if aside else '?'} and rewritten with "
            "its readable lines"
        )
    logged = {r.get("server_round") for r in records}
    missing = [r for r in range(1, server_round + 1) if r not in logged]
    if missing:
        notes.append(
            f"metrics.jsonl holds no line for {len(missing)} of the {server_round} "
            f"saved rounds (first: round {missing[0]}); the run continues without them"
        )
    return notes


def _screen_of(state: dict[str, Any] | None) -> ScreenHistory | None:
    """The screen's memory a readable state.json holds (None: none readable)."""
    if state is None or state.get("screen") is None:
        return None
    try:
        return ScreenHistory.from_dict(state["screen"])
    except (TypeError, ValueError, AttributeError):
        return None


def repair_for_resume(run: RunDir, *, start_clock: float | None = None) -> Repair:
    """Make a killed or damaged federated run resumable, losing nothing saved.

    Args:
        run: the run directory.
        start_clock: the simulated clock at round 0 (default: from config.json's
            fleet start hour).

    Raises:
        RunDirError: the run cannot be resumed at all; the message says why.
    """
    config = run.config_of(RunKind.FEDERATED)
    notes: list[str] = []
    removed = run.remove_stale_temporaries()
    if removed:
        notes.append(
            f"removed {len(removed)} temporary file(s) left by an interrupted write "
            f"({', '.join(p.name for p in removed[:3])})"
        )
    if is_unstarted(run):
        return Repair(tuple(notes), unstarted=True)
    if start_clock is None:
        fleet = (config.get("federation") or {}).get("fleet") or {}
        start_clock = float(fleet.get("start_hour_utc", 20.0)) * 3600.0
    tokenizer = run.load_tokenizer()
    try:
        state = run.read_state()
    except RunDirError as error:
        state = None
        aside = move_aside(run.state_path)
        notes.append(f"{error}; moved it to {aside.name}")
    latest = None if state is None else state.get("server_round")
    if state is not None and not isinstance(latest, int):
        raise RunDirError(f"{run.state_path}: not a federated state")
    if latest is not None and _damage(run, latest, tokenizer) is None:
        return Repair(tuple(notes + _repair_metrics(run, latest)))
    resumed, more = _fall_back(
        run,
        latest=latest,
        tokenizer=tokenizer,
        start_clock=start_clock,
        screen=_screen_of(state),
    )
    notes += more
    if latest is None:
        notes.append(
            f"state.json was missing; rebuilt it for round {resumed} from the "
            "checkpoints and metrics"
        )
    else:
        notes.append(
            f"resuming from round {resumed}, the last intact one; rounds "
            f"{resumed + 1} to {latest} run again"
        )
    return Repair(tuple(notes + _repair_metrics(run, resumed)))
