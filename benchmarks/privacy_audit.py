"""The one-run privacy audit: an empirical lower bound on each run's epsilon.

    nice -n 10 .venv/bin/python -m benchmarks.privacy_audit --out /tmp/audit \\
        [--canaries 200] [--repeats 64] [--rounds 30] [--clients-per-round 20] \\
        [--max-users 40] [--embed-dim 32] [--hidden-dim 64] [--rows none,dp8,...]

For each row, one federated run (`Simulation.create` then `run_round` to the
end) of the first `--max-users` Chit-Chat training users plus the canary users
whose coin came up (`coordinator.audit_run`: each of `--canaries` users holds
only its own random phrase, `--repeats` times, and joins with probability ½).
After every round the adversary scores each phrase on the released global
model; the guesses are turned into a lower bound on epsilon at the run's delta
with 95 % confidence (Steinke, Nasr and Jagielski 2023, `coordinator.audit`).
Every phone is eligible every round (q = clients_per_round / phones).

Rows: no protection; DP at epsilon about 8 and about 1 (`--target-epsilon`
calibrates z for the run's rounds, FedAvg step at server lr 1 as in
`benchmarks.privacy_table`); and DP whose noise is that of a simulated
deployment (1,000,000 users, 10,000 a round) at its epsilon about 1, where the
fleet's own phones get far less noise and a far larger epsilon.

The audited bound must never exceed the epsilon accounted for the fleet's
phones: if it does, the benchmark says so loudly and exits with status 1. A
bound above a simulated deployment's epsilon is expected (that epsilon is not
the fleet's) and is reported, not failed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from coordinator.audit_run import (
    SCORES,
    AuditReport,
    CanaryUsers,
    audit_simulation,
    first_users,
)
from coordinator.config import FederationConfig
from coordinator.dp import DPConfig
from coordinator.privacy_config import PrivacyConfig
from coordinator.simulation import Simulation
from corpora.corpus import CorpusConfig, CorpusSplits, load_corpus
from corpora.tokenizer import WordTokenizer
from device_sim.config import FleetConfig
from models.config import ModelConfig


@dataclass(frozen=True)
class Row:
    """One audited run: its name and the privacy settings (None: no DP)."""

    slug: str
    name: str
    target_epsilon: float | None = None
    simulated: bool = False


ROWS: tuple[Row, ...] = (
    Row("none", "no protection"),
    Row("dp8", "DP, epsilon ~ 8", 8.0),
    Row("dp1", "DP, epsilon ~ 1", 1.0),
    Row("simulated-dp1", "DP, SIMULATED 1M users (10,000 a round), epsilon ~ 1",
        1.0, simulated=True),
)  # fmt: skip
SIMULATED_POPULATION = 1_000_000
NOISE_COHORT = 10_000
HEADER = (
    "| run | rounds | accounted epsilon (delta) | audited lower bound (95 %) | "
    "guesses in / out | correct |"
)


def privacy_for(row: Row, clients_per_round: int) -> PrivacyConfig:
    """The row's privacy settings (the attack probe off: the audit is the probe)."""
    if row.target_epsilon is None:
        return PrivacyConfig(attack_phones=0)
    simulated: dict[str, Any] = {}
    if row.simulated:
        simulated = {
            "simulated_population": SIMULATED_POPULATION,
            "noise_cohort_size": NOISE_COHORT,
        }
    return PrivacyConfig(
        dp=DPConfig(clip_norm=0.5, expected_clients=clients_per_round),
        target_epsilon=row.target_epsilon,
        calibrate_noise=True,
        attack_phones=0,
        **simulated,
    )


def federation_for(row: Row, args: argparse.Namespace) -> FederationConfig:
    """The row's run: every phone online, no evaluation, few checkpoints kept."""
    config = FederationConfig(
        seed=args.seed,
        rounds=args.rounds,
        clients_per_round=args.clients_per_round,
        eval_every=0,
        checkpoint_every=0,
        keep_last=1,
        fleet=FleetConfig(eligibility=False, dropout_rate=0.0),
        privacy=privacy_for(row, args.clients_per_round),
    )
    if row.target_epsilon is not None:
        config = replace(
            config, strategy=replace(config.strategy, name="fedavg", server_lr=1.0)
        )
    return config


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
    model = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        embed_dim=args.embed_dim,
        hidden_dim=args.hidden_dim,
    )
    return Simulation.create(
        run_dir,
        federation=federation,
        corpus=CorpusConfig(),
        model=model,
        tokenizer=tokenizer,
        splits=splits,
    )


def audit_row(
    row: Row,
    args: argparse.Namespace,
    *,
    splits: CorpusSplits,
    tokenizer: WordTokenizer,
    users: CanaryUsers,
) -> AuditReport:
    """Train the row's run from scratch in OUT/<slug> and audit it."""
    simulation = fresh_simulation(
        row.slug,
        args,
        federation=federation_for(row, args),
        splits=users.add_to(splits),
        tokenizer=tokenizer,
    )

    def progress(server_round: int, record: dict[str, Any]) -> None:
        epsilon = record.get("epsilon")
        spent = "" if epsilon is None else f", epsilon {epsilon:.3f}"
        print(f"  {row.slug} round {server_round}{spent}", file=sys.stderr)

    try:
        return audit_simulation(simulation, users, score=args.score, on_round=progress)
    finally:
        simulation.close()


def table_line(row: Row, report: AuditReport) -> str:
    """One Markdown row of the audit table."""
    result = report.result
    accounted = f"{report.epsilon:.2f} ({report.delta:g})"
    if report.simulated_epsilon is not None:
        accounted += f"; simulated deployment {report.simulated_epsilon:.2f}"
    cells = [
        row.name,
        str(report.rounds),
        accounted,
        f"{result.epsilon_lower_bound:.2f}",
        f"{result.k_plus} / {result.k_minus}",
        f"{result.correct} of {result.guesses}",
    ]
    return "| " + " | ".join(cells) + " |"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for the runs")
    parser.add_argument("--canaries", type=int, default=200, help="m canary users")
    parser.add_argument("--repeats", type=int, default=64, help="copies per user")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clients-per-round", type=int, default=20)
    parser.add_argument("--max-users", type=int, default=40, help="real users")
    parser.add_argument("--embed-dim", type=int, default=32)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score", choices=SCORES, default="total-drop")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--rows",
        default=",".join(r.slug for r in ROWS),
        help="comma-separated rows (default: all)",
    )
    args = parser.parse_args(argv)
    slugs = {r.slug for r in ROWS}
    unknown = set(args.rows.split(",")) - slugs
    if unknown:
        parser.error(f"--rows: unknown {sorted(unknown)} (one of {sorted(slugs)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    tokenizer = WordTokenizer.public()
    splits = first_users(load_corpus(CorpusConfig()), args.max_users)
    users = CanaryUsers.make(
        count=args.canaries, repeats=args.repeats, seed=args.seed, tokenizer=tokenizer
    )
    chosen = [r for r in ROWS if r.slug in args.rows.split(",")]
    started = time.perf_counter()
    lines, violations = [], []
    for row in chosen:
        report = audit_row(row, args, splits=splits, tokenizer=tokenizer, users=users)
        lines.append(table_line(row, report))
        print(lines[-1], file=sys.stderr, flush=True)
        if report.violated:
            violations.append((row, report))
    minutes = (time.perf_counter() - started) / 60
    print(
        f"\n{args.canaries} canary users ({sum(users.included)} included) x "
        f"{args.repeats} copies, {args.max_users} real users, {args.rounds} rounds "
        f"of {args.clients_per_round}, model {args.embed_dim}/{args.hidden_dim}, "
        f"score {args.score}, seed {args.seed}; {minutes:.1f} min in all\n"
    )
    print(HEADER)
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(lines))
    for row, report in violations:
        print(
            f"\nPRIVACY AUDIT FAILED: {row.name}: the audit proves epsilon >= "
            f"{report.result.epsilon_lower_bound:.3f} with 95 % confidence, above "
            f"the accounted {report.epsilon:.3f} (delta {report.delta:g}); the "
            "accounting or the noise is wrong",
            file=sys.stderr,
        )
    return 1 if violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
