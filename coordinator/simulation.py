"""A federated run you can step, save, resume and inspect: `Simulation`.

The CLI (`fedtype simulate`), the TUI and the tests drive a run through this one
class. Each `run_round()` calls `coordinator.rounds.run_round` once, evaluates the
new global model on schedule, saves the round (`coordinator.store`) and returns the
metrics line it appended. Progress goes out through `on_event`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from coordinator import store
from coordinator.budget import budget_stop, shares_fraction
from coordinator.config import FederationConfig, FederationConfigError
from coordinator.evaluation import Evaluator, future_cohort
from coordinator.events import (
    BudgetSpent,
    EvaluationStarted,
    EventCallback,
    RoundFinished,
    emit,
)
from coordinator.joined import JoinedPhones
from coordinator.ledger import PrivacyLedger, resumed_privacy, round_event
from coordinator.released import logged_line, released_line
from coordinator.rounds import RoundEnvironment, ServerState, run_round
from coordinator.strategies import initial_state
from corpora.corpus import CorpusConfig, CorpusSplits, load_corpus
from corpora.samples import heldout_sample
from corpora.tokenizer import WordTokenizer
from device_sim.executor import ClientExecutor, FleetExecutor
from device_sim.fleet import Fleet
from device_sim.ranks import Ranks, SingleRank
from models.config import ModelConfig
from models.model import NextWordModel
from models.run_canaries import run_canaries
from models.rundir import RunDir, RunDirError, RunKind, write_json_atomic
from models.weights import initial_model, load_parameters, parameters_of


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
        model: ModelConfig,
        tokenizer: WordTokenizer | None = None,
        splits: CorpusSplits | None = None,
        on_event: EventCallback | None = None,
        executor: ClientExecutor | None = None,
        ranks: Ranks | None = None,
    ) -> Simulation:
        """Start a new run in `run_dir` (which must not hold one) at round 0.

        `splits` may pass the corpus already loaded with `corpus` (tests, the TUI);
        `executor` the phones' executor (default: a `FleetExecutor` on `ranks`,
        or on this process alone). With several ranks every rank calls `create`;
        rank 0 alone writes, and the others then follow its run directory.
        """
        ranks = executor.ranks if executor is not None else (ranks or SingleRank())
        return _leader_first(
            ranks,
            lead=lambda: cls._create_here(
                run_dir,
                federation=federation,
                corpus=corpus,
                model=model,
                tokenizer=tokenizer,
                splits=splits,
                on_event=on_event,
                executor=executor,
                ranks=ranks,
            ),
            follow=lambda: cls._resume_here(
                run_dir,
                splits=splits,
                on_event=on_event,
                executor=executor,
                ranks=ranks,
            ),
        )

    @classmethod
    def _create_here(
        cls,
        run_dir: str | Path,
        *,
        federation: FederationConfig,
        corpus: CorpusConfig,
        model: ModelConfig,
        tokenizer: WordTokenizer | None,
        splits: CorpusSplits | None,
        on_event: EventCallback | None,
        executor: ClientExecutor | None,
        ranks: Ranks,
    ) -> Simulation:
        run = RunDir(run_dir)
        if run.config_path.exists():
            raise RunDirError(
                f"{run.path}: already holds a run; resume it or choose another --out"
            )
        federation = federation.resolved()
        tokenizer = tokenizer or WordTokenizer.public()
        if model.vocab_size != tokenizer.vocab_size:
            raise FederationConfigError(
                f"model vocab_size {model.vocab_size} != the tokenizer's "
                f"{tokenizer.vocab_size}"
            )
        splits = splits if splits is not None else load_corpus(corpus)
        if not splits.training_users:
            raise FederationConfigError("the corpus has no training users")
        federation = _resolve_privacy(federation, splits)
        run.create(
            {
                "kind": RunKind.FEDERATED.value,
                "corpus": asdict(corpus),
                "model": asdict(model),
                "federation": federation.to_dict(),
            },
            tokenizer,
        )
        if federation.privacy.dp is not None:
            PrivacyLedger(run.path).start()
        parameters = parameters_of(initial_model(model, federation.seed, tokenizer))
        state = ServerState(
            server_round=0,
            parameters=parameters,
            strategy=initial_state(federation.strategy, parameters),
            clock=federation.fleet.start_hour_utc * 3600.0,
        )
        simulation = cls(
            run=run,
            federation=federation,
            corpus=corpus,
            model=model,
            tokenizer=tokenizer,
            splits=splits,
            state=state,
            totals=store.Totals(),
            on_event=on_event,
            executor=executor,
            ranks=ranks,
        )
        simulation._save(state, None)
        return simulation

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
        ranks = executor.ranks if executor is not None else (ranks or SingleRank())

        def here() -> Simulation:
            return cls._resume_here(
                run_dir,
                splits=splits,
                on_event=on_event,
                executor=executor,
                ranks=ranks,
            )

        return _leader_first(ranks, lead=here, follow=here)

    @classmethod
    def _resume_here(
        cls,
        run_dir: str | Path,
        *,
        splits: CorpusSplits | None,
        on_event: EventCallback | None,
        executor: ClientExecutor | None,
        ranks: Ranks,
    ) -> Simulation:
        run = RunDir(run_dir)
        config = run.config_of(RunKind.FEDERATED)
        try:
            federation = FederationConfig.from_dict(config["federation"])
            model = ModelConfig(**config["model"])
        except (KeyError, TypeError) as error:
            raise RunDirError(f"{run.config_path}: incomplete ({error})") from None
        corpus = run.corpus_config()
        tokenizer = run.load_tokenizer()
        server_round, clock, totals = store.read_progress(run)
        if clock is None:
            raise RunDirError(
                f"{run.path}: the run was stopped before round 0 was saved; "
                "start it again"
            )
        parameters = store.load_global(run, server_round, tokenizer)
        state = ServerState(
            server_round=server_round,
            parameters=parameters,
            strategy=store.load_server_state(run, server_round),
            clock=clock,
            screen=store.read_screen_history(run),
            privacy=resumed_privacy(
                run,
                dp=federation.privacy.dp is not None,
                server_round=server_round,
                write=ranks.rank == 0,
            ),
        )
        if ranks.rank == 0:
            run.rewrite_metrics(
                [
                    r
                    for r in run.read_metrics()
                    if r.get("server_round", 0) <= server_round
                ]
            )
        splits = splits if splits is not None else load_corpus(corpus)
        simulation = cls(
            run=run,
            federation=federation,
            corpus=corpus,
            model=model,
            tokenizer=tokenizer,
            splits=splits,
            state=state,
            totals=totals,
            on_event=on_event,
            executor=executor,
            ranks=ranks,
        )
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
        )
        state, metrics = run_round(self._state, env, config, on_event=self.on_event)
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
            emit(self.on_event, EvaluationStarted(state.server_round))
            started = time.perf_counter()
            load_parameters(self._scratch, state.parameters)
            record.update(
                self._evaluator.run(
                    self._scratch, self._fleet, self.executor, heldout=self.is_leader
                )
            )
            if self._canaries is not None and self.is_leader:
                record["exposure"] = self._canaries.measure(
                    self._scratch, self.tokenizer
                )
            record["eval_seconds"] = time.perf_counter() - started
        self._totals = totals
        record = released_line(record, self.federation.privacy)
        self._save(state, record)
        self._state = state
        emit(self.on_event, RoundFinished(state.server_round, record))
        return record

    def _round_config(
        self, state: ServerState, *, announce: bool = False
    ) -> FederationConfig:
        """The config of the round after `state` (`coordinator.budget`: a
        target epsilon's z, chosen again); PrivacyBudgetSpent when it may not
        run, announced through a `BudgetSpent` event when `announce`."""
        server_round = state.server_round + 1
        pool = self._fleet.eligible(state.clock, server_round)
        config, reason = budget_stop(
            self.federation, state.privacy, pool=len(pool), server_round=server_round
        )
        if reason is None:
            return config
        if announce:
            emit(self.on_event, BudgetSpent(state.server_round, reason))
        raise PrivacyBudgetSpent(reason)

    def _budget_ends(self, state: ServerState) -> bool:
        """Whether the privacy budget stops the run after `state`'s round (so
        that its model is evaluated before the run stops)."""
        if self.federation.eval_every <= 0 or self.federation.privacy.dp is None:
            return False
        if self.federation.privacy.target_epsilon is None:
            return False
        try:
            self._round_config(state)
        except PrivacyBudgetSpent:
            return True
        return False

    def _save(self, state: ServerState, record: dict[str, Any] | None) -> None:
        """Persist a round in crash-safe order (see `coordinator.store`), on rank 0."""
        if not self.is_leader:
            return
        r = state.server_round
        store.save_global(self.run, r, self._scratch, state.parameters, self.tokenizer)
        store.save_server_state(self.run, r, state.strategy)
        if record is not None:
            self.run.append_metrics(logged_line(record, self.federation.privacy))
        store.write_progress(
            self.run,
            server_round=r,
            clock=state.clock,
            totals=self._totals,
            screen=state.screen,
            privacy=state.privacy.to_dict(),
        )
        store.prune(
            self.run,
            keep_last=self.federation.keep_last,
            keep_every=self.federation.checkpoint_every,
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


class PrivacyBudgetSpent(RuntimeError):
    """The next round would spend more epsilon than the run's target allows."""


def _resolve_privacy(
    federation: FederationConfig, splits: CorpusSplits
) -> FederationConfig:
    """The privacy settings resolved for the fleet: delta, a calibrated z."""
    if federation.privacy.dp is None:
        return federation
    fleet = Fleet.from_splits(splits, federation.fleet, seed=federation.seed)
    try:
        privacy = federation.privacy.resolved(
            population=len(fleet),
            clients_per_round=federation.clients_per_round,
            rounds=federation.rounds,
            pool=typical_pool(fleet),
            shares_fraction=shares_fraction(federation),
        )
    except ValueError as error:
        raise FederationConfigError(str(error)) from None
    return replace(federation, privacy=privacy)


def _leader_first(
    ranks: Ranks,
    *,
    lead: Callable[[], Simulation],
    follow: Callable[[], Simulation],
) -> Simulation:
    """`lead()` on rank 0, then `follow()` on the others once rank 0 is done.

    Rank 0 alone writes the run directory; a failure there is sent to the other
    ranks, which raise it too instead of waiting in a collective.
    """
    if ranks.rank != 0:
        failure = ranks.broadcast_object(None)
        if failure is not None:
            raise RunDirError(f"rank 0 could not start the run: {failure}")
        return follow()
    try:
        simulation = lead()
    except Exception as error:
        ranks.broadcast_object(f"{error}")
        raise
    ranks.broadcast_object(None)
    return simulation


def typical_pool(fleet: Fleet) -> int:
    """The phones a DP round typically samples from: the mean eligible count at
    each hour of one simulated day (rounds 1 to 24). The z a `--target-epsilon`
    run's config shows is calibrated at it; each round's own z is chosen again
    at that round's pool (`coordinator.budget`)."""
    hours = range(24)
    shares = [fleet.eligible_share(3600.0 * h, h + 1) for h in hours]
    return max(1, round(len(fleet) * sum(shares) / len(shares)))
