"""Personalisation measured across the fleet (Wang et al. 2019, arXiv 1910.10252).

The phones of the run's future-text cohort (`coordinator.run.evaluation.future_cohort`,
the phones the run's own evaluation measures) each fine-tune the global model on
their own history and measure it on their own future text
(`device_sim.personalize.personalize_phone`). The coordinator pools what they
report: per-phone relative top-1 and top-3 gains over the global model, the share
of phones it hurts, and accuracy and keystroke savings pooled over the cohort, for
the personal model everywhere and for the gated one (personal only where it beat
the global model on the phone's validation slice). `read_report` reads the
report back for `fedtype compare`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from coordinator.config import FederationConfig, FederationConfigError
from coordinator.run.evaluation import FutureCohort, future_cohort
from coordinator.run.personal_gains import GainSummary, gain_summary
from corpora.corpus import load_corpus
from corpora.tokenizer import WordTokenizer
from device_sim.fleet import Fleet
from device_sim.personal_model import VARIANTS
from device_sim.personal_outcome import PhoneOutcome, personalize_phone
from device_sim.personalize import PersonalizationConfig
from device_sim.personalize_config import LONG_FUTURE_MESSAGES, MAX_FUTURE_MESSAGES
from models.metrics import EvalCounts, EvalMetrics, combine
from models.model import NextWordModel
from models.rundir import RunDir, RunDirError, RunKind, write_json_atomic
from models.weights import parameters_of

# The report's file in the run directory.
REPORT_NAME = "personalization.json"

# Called after each cohort phone with (phones done, cohort size, its outcome).
PhoneCallback = Callable[[int, int, PhoneOutcome | None], None]


@dataclass(frozen=True, eq=False)
class FederatedRun:
    """What personalising needs of a federated run: its global model and phones."""

    run: RunDir
    federation: FederationConfig
    tokenizer: WordTokenizer
    model: NextWordModel  # the global model of the latest checkpoint
    server_round: int  # that checkpoint's round
    fleet: Fleet
    cohort: FutureCohort


def open_federated_run(path: str) -> FederatedRun:
    """The run at `path`, its latest global model, fleet and future cohort.

    Raises:
        RunDirError: no run there, a run of another kind, or no checkpoint yet.
    """
    run = RunDir(path)
    config = run.config_of(
        RunKind.FEDERATED,
        why=": personalisation needs a federated run (made by fedtype simulate), "
        "whose phones fine-tune its global model. Central and local-only runs "
        "have no fleet of phones to personalise on",
    )
    try:
        federation = FederationConfig.from_dict(config["federation"])
    except (KeyError, TypeError, FederationConfigError) as error:
        raise RunDirError(f"{run.config_path}: incomplete ({error})") from None
    model, server_round = run.load_model()
    splits = load_corpus(run.corpus_config())
    fleet = Fleet.from_splits(splits, federation.fleet, seed=federation.seed)
    return FederatedRun(
        run=run,
        federation=federation,
        tokenizer=run.load_tokenizer(),
        model=model.eval(),
        server_round=server_round,
        fleet=fleet,
        cohort=future_cohort(fleet, federation),
    )


def measured_messages(
    run: FederatedRun, future_messages: int | None, *, long_future: bool
) -> int:
    """Future messages each phone is measured on at most: `future_messages`, or
    all of them for `long_future`, or as many as the run's evaluation uses."""
    if future_messages is not None:
        return future_messages
    if long_future:
        return MAX_FUTURE_MESSAGES
    return run.federation.future_messages_per_phone


def personalize_cohort(
    run: FederatedRun,
    config: PersonalizationConfig,
    *,
    phones: int | None = None,
    future_messages: int | None = None,
    long_future: bool = False,
    on_phone: PhoneCallback | None = None,
) -> list[PhoneOutcome]:
    """Every cohort phone personalises the global model on itself; their outcomes.

    Phones are independent: each starts from the global weights and draws from
    its own stream `(seed, "personalize", client_id)`. With `phones`, only the
    cohort's first `phones` take part: the cohort's order is a seeded hash of the
    client_ids, so they are a fair sample of it, for a quicker look. Each phone
    is measured on its oldest `future_messages` future messages (default: as many
    as the run's evaluation measures, `future_messages_per_phone`; with
    `long_future`, all of them). With `long_future`, only the phones measured on
    at least `LONG_FUTURE_MESSAGES` take part.
    """
    parameters = parameters_of(run.model)
    scratch = NextWordModel(run.model.config)
    cohort = run.cohort
    outcomes: list[PhoneOutcome] = []
    max_messages = measured_messages(run, future_messages, long_future=long_future)
    pairs = list(zip(cohort.client_ids, cohort.keystroke_texts, strict=True))
    if long_future:
        pairs = [
            (client_id, keystrokes)
            for client_id, keystrokes in pairs
            if run.fleet.phone(client_id).future_size(max_messages)
            >= LONG_FUTURE_MESSAGES
        ]
    pairs = pairs[:phones] if phones is not None else pairs
    for done, (client_id, keystroke_texts) in enumerate(pairs, start=1):
        outcome = personalize_phone(
            run.fleet.phone(client_id),
            parameters,
            model=scratch,
            tokenizer=run.tokenizer,
            config=config,
            seed=run.federation.seed,
            max_messages=max_messages,
            keystroke_texts=keystroke_texts,
        )
        if outcome is not None:
            outcomes.append(outcome)
        if on_phone is not None:
            on_phone(done, len(pairs), outcome)
    return outcomes


def variant_counts(outcome: PhoneOutcome, variant: str) -> EvalCounts:
    """A phone's future counts under "global" or one of `VARIANTS`."""
    return outcome.future(variant)


def _json_ready(value: Any) -> Any:
    """`value` with nan and infinities as None (strict JSON), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def _phone_row(outcome: PhoneOutcome) -> dict[str, Any]:
    validation = outcome.validation_global
    personal = outcome.validation_personal
    row: dict[str, Any] = {
        "client_id": outcome.client_id,
        "client_lr": outcome.client_lr,
        "steps": outcome.steps,
        "kept": outcome.kept,
        "memory_global": asdict(outcome.mixing_global),
        "memory_gated": asdict(outcome.mixing_gated),
        "future_messages": outcome.future_global.num_messages,
        "word_targets": outcome.future_global.word_targets,
        "validation_targets": validation.word_targets if validation else 0,
        "validation_global_top1_hits": validation.top1_hits if validation else 0,
        "validation_personal_top1_hits": personal.top1_hits if personal else 0,
    }
    for name in ("global", *VARIANTS):
        counts = outcome.future(name)
        row[f"{name}_top1_hits"] = counts.top1_hits
        row[f"{name}_top3_hits"] = counts.top3_hits
        paired = outcome.paired_of(name)
        if paired is not None:
            row[f"{name}_wins"], row[f"{name}_losses"] = paired.wins, paired.losses
    return row


def _gains(outcomes: Sequence[PhoneOutcome]) -> dict[str, Any]:
    """Each variant's `GainSummary` over `outcomes`, JSON-ready."""
    return {
        name: asdict(
            gain_summary(
                [(o.future(name), o.future_global) for o in outcomes],
                [o.paired_of(name) for o in outcomes],
            )
        )
        for name in VARIANTS
    }


def build_report(
    run: FederatedRun,
    config: PersonalizationConfig,
    outcomes: Sequence[PhoneOutcome],
    *,
    wall_seconds: float,
    future_messages: int | None = None,
    long_future: bool = False,
) -> dict[str, Any]:
    """The JSON-ready report: settings, pooled metrics, gains, per-phone rows.

    `gain_long_future` repeats the gains on the phones measured on at least
    `LONG_FUTURE_MESSAGES` future messages, whose per-phone figures mean more.
    """
    pooled = {
        name: combine([o.future(name) for o in outcomes]).as_dict()
        for name in ("global", *VARIANTS)
    }
    long = [o for o in outcomes if o.future_global.num_messages >= LONG_FUTURE_MESSAGES]
    trained = [o for o in outcomes if o.steps]
    report = {
        "run": str(run.run.path),
        "server_round": run.server_round,
        "seed": run.federation.seed,
        "settings": asdict(config),
        "phones": len(outcomes),
        "cohort_phones": len(run.cohort.client_ids),
        "long_future_only": long_future,
        "future_messages_per_phone": measured_messages(
            run, future_messages, long_future=long_future
        ),
        "phones_trained": len(trained),
        "kept_share": sum(o.kept for o in outcomes) / len(outcomes)
        if outcomes
        else math.nan,
        "memory_share": sum(o.mixing_gated.mixes for o in outcomes) / len(outcomes)
        if outcomes
        else math.nan,
        "future": pooled,
        "gain": _gains(outcomes),
        "long_future_messages": LONG_FUTURE_MESSAGES,
        "long_future_phones": len(long),
        "gain_long_future": _gains(long),
        "wall_seconds": wall_seconds,
        "per_phone": [_phone_row(o) for o in outcomes],
    }
    return _json_ready(report)


def write_report(run: RunDir, report: dict[str, Any]) -> str:
    """Write the report into the run directory, atomically; its path."""
    path = run.path / REPORT_NAME
    write_json_atomic(path, report)
    return str(path)


@dataclass(frozen=True)
class PersonalizationReport:
    """The pooled part of a run's personalization.json (`build_report`)."""

    server_round: int  # the round of the global model that was personalised
    phones: int  # cohort phones measured
    kept_share: float  # phones on which the gate kept the personal model
    trained: str  # which weights fine-tuned (`PersonalizationConfig.trained`)
    future: dict[str, EvalMetrics]  # "global" and each of VARIANTS, pooled
    gain: dict[str, GainSummary]  # each of VARIANTS against the global model


def _number(value: Any) -> float:
    """A JSON number as a float; None (how the report writes nan) as nan."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not a count")
    return value


def _fields_of(cls: type[Any], data: dict[str, Any]) -> Any:
    """`cls` (a dataclass of ints and floats) from the JSON object `data`."""
    # A field's type is the string "int" where its module postpones annotations.
    # Fields with a default (added later) may be missing from an older report.
    return cls(
        **{
            f.name: _count(data[f.name])
            if f.type in ("int", int)
            else _number(data.get(f.name) if f.default is not MISSING else data[f.name])
            for f in fields(cls)
        }
    )


def read_report(run: RunDir) -> PersonalizationReport | None:
    """The run's personalisation report; None when it has none.

    Raises:
        RunDirError: the file exists but cannot be read or is not a report.
    """
    path = run.path / REPORT_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise RunDirError(f"{path}: unreadable ({error})") from None
    try:
        return PersonalizationReport(
            server_round=_count(data["server_round"]),
            phones=_count(data["phones"]),
            kept_share=_number(data["kept_share"]),
            trained=str(data.get("settings", {}).get("trained", "all")),
            future={
                name: _fields_of(EvalMetrics, data["future"][name])
                for name in ("global", *VARIANTS)
                if name in data["future"] or name in ("global", "personal", "gated")
            },
            gain={
                name: _fields_of(GainSummary, data["gain"][name])
                for name in VARIANTS
                if name in data["gain"] or name in ("personal", "gated")
            },
        )
    except KeyError as error:
        raise RunDirError(
            f"{path}: not a personalisation report (no {error})"
        ) from None
    except (TypeError, AttributeError) as error:
        raise RunDirError(f"{path}: not a personalisation report ({error})") from None
