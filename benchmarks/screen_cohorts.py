"""The screen's false rejections: honest reports dropped in clean runs, by cohort.

    .venv/bin/python -m benchmarks.screen_cohorts [--cohorts 5,10,20]
        [--rounds 20] [--seeds 1] [--max-users 120] [--out cohorts.jsonl]

For every seed and cohort (`--clients-per-round`), one clean federated run (no
hostile phone) on the default fleet (its eligibility and dropouts) with the
run's default screen; every rejection is of an honest report, so the
false-rejection rate is rejected / reported over the run, and the rounds
abandoned for lack of valid reports are counted too. Each run's result is
appended to `--out` as a JSON line with the rule behind each rejection.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.row_runs import played, sized_model
from coordinator.config import FederationConfig
from corpora.corpus import CorpusConfig, load_corpus
from corpora.tokenizer import WordTokenizer
from device_sim.config import FleetConfig
from models.config import ModelConfig


def rule(reason: str) -> str:
    """The screen's rule behind a rejection reason (its first words)."""
    if reason.startswith("direction"):
        return "direction"
    if "median per step" in reason and "<" in reason:
        return "progress"
    if "median" in reason:
        return "relative norm"
    return "per-phone"


def clean_run(
    folder: Path,
    *,
    cohort: int,
    seed: int,
    rounds: int,
    max_users: int,
    model: ModelConfig,
) -> dict[str, Any]:
    """One clean run's reports, rejections (by rule) and abandoned rounds."""
    corpus = CorpusConfig(seed=seed)
    federation = FederationConfig(
        seed=seed,
        rounds=rounds,
        clients_per_round=cohort,
        eval_every=0,
        fleet=FleetConfig(max_users=max_users),
    )
    started = time.perf_counter()
    reported = abandoned = 0
    rules: collections.Counter[str] = collections.Counter()
    splits = load_corpus(corpus)
    for record in played(
        folder, federation=federation, corpus=corpus, model=model, splits=splits
    ):
        reported += int(record["reported"])
        abandoned += bool(record["abandoned"])
        rules.update(rule(r["reason"]) for r in record["rejections"])
    rejected = sum(rules.values())
    return {
        "cohort": cohort,
        "seed": seed,
        "rounds": rounds,
        "max_users": max_users,
        "reported": reported,
        "rejected": rejected,
        "false_rejection_rate": rejected / reported if reported else None,
        "by_rule": dict(rules),
        "abandoned": abandoned,
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohorts", default="5,10,20")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--max-users", type=int, default=120)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--embed-dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="cohorts.jsonl")
    args = parser.parse_args(argv)
    try:
        cohorts = [int(c) for c in args.cohorts.split(",")]
    except ValueError:
        parser.error(f"--cohorts: integers separated by commas, got {args.cohorts!r}")
    torch.set_num_threads(args.threads)
    tokenizer = WordTokenizer.public()
    model = sized_model(args, tokenizer)
    with tempfile.TemporaryDirectory(prefix="fedtype-cohorts-") as scratch:
        for seed in range(args.seeds):
            for cohort in cohorts:
                result = clean_run(
                    Path(scratch) / f"run{seed}_{cohort}",
                    cohort=cohort,
                    seed=seed,
                    rounds=args.rounds,
                    max_users=args.max_users,
                    model=model,
                )
                with Path(args.out).open("a") as handle:
                    handle.write(json.dumps(result) + "\n")
                print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
