"""One federated round as one call: `run_round(state, env, config) -> (state, metrics)`.

The round follows Bonawitz et al. 2019 (arXiv 1902.01046) and reads as its
algorithm: select among the eligible phones, send the global weights, train on
the phones until enough reports arrived or the deadline passed, screen
(`coordinator.round.robust`), aggregate under the run's protection
(`coordinator.protections`: none, SecAgg, DP or both, chosen once per run),
step the server optimizer (`coordinator.round.strategies`, FedAvg of McMahan et al.
2017 and its variants), charge the budget. A round with too few valid reports
is abandoned, the global model unchanged and the reason recorded, unless the
protection must release whatever arrived (DP). Measurement (the attack probe)
observes what the server held through `RoundEnvironment.observers`; it is not a
step of the round. Nothing here does I/O; `coordinator.run.simulation` saves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from coordinator.config import FederationConfig
from coordinator.events import ClientDone, EventCallback, RoundStarted, emit
from coordinator.protections import PrivacyState, Protection, Release, protection_for
from coordinator.protections.state import AggregationAborted, RoundAsk
from coordinator.round.robust import Rejection, ScreenHistory
from coordinator.round.selection import Arrival, RoundPlan, plan_round
from coordinator.round.strategies import Parameters, StrategyState, server_step
from corpora.tokenizer import WordTokenizer
from device_sim.executor import ClientExecutor, ClientSummary, TrainedRound
from device_sim.fleet import Fleet
from device_sim.profile import drops_out


@dataclass(frozen=True, eq=False)
class ServerState:
    """Everything the server carries from one round to the next."""

    server_round: int  # rounds completed, abandoned ones included
    parameters: Parameters  # the global model's weights, in parameter order
    strategy: StrategyState  # the server optimizer's buffers
    clock: float  # simulated seconds (from day 0, 00:00 UTC) the next round starts
    screen: ScreenHistory = ScreenHistory()  # the screen's memory of past rounds
    privacy: PrivacyState = PrivacyState()  # the accountant, DP's clip bound


@dataclass(frozen=True)
class HeldRound:
    """What the server held after aggregating a round, for observers."""

    server_round: int
    trained: TrainedRound  # the harness's record of the phones' work
    release: Release  # the delta, the sum the server saw, DP's noisy mean


# Measurement: called with each aggregated round, returns figures for its line.
RoundObserver = Callable[[HeldRound], dict[str, Any]]


@dataclass(frozen=True)
class RoundEnvironment:
    """What a round works with besides the state: phones and their executor."""

    fleet: Fleet
    executor: ClientExecutor
    tokenizer: WordTokenizer
    max_len: int  # the model's window, for the phones' step counts
    pinned: tuple[str, ...] = ()  # phones always selected when eligible
    observers: tuple[RoundObserver, ...] = ()  # measurement (the attack probe)


@dataclass(frozen=True)
class RoundMetrics:
    """What happened in one round (a metrics.jsonl line without the totals)."""

    server_round: int
    started_at: float  # simulated seconds at the round's start
    eligible: int
    selected: int
    reported: int  # reports that arrived in time and were screened
    dropped: int
    late: int  # reports past the deadline or after the round closed
    rejected: int
    rejections: list[dict[str, str]] = field(default_factory=list)
    abandoned: bool = False
    abandon_reason: str | None = None
    num_examples: int = 0  # sequences behind the aggregated updates
    train_loss: float | None = None  # example-weighted mean local step loss
    loss_before: float | None = None  # ... of the global weights on phones' data
    loss_after: float | None = None  # ... of the phones' weights after training
    tokens: int = 0  # targets trained on by the phones that reported
    bytes_down: int = 0
    bytes_up: int = 0
    simulated_seconds: float = 0.0  # from the round's start to its close
    wall_seconds: float = 0.0
    # The protections' and the attack probe's figures (coordinator.protections,
    # coordinator.measure.attack_probe), merged into the line: epsilon, attack, ...
    privacy: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the privacy figures at the top level)."""
        line = asdict(self)
        figures = line.pop("privacy")
        return {**line, **figures}


def model_bytes(parameters: Parameters) -> int:
    """Bytes of the weights sent down (and of an update sent up)."""
    return sum(t.numel() * t.element_size() for t in parameters)


def run_round(
    state: ServerState,
    env: RoundEnvironment,
    config: FederationConfig,
    *,
    protection: Protection | None = None,
    on_event: EventCallback | None = None,
) -> tuple[ServerState, RoundMetrics]:
    """Run round `state.server_round + 1`; returns the new state and its metrics.

    `protection` is the run's (`protection_for(config)` when not given).
    """
    protection = protection or protection_for(config)
    round_ = _Round(state, env, config, protection, on_event)
    if round_.pool < config.min_reports:
        return round_.skip()
    plan = round_.select()
    trained = round_.train(plan)
    accepted = round_.screen(trained, plan)
    if len(accepted) < config.min_reports and not protection.must_release:
        return round_.abandon(round_.too_few(accepted, plan))
    try:
        release = protection.aggregate(trained, accepted, round_.ask)
    except AggregationAborted as aborted:
        return round_.abandon(aborted.reason, aborted.figures)
    round_.observe(HeldRound(round_.server_round, trained, release))
    parameters, strategy = server_step(
        config.strategy, state.parameters, release.delta, state.strategy
    )
    if not all(bool(torch.isfinite(p).all()) for p in parameters):
        return round_.abandon(NON_FINITE)
    return round_.apply(parameters, strategy, release.state)


NON_FINITE = "the aggregate would leave the model non-finite; not applied"


class _Round:
    """One round's stages and its line so far; how it ends: skipped, abandoned
    (the protection charges it), or applied."""

    def __init__(
        self,
        state: ServerState,
        env: RoundEnvironment,
        config: FederationConfig,
        protection: Protection,
        on_event: EventCallback | None,
    ) -> None:
        self.started = time.perf_counter()
        self.state, self.env, self.config = state, env, config
        self.protection, self.on_event = protection, on_event
        self.server_round = state.server_round + 1
        self.eligible = env.fleet.eligible(state.clock, self.server_round)
        self.pool = len(self.eligible)
        self.line = RoundMetrics(
            self.server_round, state.clock, self.pool, 0, 0, 0, 0, 0
        )
        self.ask = RoundAsk(
            config,
            self.server_round,
            self.pool,
            state.privacy,
            client_ids=tuple(env.fleet.client_ids),
            pinned=env.pinned,
        )
        self.screen_history = state.screen
        self.rejections: list[Rejection] = []

    def select(self) -> RoundPlan:
        """The protection's sampler picks; each phone's own time to report and
        its dropout decide who reports in time."""
        sampler, config = self.protection.sampler, self.config
        selected = sampler.select(self.eligible, self.ask)
        size = model_bytes(self.state.parameters)
        arrivals = [
            Arrival(
                client_id,
                self.env.executor.report_seconds(
                    self.env.fleet.phone(client_id),
                    model_bytes=size,
                    step_seconds=config.fleet.step_seconds,
                ),
                drops_out(
                    config.seed, self.server_round, client_id, config.fleet.dropout_rate
                ),
            )
            for client_id in selected
        ]
        goal = sampler.goal(selected, config)
        plan = plan_round(arrivals, goal=goal, deadline=config.report_deadline_s)
        self.line = replace(self.line, selected=len(selected))
        started = RoundStarted(
            self.server_round, self.pool, len(selected), len(plan.on_time)
        )
        emit(self.on_event, started)
        return plan

    def train(self, plan: RoundPlan) -> TrainedRound:
        """The global weights go down; the phones that report in time train,
        each report announced as it comes."""
        finished: list[str] = []

        def on_report(report: ClientSummary) -> None:
            finished.append(report.client_id)
            # Without revealed norms the phone's count and loss reach the
            # server only summed.
            shown = report.metrics
            done = ClientDone(
                self.server_round,
                report.client_id,
                len(finished),
                len(plan.on_time),
                None if shown is None else report.num_examples,
                None if shown is None else shown.train_loss,
            )
            emit(self.on_event, done)

        return self.env.executor.train(
            [self.env.fleet.phone(c) for c in plan.on_time],
            self.state.parameters,
            server_round=self.server_round,
            on_report=on_report,
            reveal_norms=self.protection.reveals_norms,
        )

    def screen(self, trained: TrainedRound, plan: RoundPlan) -> list[str]:
        """The accepted phones, by the protection's screen; the line records
        the round from the phones' own reports."""
        accepted, rejections, self.screen_history = self.protection.screen(
            trained.summaries, self.ask, self.state.screen
        )
        self.rejections = rejections
        self.line = _line(self.line, plan, trained, accepted, rejections)
        return accepted

    def too_few(self, accepted: list[str], plan: RoundPlan) -> str:
        """Why a round short of valid reports is abandoned."""
        return (
            f"only {len(accepted)} valid reports of {self.line.selected} selected "
            f"({len(plan.dropped)} dropped, {len(plan.late)} late, "
            f"{len(self.rejections)} rejected), {self.config.min_reports} needed"
        )

    def observe(self, held: HeldRound) -> None:
        """The protection's figures and the observers' measurements, in the line."""
        figures = dict(held.release.figures)
        for observer in self.env.observers:
            figures.update(observer(held))
        bytes_up, per_phone = self.line.bytes_up, held.release.bytes_up_per_phone
        if per_phone is not None:
            bytes_up = self.line.reported * per_phone
        self.line = replace(self.line, privacy=figures, bytes_up=bytes_up)

    def skip(self) -> tuple[ServerState, RoundMetrics]:
        """Too few phones eligible: nobody is asked, nothing screened or charged."""
        emit(self.on_event, RoundStarted(self.server_round, self.pool, 0, 0))
        needed = self.config.min_reports
        reason = f"only {self.pool} phones eligible, {needed} reports needed"
        return self._finish(replace(self.line, abandoned=True, abandon_reason=reason))

    def abandon(
        self, reason: str, fault: dict[str, Any] | None = None
    ) -> tuple[ServerState, RoundMetrics]:
        """Phones were asked and nothing is applied; the protection charges it."""
        privacy, figures = self.protection.charge_abandoned(self.ask)
        line = replace(
            self.line,
            abandoned=True,
            abandon_reason=reason,
            privacy={**figures, **(fault or {})},
        )
        return self._finish(line, screen=self.screen_history, privacy=privacy)

    def apply(
        self, parameters: Parameters, strategy: StrategyState, privacy: PrivacyState
    ) -> tuple[ServerState, RoundMetrics]:
        """The server stepped: the new weights, buffers, screen and budget."""
        return self._finish(
            self.line,
            parameters=parameters,
            strategy=strategy,
            screen=self.screen_history,
            privacy=privacy,
        )

    def _finish(
        self, line: RoundMetrics, **changes: Any
    ) -> tuple[ServerState, RoundMetrics]:
        """The next state (clock advanced) and the round's line with wall time."""
        step = max(line.simulated_seconds, self.config.round_interval_s)
        new_state = replace(
            self.state,
            server_round=line.server_round,
            clock=self.state.clock + step,
            **changes,
        )
        wall = time.perf_counter() - self.started
        return new_state, replace(line, wall_seconds=wall)


def _line(
    line: RoundMetrics,
    plan: RoundPlan,
    trained: TrainedRound,
    accepted: list[str],
    rejections: list[Rejection],
) -> RoundMetrics:
    """The round's record from the phones' own reports: the simulation's truth,
    which `coordinator.privacy.released` files by what the server may see."""
    reports = trained.phone_figures()
    kept_ids = set(accepted)
    kept = [r for r in reports if r.client_id in kept_ids]
    size = model_bytes(trained.reference)
    return replace(
        line,
        reported=len(reports),
        dropped=len(plan.dropped),
        late=len(plan.late),
        rejected=len(rejections),
        rejections=[{"client_id": r.client_id, "reason": r.reason} for r in rejections],
        num_examples=sum(r.num_examples for r in kept),
        train_loss=_weighted(kept, "train_loss"),
        loss_before=_weighted(kept, "loss_before"),
        loss_after=_weighted(kept, "loss_after"),
        tokens=sum(r.metrics.num_tokens for r in reports if r.metrics),
        bytes_down=line.selected * size,
        bytes_up=sum(size if r.bytes_up is None else r.bytes_up for r in reports),
        simulated_seconds=plan.closes_after,
    )


def _weighted(reports: list[ClientSummary], name: str) -> float | None:
    total = sum(r.num_examples for r in reports)
    if not total:
        return None
    return sum(getattr(r.metrics, name) * r.num_examples for r in reports) / total
