"""Where memorisation starts: canary exposure by repetition, per protection.

    nice -n 10 .venv/bin/python -m benchmarks.memorisation --out /tmp/memo \\
        [--repeats 1,4,16,64] [--canaries 5] [--controls 10] [--rounds 20] \\
        [--clients-per-round 20] [--max-users 40] [--over-selection 0] \\
        [--embed-dim 32] [--hidden-dim 64] [--rows none,secagg,dp8]

The Secret Sharer (Carlini et al. 2019, arXiv 1802.08232) as in `fedtype
simulate --canaries K`, but with the repetitions a caller chooses: `--canaries`
canaries per repeat count, each planted `repeats` times in the train text of one
of the first `--max-users` Chit-Chat training users (`corpora.canaries.plant`),
plus `--controls` never planted. After the last round the exposure of each
(`models.exposure`, rank among 2,000 random phrases of the same length, ceiling
log2(2001) = 10.97 bits) is averaged per repeat count and over the controls;
each canary's figures go to OUT/<row>/exposures.json.

Rows: no protection (the default FedAvgM step), SecAgg alone, and DP at epsilon
about 8 (`--target-epsilon` calibrates z for the rounds; FedAvg step at server
lr 1, as in `benchmarks.privacy_table`). Every phone is eligible every round,
and no phone is over-selected (`--over-selection 0`): with FederationConfig's
30 % the slowest phones' reports are dropped at the goal count, so whether a
canary was learnt also depended on its holder's device speed. Each user
trains in about clients_per_round / users of the rounds (half, by default).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch

from benchmarks.privacy_audit import fresh_simulation
from coordinator.audit_run import first_users
from coordinator.config import FederationConfig
from coordinator.dp import DPConfig
from coordinator.privacy_config import PrivacyConfig
from coordinator.simulation import Simulation
from corpora.canaries import (
    Canary,
    CanaryConfig,
    make_canaries,
    plant,
    vocabulary_words,
)
from corpora.corpus import CorpusConfig, CorpusSplits, load_corpus
from corpora.tokenizer import WordTokenizer
from device_sim.config import FleetConfig
from models.exposure import exposures
from models.run_canaries import CANDIDATES

# (slug, row name, privacy settings for `clients_per_round`)
ROWS: dict[str, str] = {
    "none": "no protection",
    "secagg": "SecAgg",
    "dp8": "DP, epsilon ~ 8",
}


def privacy_for(slug: str, clients_per_round: int) -> PrivacyConfig:
    """The row's protections; the curious-server probe off."""
    if slug == "secagg":
        return PrivacyConfig(secure_aggregation=True, attack_phones=0)
    if slug == "dp8":
        dp = DPConfig(clip_norm=0.5, expected_clients=clients_per_round)
        return PrivacyConfig(
            dp=dp, target_epsilon=8.0, calibrate_noise=True, attack_phones=0
        )
    return PrivacyConfig(attack_phones=0)


def federation_for(slug: str, args: argparse.Namespace) -> FederationConfig:
    """The row's run: every phone online, no evaluation, one checkpoint kept."""
    config = FederationConfig(
        seed=args.seed,
        rounds=args.rounds,
        clients_per_round=args.clients_per_round,
        over_selection=args.over_selection,
        eval_every=0,
        checkpoint_every=0,
        keep_last=1,
        fleet=FleetConfig(eligibility=False, dropout_rate=0.0),
        privacy=privacy_for(slug, args.clients_per_round),
    )
    if slug == "dp8":
        config = replace(
            config, strategy=replace(config.strategy, name="fedavg", server_lr=1.0)
        )
    return config


def exposure_cells(
    simulation: Simulation, canaries: list[Canary], repeats: list[int]
) -> tuple[list[float], float, float | None]:
    """Mean exposure per repeat count, of the controls, and epsilon if any."""
    results = exposures(
        simulation.global_model,
        canaries,
        tokenizer=simulation.tokenizer,
        vocabulary_words=vocabulary_words(simulation.tokenizer),
        candidates=CANDIDATES,
        seed=simulation.federation.seed,
    )
    path = simulation.run.path / "exposures.json"
    path.write_text(json.dumps([asdict(e) for e in results], indent=1))
    by = [np.mean([e.exposure for e in results if e.repeats == r]) for r in repeats]
    controls = np.mean([e.exposure for e in results if e.repeats == 0])
    epsilon = simulation.history()[-1].get("epsilon")
    return [float(b) for b in by], float(controls), epsilon


def run_row(
    slug: str,
    args: argparse.Namespace,
    *,
    splits: CorpusSplits,
    tokenizer: WordTokenizer,
    canaries: list[Canary],
) -> Simulation:
    """Train the row's run from scratch in OUT/<slug>."""
    simulation = fresh_simulation(
        slug,
        args,
        federation=federation_for(slug, args),
        splits=plant(splits, [c for c in canaries if c.planted], seed=args.seed),
        tokenizer=tokenizer,
    )
    while simulation.server_round < args.rounds:
        record: dict[str, Any] = simulation.run_round()
        print(f"  {slug} round {record['server_round']}", file=sys.stderr)
    return simulation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for the runs")
    parser.add_argument("--repeats", default="1,4,16,64")
    parser.add_argument("--canaries", type=int, default=5, help="per repeat count")
    parser.add_argument("--controls", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clients-per-round", type=int, default=20)
    parser.add_argument("--max-users", type=int, default=40, help="real users")
    parser.add_argument(
        "--over-selection",
        type=float,
        default=0.0,
        help="extra share selected; the first clients_per_round reports are used",
    )
    parser.add_argument("--embed-dim", type=int, default=32)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", default=",".join(ROWS))
    args = parser.parse_args(argv)
    unknown = set(args.rows.split(",")) - set(ROWS)
    if unknown:
        parser.error(f"--rows: unknown {sorted(unknown)} (one of {sorted(ROWS)})")
    try:
        args.repeat_counts = [int(r) for r in args.repeats.split(",")]
    except ValueError:
        parser.error(f"--repeats: comma-separated integers, not {args.repeats!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    tokenizer = WordTokenizer.public()
    splits = first_users(load_corpus(CorpusConfig()), args.max_users)
    config = CanaryConfig(
        count=args.canaries, repeats=tuple(args.repeat_counts), controls=args.controls
    )
    canaries = make_canaries(
        vocabulary_words(tokenizer),
        config,
        seed=args.seed,
        users=sorted(splits.training_users),
    )
    started = time.perf_counter()
    header = " | ".join(f"exposure x{r}" for r in args.repeat_counts)
    lines = [
        f"| run | epsilon | {header} | exposure (controls) |",
        "|---|---:|" + "---:|" * (len(args.repeat_counts) + 1),
    ]
    for slug in args.rows.split(","):
        simulation = run_row(
            slug, args, splits=splits, tokenizer=tokenizer, canaries=canaries
        )
        by, controls, epsilon = exposure_cells(simulation, canaries, args.repeat_counts)
        simulation.close()
        spent = "-" if epsilon is None else f"{epsilon:.2f}"
        cells = [ROWS[slug], spent, *(f"{b:.2f}" for b in by), f"{controls:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    minutes = (time.perf_counter() - started) / 60
    print(
        f"\n{args.canaries} canaries per repeat count, {args.controls} controls, "
        f"{args.max_users} users, {args.rounds} rounds of {args.clients_per_round}, "
        f"model {args.embed_dim}/{args.hidden_dim}, seed {args.seed}; "
        f"{minutes:.1f} min in all (ceiling log2({CANDIDATES + 1}) = "
        f"{np.log2(CANDIDATES + 1):.2f} bits)\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
