"""The privacy ledger: every charged DP event, written down before it is released.

`privacy_ledger.jsonl` in a DP run's directory holds one JSON object a line,

    {"server_round": 7, "sampling_probability": 0.1, "noise_multiplier": 0.89,
     "kind": "released", "clip_norm": 0.43}

one per Poisson-subsampled Gaussian event the accountant was charged:
`released` (a noisy mean), `unreleased` (a round that sampled phones and
released nothing, `coordinator.protections.charge.charge_unreleased`) or `carried`
(a run made before the ledger existed: its state.json accountant's rounds,
copied once). `clip_norm` is the clip bound after the round (adaptive clipping
moves it; None when the round left it as it was).

The rules, which make the ledger append-only and never lost:

- A round's event is appended, flushed and fsync'd before anything of that round
  is saved or shown: the model, the metrics line, state.json, the TUI's events.
- Nothing rewrites the ledger: not a resume, not `coordinator.run.store`'s repairs
  (a fallback to an earlier checkpoint, a rebuilt state.json), which leave it
  alone. A resume rebuilds the accountant from the ledger's events, every one of
  them, so epsilon after any repair is at least epsilon before it.
- A replayed round is charged again: a kill after a round's event was written
  but before the round was saved makes the resume run that round again, with
  fresh noise, and it may release again. So epsilon after a resume is at least
  the uninterrupted run's, and equal to it when the kill fell between rounds.
- A torn final line (a line without its newline that does not parse) is an
  append a kill interrupted: the fsync had not returned, so nothing of that
  round was released. It is left out, and cut off before the next append.
- Any other damage (a line that does not parse or lacks a field, a missing
  ledger in a DP run that has rounds, fewer events than state.json's
  accountant) is a `LedgerError`: the run refuses to continue, naming the file
  and line, rather than guess a lower epsilon.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from coordinator.privacy.accountant import PrivacyAccountant
from coordinator.protections.state import PrivacyState
from coordinator.run import store
from models.files import append_line, atomic_write_text
from models.rundir import RunDir, RunDirError

LEDGER_NAME = "privacy_ledger.jsonl"
# What an event records: a release, a charged round that released nothing, or a
# round carried over from an older run's state.json.
KINDS: tuple[str, ...] = ("released", "unreleased", "carried")


class LedgerError(RunDirError):
    """The privacy ledger is damaged or missing; the message names file and line."""


@dataclass(frozen=True)
class LedgerEvent:
    """One charged Poisson-subsampled Gaussian release."""

    server_round: int
    sampling_probability: float  # q
    noise_multiplier: float  # z as accounted (z_eff, realised shares, scaled)
    kind: str  # one of KINDS
    clip_norm: float | None = None  # the clip bound after the round, if it moved

    def to_line(self) -> str:
        """The event's line, strict JSON with its newline."""
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def parse(cls, raw: bytes) -> LedgerEvent:
        """The event of one line; ValueError says what is wrong with it."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        server_round, kind = data.get("server_round"), data.get("kind")
        if isinstance(server_round, bool) or not isinstance(server_round, int):
            raise ValueError(f"server_round {server_round!r} is not an integer")
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        q, z = _number(data, "sampling_probability"), _number(data, "noise_multiplier")
        if not (0 <= q <= 1 and z >= 0):
            raise ValueError(f"sampling_probability {q} or noise_multiplier {z}")
        clip = None if data.get("clip_norm") is None else _number(data, "clip_norm")
        return cls(server_round, q, z, kind, clip)


def _number(data: dict[str, Any], name: str) -> float:
    """A finite number field of a ledger line."""
    value = data.get(name)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
    ):
        raise ValueError(f"{name} {value!r} is not a finite number")
    return float(value)


def round_event(server_round: int, figures: dict[str, Any]) -> LedgerEvent | None:
    """The event a round's privacy figures (`RoundMetrics.privacy`) charged, or
    None when the round charged nothing (no DP, or no phone was sampled)."""
    if "noise_multiplier" not in figures or "sampling_probability" not in figures:
        return None
    unreleased = bool(figures.get("charged_unreleased"))
    return LedgerEvent(
        server_round=server_round,
        sampling_probability=float(figures["sampling_probability"]),
        noise_multiplier=float(figures["noise_multiplier"]),
        kind="unreleased" if unreleased else "released",
        clip_norm=figures.get("next_clip_norm"),
    )


class PrivacyLedger:
    """The append-only `privacy_ledger.jsonl` of one run directory."""

    def __init__(self, run_path: str | Path) -> None:
        self.path = Path(run_path) / LEDGER_NAME

    def start(self) -> None:
        """Create the (empty) ledger of a new DP run, durably."""
        if self.path.exists() and self.events():
            raise LedgerError(f"{self.path}: already holds charged events")
        atomic_write_text(self.path, "")

    def append(self, event: LedgerEvent) -> None:
        """Append one event and fsync it; returns only once it is on disk."""
        _, torn_at = self._scan()
        self._end_lines(torn_at)
        append_line(self.path, event.to_line())

    def _end_lines(self, torn_at: int | None) -> None:
        """Cut off a torn last line (an append a kill interrupted) and give a
        whole last event that lost its newline its newline, durably."""
        with open(self.path, "r+b") as handle:
            if torn_at is not None:
                handle.truncate(torn_at)
            end = handle.seek(0, os.SEEK_END)
            if end and handle.seek(end - 1) >= 0 and handle.read(1) != b"\n":
                handle.write(b"\n")
            elif torn_at is None:
                return  # nothing changed
            handle.flush()
            os.fsync(handle.fileno())

    def events(self) -> list[LedgerEvent]:
        """Every complete event, in the order charged (a torn last line left out).

        Raises:
            LedgerError: a damaged line, named with its number.
        """
        return self._scan()[0]

    def _scan(self) -> tuple[list[LedgerEvent], int | None]:
        """The events and, when the last line is torn, the offset it starts at."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise LedgerError(f"{self.path}: missing") from None
        except OSError as error:
            raise LedgerError(f"{self.path}: unreadable ({error})") from None
        lines = data.split(b"\n")
        events: list[LedgerEvent] = []
        offset = 0
        for number, raw in enumerate(lines, start=1):
            last = number == len(lines)  # b"" after a final newline
            try:
                if raw.strip():
                    events.append(LedgerEvent.parse(raw))
            except ValueError as error:
                if last:
                    return events, offset
                raise LedgerError(
                    f"{self.path}: line {number} is damaged ({error}); the epsilon "
                    "this run spent cannot be rebuilt, so it does not continue"
                ) from None
            offset += len(raw) + 1
        return events, None

    def accountant(self) -> PrivacyAccountant:
        """The accountant fed every charged event, in order."""
        accountant = PrivacyAccountant()
        for event in self.events():
            accountant.record_round(event.sampling_probability, event.noise_multiplier)
        return accountant

    def clip_after(self, server_round: int) -> float | None:
        """The clip bound after `server_round`: that of the last event charged for
        a round at or before it that moved the bound (None: none did)."""
        clips = [
            e.clip_norm
            for e in self.events()
            if e.server_round <= server_round and e.clip_norm is not None
        ]
        return clips[-1] if clips else None

    def carry(self, accountant: PrivacyAccountant) -> None:
        """Start the ledger of a run made before it existed, from its state.json
        accountant: one `carried` event per recorded round."""
        self.start()
        server_round = 0
        for record in accountant.records:
            for _ in range(record.rounds):
                server_round += 1
                self.append(
                    LedgerEvent(
                        server_round,
                        record.sampling_probability,
                        record.noise_multiplier,
                        "carried",
                    )
                )


def resumed_accountant(
    ledger: PrivacyLedger,
    *,
    saved: PrivacyAccountant,
    server_round: int,
    write: bool,
) -> PrivacyAccountant:
    """The accountant a resumed DP run continues with: the ledger's.

    Args:
        ledger: The run's ledger.
        saved: The accountant state.json holds (empty when a repair rebuilt it).
        server_round: The round the run resumes from.
        write: Whether this process may create the ledger (rank 0).

    Raises:
        LedgerError: the ledger is missing though rounds ran, damaged, or holds
            fewer rounds than state.json's accountant.
    """
    if not ledger.path.exists():
        if saved.rounds == 0 and server_round > 0:
            raise LedgerError(
                f"{ledger.path}: missing, though {server_round} DP rounds ran; the "
                "epsilon they spent cannot be rebuilt, so the run does not continue"
            )
        if write:
            ledger.carry(saved)
        else:
            return saved
    accountant = ledger.accountant()
    if accountant.rounds < saved.rounds:
        raise LedgerError(
            f"{ledger.path}: holds {accountant.rounds} charged rounds, fewer than "
            f"the {saved.rounds} state.json records; the ledger lost events, so "
            "the run does not continue"
        )
    return accountant


def resumed_privacy(
    run: RunDir, *, dp: bool, server_round: int, write: bool
) -> PrivacyState:
    """The privacy state a resume continues with: state.json's clip bound (or the
    ledger's, when a repair rebuilt state.json) and the accountant of every event
    in the ledger, so epsilon never goes down (`dp`: whether the run has DP)."""
    saved = PrivacyState.from_dict(store.read_privacy_state(run))
    if not dp:
        return saved
    try:
        before = saved.load_accountant()
    except (KeyError, TypeError, ValueError) as error:
        raise RunDirError(f"{run.state_path}: bad 'privacy' ({error})") from None
    ledger = PrivacyLedger(run.path)
    accountant = resumed_accountant(
        ledger, saved=before, server_round=server_round, write=write
    )
    clip = saved.clip_norm
    if clip is None and ledger.path.exists():
        clip = ledger.clip_after(server_round)
    return PrivacyState(accountant.to_dict(), clip)
