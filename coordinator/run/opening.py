"""Opening a federated run: a new one written at round 0, or a saved one read back.

`create_run` checks the settings against the tokenizer and corpus, resolves the
privacy settings for the fleet (delta, a calibrated z), writes config.json and
starts the privacy ledger; `read_run` reads a run directory back (its config,
its last completed round's model, server state, screen and privacy state, the
accountant rebuilt from the ledger) and drops metrics lines past that round.
`coordinator.run.simulation.Simulation` is built from either; every way of opening
a federated run (the CLI, the TUI, benchmarks) goes through them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from coordinator.config import FederationConfig, FederationConfigError
from coordinator.privacy.budget import shares_fraction
from coordinator.privacy.ledger import PrivacyLedger, resumed_privacy
from coordinator.round.rounds import ServerState
from coordinator.round.strategies import initial_state
from coordinator.run import store
from corpora.corpus import CorpusConfig, CorpusSplits, load_corpus
from corpora.tokenizer import WordTokenizer
from device_sim.fleet import Fleet
from device_sim.ranks import Ranks
from models.config import ModelConfig
from models.rundir import RunDir, RunDirError, RunKind
from models.weights import initial_model, parameters_of

T = TypeVar("T")


@dataclass(frozen=True)
class OpenedRun:
    """A run directory's settings and the state its next round starts from."""

    run: RunDir
    federation: FederationConfig
    corpus: CorpusConfig
    model: ModelConfig
    tokenizer: WordTokenizer
    splits: CorpusSplits
    state: ServerState
    totals: store.Totals

    def settings(self) -> dict[str, Any]:
        """The fields as keyword arguments (for `Simulation`)."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def create_run(
    run_dir: str | Path,
    *,
    federation: FederationConfig,
    corpus: CorpusConfig,
    model: ModelConfig | None,
    tokenizer: WordTokenizer | None,
    splits: CorpusSplits | None,
) -> OpenedRun:
    """A new run written to `run_dir` (which must not hold one), at round 0.

    `model` defaults to the default model over the tokenizer's vocabulary, and
    the tokenizer to the public one.

    Raises:
        RunDirError: `run_dir` already holds a run.
        FederationConfigError: the settings cannot work with this corpus.
    """
    run = RunDir(run_dir)
    if run.config_path.exists():
        raise RunDirError(
            f"{run.path}: already holds a run; resume it or choose another --out"
        )
    federation = federation.resolved()
    tokenizer = tokenizer or WordTokenizer.public()
    model = model or ModelConfig(vocab_size=tokenizer.vocab_size)
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
    return OpenedRun(
        run, federation, corpus, model, tokenizer, splits, state, store.Totals()
    )


def read_run(
    run_dir: str | Path, *, splits: CorpusSplits | None, leader: bool
) -> OpenedRun:
    """A saved run, at its last completed round; the `leader` (rank 0) alone
    writes (the rebuilt ledger, the metrics trimmed to that round).

    Raises:
        RunDirError: the run directory is incomplete or was never started.
    """
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
            f"{run.path}: the run was stopped before round 0 was saved; start it again"
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
            write=leader,
        ),
    )
    if leader:
        run.rewrite_metrics(
            [r for r in run.read_metrics() if r.get("server_round", 0) <= server_round]
        )
    splits = splits if splits is not None else load_corpus(corpus)
    return OpenedRun(run, federation, corpus, model, tokenizer, splits, state, totals)


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


def typical_pool(fleet: Fleet) -> int:
    """The phones a DP round typically samples from: the mean eligible count at
    each hour of one simulated day (rounds 1 to 24). The z a `--target-epsilon`
    run's config shows is calibrated at it; each round's own z is chosen again
    at that round's pool (`coordinator.privacy.budget`)."""
    hours = range(24)
    shares = [fleet.eligible_share(3600.0 * h, h + 1) for h in hours]
    return max(1, round(len(fleet) * sum(shares) / len(shares)))


def leader_first(ranks: Ranks, *, lead: Callable[[], T], follow: Callable[[], T]) -> T:
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
