"""One federated round as one call: `run_round(state, env, config) -> (state, metrics)`.

The round follows Bonawitz et al. 2019 (arXiv 1902.01046): selection among the
eligible phones with over-selection, configuration (the global weights go down),
reporting until `clients_per_round` reports arrived or the deadline passed, then
screening (`coordinator.robust`) and aggregation (`coordinator.strategies`, FedAvg
of McMahan et al. 2017 and its server-optimizer variants). A round with too few
valid reports is abandoned: the global model stays as it was and the reason is
recorded. Under DP it is not: whether a round is released must not depend on
how many valid reports arrived, so the noisy sum over the fixed denominator is
released whatever arrived (docs/privacy.md, "Sampling and accounting"). Nothing
here does I/O; `coordinator.simulation` saves the results.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from coordinator.attack_probe import probe_round
from coordinator.config import FederationConfig
from coordinator.events import ClientDone, EventCallback, RoundStarted, emit
from coordinator.private_round import (
    PrivacyState,
    blind,
    charge_unreleased,
    private_delta,
    sampling_probability,
)
from coordinator.robust import (
    ScreenConfig,
    ScreenHistory,
    compares_users,
    screen_stats,
)
from coordinator.robust_aggregation import aggregate_updates
from coordinator.selection import Arrival, plan_round, poisson_select, select_clients
from coordinator.strategies import Parameters, StrategyState, server_step
from coordinator.sum_checks import SumCheckFailed
from corpora.tokenizer import WordTokenizer
from device_sim.executor import ClientExecutor, ClientSummary, TrainedRound
from device_sim.fleet import Fleet
from device_sim.profile import drops_out, work_seconds
from device_sim.secagg import SecAggAbort
from device_sim.truth import with_phone_figures


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
class RoundEnvironment:
    """What a round works with besides the state: phones and their executor."""

    fleet: Fleet
    executor: ClientExecutor
    tokenizer: WordTokenizer
    max_len: int  # the model's window, for the phones' step counts
    pinned: tuple[str, ...] = ()  # phones always selected when eligible


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
    # The protections' and the attack probe's figures (coordinator.private_round,
    # coordinator.attack_probe), merged into the line: epsilon, attack, ...
    privacy: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the privacy figures at the top level)."""
        line = asdict(self)
        figures = line.pop("privacy")
        return {**line, **figures}


def model_bytes(parameters: Parameters) -> int:
    """Bytes of the weights sent down (and of an update sent up)."""
    return sum(t.numel() * t.element_size() for t in parameters)


def _weighted(reports: list[ClientSummary], name: str) -> float | None:
    total = sum(r.num_examples for r in reports)
    if not total:
        return None
    return sum(getattr(r.metrics, name) * r.num_examples for r in reports) / total


def _arrivals(
    selected: list[str],
    env: RoundEnvironment,
    config: FederationConfig,
    *,
    server_round: int,
    size: int,
) -> list[Arrival]:
    """When each selected phone would report, from its profile and its step count."""
    arrivals = []
    for client_id in selected:
        phone = env.fleet.phone(client_id)
        steps = phone.local_steps(env.tokenizer, config.local, env.max_len)
        seconds = work_seconds(
            phone.profile,
            steps=steps,
            model_bytes=size,
            step_seconds=config.fleet.step_seconds,
        )
        dropped = drops_out(
            config.seed, server_round, client_id, config.fleet.dropout_rate
        )
        arrivals.append(Arrival(client_id, seconds, dropped))
    return arrivals


def _finish(
    state: ServerState,
    metrics: RoundMetrics,
    config: FederationConfig,
    started: float,
    **changes: Any,
) -> tuple[ServerState, RoundMetrics]:
    """The next state (clock advanced) and the round's metrics with wall time."""
    step = max(metrics.simulated_seconds, config.round_interval_s)
    new_state = replace(
        state,
        server_round=metrics.server_round,
        clock=state.clock + step,
        **changes,
    )
    return new_state, replace(metrics, wall_seconds=time.perf_counter() - started)


def run_round(
    state: ServerState,
    env: RoundEnvironment,
    config: FederationConfig,
    *,
    on_event: EventCallback | None = None,
) -> tuple[ServerState, RoundMetrics]:
    """Run round `state.server_round + 1`; returns the new state and its metrics."""
    started = time.perf_counter()
    server_round = state.server_round + 1
    needed = config.min_reports
    eligible = env.fleet.eligible(state.clock, server_round)
    base = RoundMetrics(server_round, state.clock, len(eligible), 0, 0, 0, 0, 0)
    if len(eligible) < needed:
        reason = f"only {len(eligible)} phones eligible, {needed} reports needed"
        emit(on_event, RoundStarted(server_round, len(eligible), 0, 0))
        abandoned = replace(base, abandoned=True, abandon_reason=reason)
        return _finish(state, abandoned, config, started)

    selected = _select(eligible, env, config, server_round)
    size = model_bytes(state.parameters)
    arrivals = _arrivals(selected, env, config, server_round=server_round, size=size)
    # DP accounts for Poisson sampling: every sampled report that arrives in time
    # is used, since keeping only the first few would couple the phones.
    goal = len(selected) if config.privacy.dp is not None else config.clients_per_round
    plan = plan_round(arrivals, goal=goal, deadline=config.report_deadline_s)
    emit(
        on_event,
        RoundStarted(server_round, len(eligible), len(selected), len(plan.on_time)),
    )

    def on_report(report: ClientSummary) -> None:
        done = len(finished) + 1
        finished.append(report.client_id)
        # Under SecAgg the phone's count and loss reach the server only summed.
        shown = report.metrics
        emit(
            on_event,
            ClientDone(
                server_round,
                report.client_id,
                done,
                len(plan.on_time),
                None if shown is None else report.num_examples,
                None if shown is None else shown.train_loss,
            ),
        )

    finished: list[str] = []
    secure = config.privacy.secure_aggregation
    trained = env.executor.train(
        [env.fleet.phone(c) for c in plan.on_time],
        state.parameters,
        server_round=server_round,
        on_report=on_report,
        reveal_norms=not secure,
    )
    accepted, rejections, screen = screen_stats(
        blind(trained.summaries) if secure else trained.summaries,
        config=ScreenConfig.of_run(
            config.screen,
            config.local,
            relative=compares_users(
                secure_aggregation=secure,
                differential_privacy=config.privacy.dp is not None,
            ),
        ),
        history=state.screen,
    )
    kept_ids = set(accepted)
    # The simulation's record; under SecAgg the phones' figures come from the
    # measurement harness, and the line files them as its truth (coordinator.released).
    reports = with_phone_figures(trained) if secure else trained.summaries
    kept = [r for r in reports if r.client_id in kept_ids]
    metrics = replace(
        base,
        selected=len(selected),
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
        bytes_down=len(selected) * size,
        bytes_up=sum(size if r.bytes_up is None else r.bytes_up for r in reports),
        simulated_seconds=plan.closes_after,
    )

    def abandon(
        reason: str, fault: dict[str, Any] | None = None
    ) -> tuple[ServerState, RoundMetrics]:
        abandoned = replace(
            metrics, abandoned=True, abandon_reason=reason, privacy=fault or {}
        )
        if config.privacy.dp is None:
            return _finish(state, abandoned, config, started, screen=screen)
        charged, figures = charge_unreleased(state.privacy, config, len(eligible))
        abandoned = replace(abandoned, privacy={**figures, **(fault or {})})
        return _finish(
            state, abandoned, config, started, screen=screen, privacy=charged
        )

    if len(kept) < needed and config.privacy.dp is None:
        return abandon(
            f"only {len(kept)} valid reports of {len(selected)} selected "
            f"({len(plan.dropped)} dropped, {len(plan.late)} late, "
            f"{len(rejections)} rejected), {needed} needed"
        )
    try:
        delta, privacy, figures = _protected_delta(
            trained, kept_ids, config, state, env, server_round, pool=len(eligible)
        )
    except SecAggAbort as abort:
        # A sum no honest cohort could send is a hostile phone's: counted.
        fault = {"sum_check_failed": 1} if isinstance(abort, SumCheckFailed) else None
        return abandon(f"secure aggregation abandoned the round: {abort.reason}", fault)
    if "secagg" in figures:
        per_phone = figures["secagg"]["bytes_up_per_phone"]
        metrics = replace(metrics, bytes_up=len(reports) * per_phone)
    metrics = replace(metrics, privacy=figures)
    parameters, strategy = server_step(
        config.strategy, state.parameters, delta, state.strategy
    )
    if not all(bool(torch.isfinite(p).all()) for p in parameters):
        return abandon("the aggregate would leave the model non-finite; not applied")
    return _finish(
        state,
        metrics,
        config,
        started,
        parameters=parameters,
        strategy=strategy,
        screen=screen,
        privacy=privacy,
    )


def _select(
    eligible: list[str],
    env: RoundEnvironment,
    config: FederationConfig,
    server_round: int,
) -> list[str]:
    """The round's phones: Poisson sampling under DP, else a fixed-size draw.

    DP ignores pinned phones: always selecting one would break its accounting.
    """
    if config.privacy.dp is not None:
        return poisson_select(
            env.fleet.client_ids,
            eligible,
            sampling_probability=sampling_probability(config, len(eligible)),
            seed=config.seed,
            server_round=server_round,
        )
    return select_clients(
        eligible,
        count=config.selection_size,
        seed=config.seed,
        server_round=server_round,
        pinned=env.pinned,
    )


def _protected_delta(
    trained: TrainedRound,
    accepted: set[str],
    config: FederationConfig,
    state: ServerState,
    env: RoundEnvironment,
    server_round: int,
    *,
    pool: int,
) -> tuple[Parameters, PrivacyState, dict[str, Any]]:
    """The delta, wrapped by the run's protections, and the attack's figures;
    `pool`: the phones eligible this round, which DP sampled from."""
    noisy: Parameters | None = None
    aggregate: Parameters | None
    probed: Collection[str] = accepted
    if config.privacy.protected:
        result = private_delta(
            trained,
            accepted,
            config,
            state.privacy,
            server_round=server_round,
            pool=pool,
        )
        delta, privacy, figures = result.delta, result.state, dict(result.metrics)
        aggregate, noisy = result.exact_sum, result.noisy_mean
        # The probe's truth is the phones whose updates are in the sum.
        probed = accepted if result.included is None else result.included
    else:
        delta, privacy, figures = (
            _aggregate_delta(trained, accepted, config),
            state.privacy,
            {},
        )
        # The weighted mean is a positive multiple of the sum: the same attack.
        aggregate = delta if config.aggregation.name == "mean" else None
    if config.privacy.attack_phones > 0:
        figures["attack"] = probe_round(
            trained,
            probed,
            config=config,
            fleet=env.fleet,
            tokenizer=env.tokenizer,
            max_len=env.max_len,
            server_round=server_round,
            aggregate=aggregate,
            noisy=noisy,
        )
    return delta, privacy, figures


def _aggregate_delta(
    trained: TrainedRound, accepted: set[str], config: FederationConfig
) -> Parameters:
    """The round's pseudo-gradient from the accepted updates.

    FedAvg's example-weighted mean needs only sums: one all-reduce over the
    ranks. A robust aggregator (a median, Krum) needs every update, so those are
    gathered from the ranks.
    """
    if config.aggregation.name == "mean":
        total, num_examples = trained.weighted_sum(accepted)
        return [t / num_examples for t in total]
    pairs = trained.gather_updates(accepted)
    return aggregate_updates(
        config.aggregation.name,
        [u for u, _ in pairs],
        [n for _, n in pairs],
        trim_fraction=config.aggregation.trim_fraction,
        byzantine_fraction=config.aggregation.byzantine_fraction,
    )
