"""Do the first rounds make the model worse? `python -m benchmarks.early_rounds`.

Runs fresh fleets with `fedtype demo`'s settings (`cli.demo_cmd.demo_federation`:
FedAdagrad, an evaluation of 300 held-out messages every round; 10 reports a
round unless `--clients-per-round` says otherwise) on one torch thread, and prints one
JSON line per variant and seed: held-out perplexity and top-3 at round 0 (the
untrained model) and after each round, the worst of each after round 0, and the
top-3 suggestions after "how are ".

A variant is a `+`-joined list of changes from the demo's settings: `zeros` (a zero
output bias instead of the unigram one), `mwarmN` (momentum warm-up over N
aggregations, 0 for none), `lrwarmN` (server step warm-up over N), `slrX`
(server learning rate X, after any strategy named before it), `clrX` (the
phones' learning rate X), a strategy
(`fedavgm`, `fedavg`, ... at its default server step); `default` changes
nothing. `fedavgm` alone is `fedtype simulate`'s server step, `fedavgm+zeros+mwarm0`
the default before 6 December. `--max-users 60` gives the small fleet of issue 12.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from cli.demo_cmd import demo_federation
from coordinator.config import FederationConfig
from coordinator.round.strategies import STRATEGIES
from coordinator.run.simulation import Simulation
from corpora.corpus import CorpusConfig, CorpusSplits, load_corpus
from corpora.samples import heldout_sample
from corpora.tokenizer import WordTokenizer
from models.config import OUTPUT_BIAS_INITS, ModelConfig
from models.metrics import evaluate
from models.suggest import Suggester

PROMPT = "how are "


def variant_settings(
    variant: str, base: FederationConfig, *, vocab_size: int
) -> tuple[FederationConfig, ModelConfig]:
    """The federation and model settings `variant` names (see the module doc)."""
    federation, bias = base, ModelConfig().output_bias_init
    for part in variant.split("+"):
        if part == "default":
            continue
        if part in OUTPUT_BIAS_INITS:
            bias = part
        elif part in STRATEGIES:
            strategy = replace(federation.strategy, name=part, server_lr=None)
            federation = replace(federation, strategy=strategy)
        elif part.startswith("mwarm"):
            strategy = replace(
                federation.strategy, momentum_warmup_rounds=int(part[len("mwarm") :])
            )
            federation = replace(federation, strategy=strategy)
        elif part.startswith("slr"):
            strategy = replace(federation.strategy, server_lr=float(part[len("slr") :]))
            federation = replace(federation, strategy=strategy)
        elif part.startswith("clr"):
            local = replace(federation.local, client_lr=float(part[len("clr") :]))
            federation = replace(federation, local=local)
        elif part.startswith("lrwarm"):
            strategy = replace(
                federation.strategy, warmup_rounds=int(part[len("lrwarm") :])
            )
            federation = replace(federation, strategy=strategy)
        else:
            raise SystemExit(f"unknown variant part {part!r}")
    return federation, ModelConfig(vocab_size=vocab_size, output_bias_init=bias)


def _point(server_round: int, metrics: dict[str, Any], top: list[str]) -> list[Any]:
    return [
        server_round,
        round(metrics["perplexity"], 1),
        round(100 * metrics["top3"], 2),
        " · ".join(top),
    ]


def run_variant(
    variant: str,
    *,
    seed: int,
    rounds: int,
    max_users: int | None,
    clients_per_round: int,
    splits: CorpusSplits,
    corpus: CorpusConfig,
) -> dict[str, Any]:
    """One fresh fleet of `variant`, `rounds` rounds; its per-round points."""
    base = demo_federation(clients_per_round)
    base = replace(base, seed=seed, fleet=replace(base.fleet, max_users=max_users))
    tokenizer = WordTokenizer.public()
    federation, model = variant_settings(variant, base, vocab_size=tokenizer.vocab_size)
    heldout = heldout_sample(splits, federation.heldout_messages)
    with tempfile.TemporaryDirectory() as out:
        simulation = Simulation.create(
            Path(out) / "run",
            federation=federation,
            corpus=corpus,
            model=model,
            tokenizer=tokenizer,
            splits=splits,
        )
        start = simulation.global_model
        suggester = Suggester(start, tokenizer)
        metrics = evaluate(
            start,
            tokenizer,
            heldout,
            max_len=model.max_len,
            keystroke_texts=federation.keystroke_texts,
        )
        points = [_point(0, metrics.as_dict(), suggester.suggest(PROMPT))]
        started = time.perf_counter()
        for _ in range(rounds):
            record = simulation.run_round()
            suggester.set_model(simulation.global_model)
            points.append(
                _point(
                    record["server_round"], record["heldout"], suggester.suggest(PROMPT)
                )
            )
        seconds = time.perf_counter() - started
        simulation.close()
    after = points[1:]
    return {
        "variant": variant,
        "seed": seed,
        "max_users": max_users,
        "clients_per_round": clients_per_round,
        "start_perplexity": points[0][1],
        "worst_perplexity": max(p[1] for p in after),
        "start_top3": points[0][2],
        "worst_top3": min(p[2] for p in after),
        "last_top3": after[-1][2],
        "first_you": next((p[0] for p in after if p[3].startswith("you")), None),
        "seconds": round(seconds, 1),
        "points": points,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--clients-per-round", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--variants", nargs="+", default=["fedavgm+zeros+mwarm0", "fedavgm", "default"]
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    corpus = CorpusConfig()
    splits = load_corpus(corpus)
    for seed in args.seeds:
        for variant in args.variants:
            result = run_variant(
                variant,
                seed=seed,
                rounds=args.rounds,
                max_users=args.max_users,
                clients_per_round=args.clients_per_round,
                splits=splits,
                corpus=corpus,
            )
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
