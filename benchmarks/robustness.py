"""Hostile phones against the screen and the aggregators: held-out top-3 and ppl.

    .venv/bin/python -m benchmarks.robustness [--rounds 20] [--seeds 3]
        [--fractions 0,0.01,0.1,0.3] [--attacks scale,sign,count,nan]
        [--aggregators mean,median,trimmed-mean,krum,multi-krum]
        [--protections plain,secagg]
        [--max-users N] [--clients-per-round 10] [--out results.jsonl]

For every seed, every share of hostile phones, every attack and every aggregator, one
federated run (`Simulation.create(...)` then `run_round()` up to `--rounds`) on the
same corpus cut, with the run's default screen, and the held-out top-3 accuracy and
perplexity after the last round. A share of 0 is the clean run of each aggregator (the
attack does not matter there). The attacks are the fault kinds of `device_sim.faults`
at their default strength: scale (update x 1000), sign (update x -5), count
(num_examples x 100) and nan. The `secagg` protection adds a column: the mean under
secure aggregation, where the hostile kinds skip the phone-side clip and range and the
server checks only the unmasked sum (`coordinator.protections.sum_checks`); there the
attacks `range` (every coordinate at the top of the quantisation range) and `weight`
(weight 4096 behind an honest count) act too. The table gives each cell's mean over
seeds and its difference from the clean run of the same column; the issue's goal is a
difference under 1 point at 30 %.

Every run's result is appended to `--out` as a JSON line as soon as it is known,
and a rerun skips the runs already there, so the full grid (3 seeds x 4 attacks
x 5 aggregators x 3 hostile shares + 15 clean runs, 20 rounds each) can be
spread over several sittings. Small settings (`--rounds 2 --seeds 1
--max-users 40 --hidden-dim 32`) check that it works in a minute or two.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.row_runs import played, sized_model
from coordinator.config import FederationConfig
from coordinator.privacy.privacy_config import PrivacyConfig
from coordinator.round.robust import ScreenSettings
from coordinator.round.robust_aggregation import AGGREGATORS
from coordinator.round.server_choices import AggregationConfig
from corpora.corpus import CorpusConfig, CorpusSplits, load_corpus
from corpora.tokenizer import WordTokenizer
from device_sim.config import FleetConfig, LocalTrainingConfig
from device_sim.faults import MASKED_ONLY_KINDS
from models.config import OUTPUT_BIAS_INITS, ModelConfig

ATTACKS = ("scale", "sign", "count", "nan", *MASKED_ONLY_KINDS)
PROTECTIONS = ("plain", "secagg")
# The run's default momentum warm-up (`FederationConfig().strategy`).
MOMENTUM_WARMUP_ROUNDS = FederationConfig().strategy.momentum_warmup_rounds


def federation(
    *,
    seed: int,
    rounds: int,
    clients_per_round: int,
    max_users: int | None,
    fraction: float,
    attack: str,
    aggregator: str,
    heldout_messages: int,
    norm_factor: float = ScreenSettings.norm_factor,
    min_cosine: float = ScreenSettings.min_cosine,
    momentum_warmup_rounds: int = MOMENTUM_WARMUP_ROUNDS,
    secure_aggregation: bool = False,
) -> FederationConfig:
    """One cell's settings: every phone eligible, evaluation after the last round."""
    return FederationConfig(
        seed=seed,
        rounds=rounds,
        clients_per_round=clients_per_round,
        eval_every=rounds,
        heldout_messages=heldout_messages,
        future_messages=heldout_messages,
        keystroke_texts=50,
        aggregation=AggregationConfig(name=aggregator),
        screen=ScreenSettings(norm_factor=norm_factor, min_cosine=min_cosine),
        strategy=replace(
            FederationConfig().strategy, momentum_warmup_rounds=momentum_warmup_rounds
        ),
        local=LocalTrainingConfig(),
        fleet=FleetConfig(
            max_users=max_users,
            eligibility=False,
            faulty_fraction=fraction,
            fault_kind=attack,
        ),
        privacy=PrivacyConfig(secure_aggregation=secure_aggregation),
    )


def run_cell(
    folder: Path,
    *,
    config: FederationConfig,
    corpus: CorpusConfig,
    model: ModelConfig,
    splits: CorpusSplits,
    tokenizer: WordTokenizer,
) -> dict[str, Any]:
    """Run one configuration to its last round; its held-out metrics and counts."""
    started = time.perf_counter()
    rejected = abandoned = sum_check_failed = 0
    record: dict[str, Any] = {}
    for record in played(
        folder,
        federation=config,
        corpus=corpus,
        model=model,
        splits=splits,
        tokenizer=tokenizer,
    ):
        rejected += int(record.get("rejected", 0))
        abandoned += bool(record.get("abandoned"))
        sum_check_failed += int(record.get("sum_check_failed", 0))
    heldout = record.get("heldout") or {}
    return {
        "top3": heldout.get("top3"),
        "perplexity": heldout.get("perplexity"),
        "rejected": rejected,
        "abandoned": abandoned,
        "sum_check_failed": sum_check_failed,
        "seconds": time.perf_counter() - started,
    }


def columns(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(aggregator, protection) pairs: secure aggregation sums, so the mean only."""
    return [
        (aggregator, protection)
        for protection in args.protections
        for aggregator in args.aggregators
        if protection == "plain" or aggregator == "mean"
    ]


def cells(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (seed, fraction, attack, aggregator, protection) the options ask for;
    the attacks that lie inside a mask only under secure aggregation."""
    grid = []
    for seed in range(args.seeds):
        for aggregator, protection in columns(args):
            cell = {"seed": seed, "aggregator": aggregator, "protection": protection}
            grid.append({**cell, "fraction": 0.0, "attack": "none"})
            for fraction in (f for f in args.fractions if f > 0):
                for attack in args.attacks:
                    if attack in MASKED_ONLY_KINDS and protection == "plain":
                        continue
                    grid.append({**cell, "fraction": fraction, "attack": attack})
    return grid


def key(cell: dict[str, Any]) -> tuple[Any, ...]:
    return (
        cell["seed"],
        cell["fraction"],
        cell["attack"],
        cell["aggregator"],
        cell.get("protection", "plain"),
    )


def load_done(path: Path, settings: dict[str, Any]) -> dict[tuple[Any, ...], dict]:
    """Results already in `path` for these settings."""
    done: dict[tuple[Any, ...], dict] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if result.get("settings") == settings:
            done[key(result)] = result
    return done


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> Table:
    """Mean held-out top-3 (and its change from clean) per attack and aggregator."""
    out = Table(
        title=f"held-out top-3 after {args.rounds} rounds, mean of {args.seeds} "
        "seed(s) (change from the clean run, points)"
    )
    out.add_column("hostile")
    out.add_column("attack")
    for aggregator, protection in columns(args):
        name = aggregator if protection == "plain" else f"{aggregator}+{protection}"
        out.add_column(name, justify="right")

    def mean(fraction: float, attack: str, column: tuple[str, str]) -> float | None:
        values = [
            r["top3"]
            for r in results
            if key(r)[1:] == (fraction, attack, *column) and r["top3"] is not None
        ]
        return statistics.fmean(values) if values else None

    clean = {c: mean(0.0, "none", c) for c in columns(args)}
    out.add_row("0%", "none", *(_cell(clean[c], None) for c in columns(args)))
    for fraction in (f for f in args.fractions if f > 0):
        for attack in args.attacks:
            out.add_row(
                f"{fraction:.0%}",
                attack,
                *(_cell(mean(fraction, attack, c), clean[c]) for c in columns(args)),
            )
    return out


def _cell(value: float | None, clean: float | None) -> str:
    if value is None:
        return "-"
    if clean is None:
        return f"{value:.2%}"
    return f"{value:.2%} ({100 * (value - clean):+.1f})"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    def floats(text: str) -> list[float]:
        return [float(x) for x in text.split(",")]

    def names(allowed: tuple[str, ...]):  # noqa: ANN202
        def parse_names(text: str) -> list[str]:
            chosen = text.split(",")
            bad = [c for c in chosen if c not in allowed]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {bad} (of {allowed})")
            return chosen

        return parse_names

    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fractions", type=floats, default=[0.0, 0.01, 0.1, 0.3])
    parser.add_argument("--attacks", type=names(ATTACKS), default=list(ATTACKS[:4]))
    parser.add_argument(
        "--aggregators", type=names(AGGREGATORS), default=list(AGGREGATORS)
    )
    parser.add_argument("--protections", type=names(PROTECTIONS), default=["plain"])
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--clients-per-round", type=int, default=10)
    parser.add_argument("--heldout-messages", type=int, default=1000)
    parser.add_argument("--hidden-dim", type=int, default=ModelConfig().hidden_dim)
    parser.add_argument("--embed-dim", type=int, default=ModelConfig().embed_dim)
    parser.add_argument("--norm-factor", type=float, default=ScreenSettings.norm_factor)
    parser.add_argument(
        "--min-cosine",
        type=float,
        default=ScreenSettings.min_cosine,
        help="the screen's direction rule (-1: off)",
    )
    parser.add_argument(
        "--output-bias-init",
        choices=OUTPUT_BIAS_INITS,
        default=ModelConfig().output_bias_init,
    )
    parser.add_argument(
        "--server-momentum-warmup-rounds",
        type=int,
        default=MOMENTUM_WARMUP_ROUNDS,
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="robustness.jsonl")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seeds < 1 or args.clients_per_round < 1:
        parser.error("--rounds, --seeds and --clients-per-round must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    console = Console()
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = WordTokenizer.public()
    model = sized_model(args, tokenizer, output_bias_init=args.output_bias_init)
    settings = {
        "rounds": args.rounds,
        "max_users": args.max_users,
        "clients_per_round": args.clients_per_round,
        "heldout_messages": args.heldout_messages,
        "model": [args.embed_dim, args.hidden_dim],
        "norm_factor": args.norm_factor,
        "min_cosine": args.min_cosine,
        "output_bias_init": args.output_bias_init,
        "server_momentum_warmup_rounds": args.server_momentum_warmup_rounds,
    }
    out = Path(args.out)
    done = load_done(out, settings)
    results = list(done.values())
    splits: dict[int, CorpusSplits] = {}
    with tempfile.TemporaryDirectory(prefix="fedtype-robustness-") as scratch:
        for index, cell in enumerate(cells(args)):
            if key(cell) in done:
                continue
            seed = cell["seed"]
            corpus = CorpusConfig(seed=seed)
            if seed not in splits:
                splits[seed] = load_corpus(corpus)
            config = federation(
                seed=seed,
                rounds=args.rounds,
                clients_per_round=args.clients_per_round,
                max_users=args.max_users,
                fraction=cell["fraction"],
                attack=cell["attack"] if cell["attack"] != "none" else "nan",
                aggregator=cell["aggregator"],
                heldout_messages=args.heldout_messages,
                norm_factor=args.norm_factor,
                min_cosine=args.min_cosine,
                momentum_warmup_rounds=args.server_momentum_warmup_rounds,
                secure_aggregation=cell["protection"] == "secagg",
            )
            result = run_cell(
                Path(scratch) / f"run{index}",
                config=config,
                corpus=corpus,
                model=model,
                splits=splits[seed],
                tokenizer=tokenizer,
            )
            result.update(cell, settings=settings)
            results.append(result)
            with out.open("a") as handle:
                handle.write(json.dumps(result) + "\n")
            console.print(
                f"seed {seed} {cell['fraction']:.0%} {cell['attack']} "
                f"{cell['aggregator']} {cell['protection']}: top-3 {result['top3']}, "
                f"ppl {result['perplexity']}, {result['rejected']} rejected, "
                f"{result['abandoned']} abandoned, {result['seconds']:.0f} s",
                highlight=False,
            )
    console.print(table(results, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
