"""One fresh federated run per table row, as the benchmarks' tables train them.

`benchmarks.privacy_audit` and `benchmarks.memorisation` train each row from
scratch in OUT/<row> on the first `--max-users` Chit-Chat training users (and
their canaries): every phone online, no evaluation, one checkpoint kept, and a
DP row stepped by FedAvg at server lr 1, as `benchmarks.privacy_table` does.
`played` runs any new run to its last round (`benchmarks.robustness`,
`benchmarks.screen_cohorts`).
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Collection, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from coordinator.config import FederationConfig
from coordinator.measure.audit_run import first_users
from coordinator.privacy.privacy_config import PrivacyConfig
from coordinator.run.simulation import Simulation
from corpora.corpus import CorpusConfig, CorpusSplits, load_corpus
from corpora.tokenizer import WordTokenizer
from device_sim.config import FleetConfig
from models.config import ModelConfig


def add_run_options(parser: argparse.ArgumentParser, *, rounds: int) -> None:
    """The options every row's run reads: where, how long, on whom, how big."""
    parser.add_argument("--out", required=True, help="directory for the runs")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--clients-per-round", type=int, default=20)
    parser.add_argument("--max-users", type=int, default=40, help="real users")
    parser.add_argument("--embed-dim", type=int, default=32)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)


def check_rows(
    parser: argparse.ArgumentParser, rows: str, known: Collection[str]
) -> None:
    """Stop with argparse's error when `--rows` names a row there is not."""
    unknown = set(rows.split(",")) - set(known)
    if unknown:
        parser.error(f"--rows: unknown {sorted(unknown)} (one of {sorted(known)})")


def real_users(args: argparse.Namespace) -> tuple[WordTokenizer, CorpusSplits]:
    """The public tokenizer and the first `--max-users` training users, on
    `--threads` torch threads."""
    torch.set_num_threads(args.threads)
    splits = first_users(load_corpus(CorpusConfig()), args.max_users)
    return WordTokenizer.public(), splits


def row_federation(
    args: argparse.Namespace, privacy: PrivacyConfig, **changes: Any
) -> FederationConfig:
    """The row's run: every phone online, no evaluation, one checkpoint kept."""
    config = FederationConfig(
        seed=args.seed,
        rounds=args.rounds,
        clients_per_round=args.clients_per_round,
        eval_every=0,
        checkpoint_every=0,
        keep_last=1,
        fleet=FleetConfig(eligibility=False, dropout_rate=0.0),
        privacy=privacy,
        **changes,
    )
    if privacy.dp is not None:
        config = replace(
            config, strategy=replace(config.strategy, name="fedavg", server_lr=1.0)
        )
    return config


def sized_model(
    args: argparse.Namespace, tokenizer: WordTokenizer, **changes: Any
) -> ModelConfig:
    """The model of the size `--embed-dim` and `--hidden-dim` name, over
    `tokenizer`'s vocabulary; `changes` set its other fields."""
    return ModelConfig(
        vocab_size=tokenizer.vocab_size,
        embed_dim=args.embed_dim,
        hidden_dim=args.hidden_dim,
        **changes,
    )


def fresh_simulation(
    slug: str,
    args: argparse.Namespace,
    *,
    federation: FederationConfig,
    splits: CorpusSplits,
    tokenizer: WordTokenizer,
) -> Simulation:
    """A new run in OUT/<slug> (an earlier one there removed) of the model size
    `args` names, on `splits`."""
    run_dir = Path(args.out) / slug
    shutil.rmtree(run_dir, ignore_errors=True)
    return Simulation.create(
        run_dir,
        federation=federation,
        corpus=CorpusConfig(),
        model=sized_model(args, tokenizer),
        tokenizer=tokenizer,
        splits=splits,
    )


def played(
    folder: Path,
    *,
    federation: FederationConfig,
    corpus: CorpusConfig,
    model: ModelConfig,
    splits: CorpusSplits,
    tokenizer: WordTokenizer | None = None,
) -> Iterator[dict[str, Any]]:
    """A new run in `folder`, each round's metrics line to its last round; the
    run is closed when the caller stops reading, or at the end."""
    simulation = Simulation.create(
        folder,
        federation=federation,
        corpus=corpus,
        model=model,
        tokenizer=tokenizer,
        splits=splits,
    )
    try:
        while simulation.server_round < federation.rounds:
            yield simulation.run_round()
    finally:
        simulation.close()
