"""A federated run you can step, save, resume and inspect: `Simulation`.

The CLI (`fedtype simulate`), the TUI and the tests drive a run through this one
class. Each `run_round()` calls `coordinator.round.rounds.run_round` once, evaluates the
new global model on schedule, saves the round (`coordinator.run.store`) and returns the
metrics line it appended. Progress goes out through `on_event`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from coordinator.config import FederationConfig, FederationConfigError
from coordinator.events import (
    BudgetSpent,
    EvaluationStarted,
    EventCallback,
    RoundFinished,
    emit,
)
from coordinator.measure.attack_probe import AttackProbe
from coordinator.privacy.budget import (
    PrivacyBudgetSpent,
    budget_ends,
    next_round_config,
)
from coordinator.privacy.ledger import PrivacyLedger, round_event
from coordinator.privacy.released import logged_line, released_line
from coordinator.protections import protection_for
from coordinator.round.rounds import (
    RoundEnvironment,
    RoundObserver,
    ServerState,
    run_round,
)
from coordinator.run import store
from coordinator.run.evaluation import Evaluator, future_cohort
from coordinator.run.joined import JoinedPhones
from coordinator.run.opening import OpenedRun, create_run, leader_first, read_run
from corpora.corpus import CorpusConfig, CorpusSplits
from corpora.samples import heldout_sample
from corpora.tokenizer import WordTokenizer
from device_sim.executor import ClientExecutor, FleetExecutor
from device_sim.fleet import Fleet
from device_sim.ranks import Ranks, SingleRank
from models.config import ModelConfig
from models.model import NextWordModel
from models.run_canaries import run_canaries
from models.rundir import RunDir, RunDirError, write_json_atomic
from models.weights import load_parameters


class Simulation:
    """A federated run in a run directory. Use `create` or `resume`."""

    def __init__(
        self,
        *,
        run: RunDir,
        federation: FederationConfig,
        corpus: CorpusConfig,
        model: ModelConfig,
        tokenizer: WordTokenizer,
        splits: CorpusSplits,
        state: ServerState,
        totals: store.Totals,
        on_event: EventCallback | None = None,
        executor: ClientExecutor | None = None,
        ranks: Ranks | None = None,
    ) -> None:
        self.run = run
        self.federation = federation
        self.corpus = corpus
        self.model_config = model
        self.tokenizer = tokenizer
        self.on_event = on_event
        self._state = state
        self._totals = totals
        # Canaries go into the phones' train text only; the aggregation never
        # sees canaries.json (rank 0 writes it, every rank checks it).
        self._canaries = run_canaries(
            run,
            count=federation.privacy.canaries,
            seed=federation.seed,
            splits=splits,
            tokenizer=tokenizer,
            write=(executor.ranks if executor else ranks or SingleRank()).rank == 0,
        )
        if self._canaries is not None:
            splits = self._canaries.plant(splits)
        self._fleet = Fleet.from_splits(splits, federation.fleet, seed=federation.seed)
        self._joined = JoinedPhones(
            run, fleet_config=federation.fleet, seed=federation.seed
        )
        self._scratch = NextWordModel(model)
        self._ledger = PrivacyLedger(run.path)
        # The run's protection, chosen once: none, SecAgg, DP or both.
        self.protection = protection_for(federation)
        self.executor: ClientExecutor = executor or FleetExecutor(
            model_config=model,
            tokenizer=tokenizer,
            local=federation.local,
            fault_kind=federation.fleet.fault_kind,
            fault_scale=federation.fleet.fault_scale,
            ranks=ranks or SingleRank(),
            seed=federation.seed,
        )
        # Rank 0 alone writes the run directory and measures held-out text.
        self.is_leader = self.executor.ranks.rank == 0
        self._evaluator = Evaluator(
            heldout_texts=heldout_sample(splits, federation.heldout_messages),
            cohort=future_cohort(self._fleet, federation),
            config=federation,
            tokenizer=tokenizer,
        )

    @classmethod
    def create(
        cls,
        run_dir: str | Path,
        *,
        federation: FederationConfig,
        corpus: CorpusConfig,
        model: ModelConfig | None = None,
        tokenizer: WordTokenizer | None = None,
        splits: CorpusSplits | None = None,
        on_event: EventCallback | None = None,
        executor: ClientExecutor | None = None,
        ranks: Ranks | None = None,
    ) -> Simulation:
        """Start a new run in `run_dir` (which must not hold one) at round 0.

        `model` defaults to the default model over the tokenizer's vocabulary;
        `splits` may pass the corpus already loaded with `corpus` (tests, the TUI);
        `executor` the phones' executor (default: a `FleetExecutor` on `ranks`,
        or on this process alone). With several ranks every rank calls `create`;
        rank 0 alone writes, and the others then follow its run directory.
        """
        ranks, joins = _joins(on_event, executor, ranks)

        def lead() -> Simulation:
            opened = create_run(
                run_dir,
                federation=federation,
                corpus=corpus,
                model=model,
                tokenizer=tokenizer,
                splits=splits,
            )
            simulation = cls(**opened.settings(), **joins)
            simulation._save(opened.state, None)
            return simulation

        def follow() -> Simulation:
            return cls._opened(read_run(run_dir, splits=splits, leader=False), joins)

        return leader_first(ranks, lead=lead, follow=follow)

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        *,
        splits: CorpusSplits | None = None,
        on_event: EventCallback | None = None,
        executor: ClientExecutor | None = None,
        ranks: Ranks | None = None,
    ) -> Simulation:
        """Continue a run from its last completed round.

        With several ranks every rank calls `resume`: rank 0 reads (and repairs)
        the run directory first, then the others read it.
        """
        ranks, joins = _joins(on_event, executor, ranks)

        def here() -> Simulation:
            opened = read_run(run_dir, splits=splits, leader=ranks.rank == 0)
            return cls._opened(opened, joins)

        return leader_first(ranks, lead=here, follow=here)

    @classmethod
    def _opened(cls, opened: OpenedRun, joins: dict[str, Any]) -> Simulation:
        """The simulation of a run read back, its joined phones restored."""
        simulation = cls(**opened.settings(), **joins)
        simulation._joined.load(simulation._fleet)
        return simulation

    # The run's state, for readers.

    @property
    def server_round(self) -> int:
        """Rounds completed (abandoned ones included)."""
        return self._state.server_round

    @property
    def clock(self) -> float:
        """Simulated seconds since day 0, 00:00 UTC, at which the next round starts."""
        return self._state.clock

    @property
    def fleet(self) -> Fleet:
        """The phones (read-only: add phones through `add_phone`)."""
        return self._fleet

    @property
    def global_model(self) -> NextWordModel:
        """A fresh copy of the current global model, in eval mode; yours to change."""
        model = NextWordModel(self.model_config)
        load_parameters(model, self._state.parameters)
        return model.eval()

    def history(self) -> list[dict[str, Any]]:
        """Every metrics line so far, one per round."""
        return self.run.read_metrics()

    def model_at(self, server_round: int) -> NextWordModel | None:
        """The global model after `server_round`, if that checkpoint is kept."""
        if server_round == self.server_round:
            return self.global_model
        if server_round not in self.run.checkpoint_steps():
            return None
        try:
            model, _ = self.run.load_model(server_round)
        except RunDirError:
            return None  # pruned by a round finishing in another thread meanwhile
        return model.eval()

    def set_rounds(self, rounds: int) -> None:
        """Change the run's planned number of rounds (saved in config.json)."""
        if rounds < 1:
            raise FederationConfigError("rounds must be >= 1")
        self.federation = replace(self.federation, rounds=rounds)
        if not self.is_leader:
            return
        config = self.run.read_config()
        config["federation"] = self.federation.to_dict()
        write_json_atomic(self.run.config_path, config)

    # Stepping.

    def _should_evaluate(self, server_round: int) -> bool:
        every = self.federation.eval_every
        last = server_round == self.federation.rounds
        return every > 0 and (server_round % every == 0 or last)

    def run_round(self) -> dict[str, Any]:
        """Run, evaluate (on schedule, and when the privacy budget ends the run)
        and save one round; its metrics line.

        Raises:
            PrivacyBudgetSpent: the round would pass the target epsilon (a
                `BudgetSpent` event says why first); nothing ran.
        """
        self._joined.apply(self._fleet)
        config = self._round_config(self._state, announce=True)
        env = RoundEnvironment(
            fleet=self._fleet,
            executor=self.executor,
            tokenizer=self.tokenizer,
            max_len=self.model_config.max_len,
            pinned=tuple(self._joined.pinned),
            observers=self._observers(config),
        )
        state, metrics = run_round(
            self._state,
            env,
            config,
            protection=self.protection,
            on_event=self.on_event,
        )
        event = round_event(state.server_round, metrics.privacy)
        if event is not None and self.is_leader:
            self._ledger.append(event)  # before anything of the round is released
        totals = store.Totals(
            self._totals.tokens_total + metrics.tokens,
            self._totals.bytes_total + metrics.bytes_down + metrics.bytes_up,
            self._totals.wall_seconds_total + metrics.wall_seconds,
        )
        record = {**metrics.as_dict(), **asdict(totals)}
        record["eligible_share"] = metrics.eligible / max(1, len(self._fleet))
        if self._should_evaluate(state.server_round) or self._budget_ends(state):
            record.update(self._evaluate(state, tokens_total=totals.tokens_total))
        self._totals = totals
        record = released_line(record, self.federation.privacy)
        self._save(state, record)
        self._state = state
        emit(self.on_event, RoundFinished(state.server_round, record))
        return record

    def _evaluate(self, state: ServerState, *, tokens_total: int) -> dict[str, Any]:
        """The new global model measured: held-out and future text, canaries."""
        emit(self.on_event, EvaluationStarted(state.server_round, tokens_total))
        started = time.perf_counter()
        load_parameters(self._scratch, state.parameters)
        figures = self._evaluator.run(
            self._scratch, self._fleet, self.executor, heldout=self.is_leader
        )
        if self._canaries is not None and self.is_leader:
            figures["exposure"] = self._canaries.measure(self._scratch, self.tokenizer)
        figures["eval_seconds"] = time.perf_counter() - started
        return figures

    def _observers(self, config: FederationConfig) -> tuple[RoundObserver, ...]:
        """Measurement of each round: the curious server's probe when asked."""
        if config.privacy.attack_phones <= 0:
            return ()
        max_len = self.model_config.max_len
        return (AttackProbe(config, self._fleet, self.tokenizer, max_len),)

    def _round_config(
        self, state: ServerState, *, announce: bool = False
    ) -> FederationConfig:
        """The config of the round after `state`; PrivacyBudgetSpent when it may
        not run, announced through a `BudgetSpent` event when `announce`."""
        try:
            return next_round_config(self.federation, state.privacy, self._pool(state))
        except PrivacyBudgetSpent as spent:
            if announce:
                emit(self.on_event, BudgetSpent(state.server_round, spent.reason))
            raise

    def _budget_ends(self, state: ServerState) -> bool:
        """Whether the privacy budget stops the run after `state`'s round (so
        that its model is evaluated before the run stops)."""
        if self.federation.eval_every <= 0:
            return False
        return budget_ends(self.federation, state.privacy, self._pool(state))

    def _pool(self, state: ServerState) -> tuple[int, int]:
        """(the next round, the phones eligible when it starts)."""
        server_round = state.server_round + 1
        return server_round, len(self._fleet.eligible(state.clock, server_round))

    def _save(self, state: ServerState, record: dict[str, Any] | None) -> None:
        """Persist a round in crash-safe order (`coordinator.run.store`), on rank 0."""
        if not self.is_leader:
            return
        line = None if record is None else logged_line(record, self.federation.privacy)
        store.save_round(
            self.run,
            state,
            line,
            totals=self._totals,
            federation=self.federation,
            scratch=self._scratch,
            tokenizer=self.tokenizer,
        )

    # The demo's own phone.

    def add_phone(
        self, client_id: str, texts: list[str], *, pinned: bool = True
    ) -> None:
        """Add `texts` to phone `client_id`'s history, creating the phone if new.

        Safe to call from another thread while a round runs. The history is saved
        under the run directory at once (the phone's own storage) and the phone
        joins the fleet at the start of the next round. A pinned phone is always
        eligible and always selected.
        """
        self._joined.add(self._fleet, client_id, texts, pinned=pinned)

    def close(self) -> None:
        """Release the executor (and leave the ranks' group)."""
        self.executor.close()


def _joins(
    on_event: EventCallback | None, executor: ClientExecutor | None, ranks: Ranks | None
) -> tuple[Ranks, dict[str, Any]]:
    """The ranks a simulation runs on, and its keyword arguments besides the run."""
    ranks = executor.ranks if executor is not None else (ranks or SingleRank())
    return ranks, {"on_event": on_event, "executor": executor, "ranks": ranks}
