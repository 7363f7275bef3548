"""Training speed of the federated fleet against a plain loop, and its memory.

    .venv/bin/python -m benchmarks.fleet [--rounds 8] [--workers 2]
        [--precision bf16] [--shapes default fedavg] [--skip-memory]
        [--phones 10000] [--memory-rounds 100]

Speed: W ranks (`models.launch.launch_local`, gloo on loopback, one thread each)
run a `Simulation` round by round. After each round rank 0 replays exactly the
batches the round's phones trained on (`models.training.local_batches` from each
phone's own stream) through a plain loop: one fp32 model, one SGD optimizer,
`train_step`, every core's threads, no phones, probes, screening or checkpoints,
while the other ranks wait. Both sides' tokens a second are taken per round and
the medians reported; round 1 is a warm-up and not counted. fedtype's figure is
end to end inside the round (`wall_seconds`: training, the phones' loss probes,
the gather, the screen, the all-reduce and the server step); the save after it is
reported apart.

Two round shapes: the default round (20 reports, at most 16 local steps, the
default fleet) and FedAvg's (20 reports, one local epoch with no step cap, no
dropouts, every phone eligible, users with at least 500 words).

Memory: at least `--phones` phones (users cut into conversation-sized shards) run
`--memory-rounds` rounds of one local step each on W ranks; the proportional set
size (PSS) of the whole process tree (this process and the ranks) is read after
every round, and the peak resident memory of each process at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.fleet_meters import peak_rss_bytes, pss_bytes
from coordinator.config import FederationConfig
from coordinator.run.simulation import Simulation
from corpora.corpus import CorpusConfig, load_corpus
from device_sim.config import FleetConfig, LocalTrainingConfig
from device_sim.phone import Phone
from device_sim.ranks import GroupRanks, Ranks, SingleRank
from models.batching import count_targets
from models.config import DEFAULT_PRECISION, ModelConfig
from models.launch import launch_local
from models.model import NextWordModel, flops_per_token
from models.training import local_batches, make_optimizer, train_step

# Rounds after which memory counts as warmed up.
WARM_ROUNDS = 10


@dataclass(frozen=True)
class Shape:
    """A round shape: the federation and the corpus it runs on."""

    name: str
    federation: FederationConfig
    corpus: CorpusConfig


def shapes(precision: str, workers: int) -> dict[str, Shape]:
    """The default round and FedAvg's round, as `fedtype simulate` would run them."""
    base = FederationConfig(eval_every=0, workers=workers)
    default = replace(base, local=replace(base.local, precision=precision))
    fedavg = replace(
        base,
        strategy=replace(base.strategy, name="fedavg"),
        local=LocalTrainingConfig(max_local_steps=None, precision=precision),
        fleet=FleetConfig(dropout_rate=0.0, eligibility=False),
    )
    return {
        "default": Shape("default", default, CorpusConfig()),
        "fedavg": Shape("fedavg", fedavg, CorpusConfig(min_words_per_user=500)),
    }


def ranks_here() -> Ranks:
    """The ranks of this process: a group when launched with W > 1."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return GroupRanks.from_environment()
    return SingleRank()


def round_batches(
    phones: list[Phone], sim: Simulation, server_round: int
) -> list[torch.Tensor]:
    """The batches the round's phones trained on, drawn as their training drew."""
    local = sim.federation.local
    batches: list[torch.Tensor] = []
    for phone in phones:
        data = phone.local_data(
            tokenizer=sim.tokenizer,
            config=local,
            max_len=sim.model_config.max_len,
            server_round=server_round,
        )
        batches += local_batches(
            data.sequences,
            local.training_config(),
            pad_id=sim.tokenizer.pad_id,
            rng=data.rng,
        )
    return batches


def plain_loop(batches: list[torch.Tensor], local: LocalTrainingConfig) -> float:
    """Seconds of the plain fp32 loop over `batches`, with every core's threads."""
    config = replace(local.training_config(), precision="fp32")
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = NextWordModel(ModelConfig())
    optimizer = make_optimizer(model, config)
    started = time.perf_counter()
    for batch in batches:
        train_step(model, optimizer, batch, config, pad_id=0)
    elapsed = time.perf_counter() - started
    torch.set_num_threads(threads)
    return elapsed


def speed_rank(shape: Shape, rounds: int, out: str, result_path: str) -> None:
    """One rank's part of the speed measurement; rank 0 writes the samples."""
    ranks = ranks_here()
    splits = load_corpus(shape.corpus)
    sim = Simulation.create(
        out,
        federation=replace(shape.federation, rounds=rounds + 1),
        corpus=shape.corpus,
        model=ModelConfig(),
        splits=splits,
        ranks=ranks,
    )
    trained: list[Phone] = []
    inner = sim.executor.train

    def recording(phones: Any, *args: Any, **kwargs: Any) -> Any:
        trained[:] = list(phones)
        return inner(phones, *args, **kwargs)

    sim.executor.train = recording  # type: ignore[method-assign]
    samples = []
    for server_round in range(1, rounds + 2):
        started = time.perf_counter()
        record = sim.run_round()
        with_save = time.perf_counter() - started
        plain_s, plain_tokens = float("nan"), 0
        if ranks.rank == 0:
            batches = round_batches(trained, sim, server_round)
            plain_tokens = sum(count_targets(b, 0) for b in batches)
            plain_s = plain_loop(batches, sim.federation.local)
        ranks.broadcast_object(None)  # the others wait for the plain loop
        if server_round > 1 and not record["abandoned"]:
            samples.append(
                {
                    "tokens": record["tokens"],
                    "wall": record["wall_seconds"],
                    "with_save": with_save,
                    "plain_tokens": plain_tokens,
                    "plain_s": plain_s,
                    "reported": record["reported"],
                }
            )
    if ranks.rank == 0:
        with open(result_path, "w") as handle:
            handle.write(repr(samples))
    sim.close()


def run_speed(shape: Shape, rounds: int, workers: int) -> list[dict[str, float]]:
    """Samples of `speed_rank` on `workers` ranks (in this process when 1)."""
    with tempfile.TemporaryDirectory() as tmp:
        out, result = os.path.join(tmp, "run"), os.path.join(tmp, "samples.txt")
        if workers == 1:
            speed_rank(shape, rounds, out, result)
        else:
            launch_local(speed_rank, (shape, rounds, out, result), workers=workers)
        with open(result) as handle:
            samples: list[dict[str, float]] = eval(handle.read())  # our own repr
    return samples


def matmul_rates() -> dict[str, float]:
    """GFLOP/s of a 2048-square matmul in fp32 and bf16 with every core's threads."""
    torch.set_num_threads(os.cpu_count() or 1)
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = (
            torch.randn(2048, 2048, dtype=dtype),
            torch.randn(2048, 2048, dtype=dtype),
        )
        a @ b
        started = time.perf_counter()
        for _ in range(5):
            a @ b
        rates[str(dtype).removeprefix("torch.")] = (
            5 * 2 * 2048**3 / (time.perf_counter() - started) / 1e9
        )
    return rates


def speed_table(results: dict[str, list[dict[str, float]]], workers: int) -> Table:
    """Median tokens a second of each shape, fedtype against the plain loop."""
    table = Table(title=f"fleet engine on {workers} rank(s) against a plain loop")
    for column in (
        "round shape",
        "rounds",
        "plain loop tok/s",
        "fedtype tok/s",
        "ratio",
        "with save, ratio",
        "fedtype GFLOP/s",
    ):
        table.add_column(column, justify="right")
    flops = 3 * flops_per_token(ModelConfig())  # forward and backward
    for name, samples in results.items():
        plain = [s["plain_tokens"] / s["plain_s"] for s in samples]
        ours = [s["tokens"] / s["wall"] for s in samples]
        ratio = [o / p for o, p in zip(ours, plain, strict=True)]
        saved = [
            s["tokens"] / s["with_save"] / p
            for s, p in zip(samples, plain, strict=True)
        ]
        table.add_row(
            name,
            str(len(samples)),
            f"{statistics.median(plain):,.0f}",
            f"{statistics.median(ours):,.0f}",
            f"{statistics.median(ratio):.2f}x",
            f"{statistics.median(saved):.2f}x",
            f"{statistics.median(ours) * flops / 1e9:.1f}",
        )
    return table


def shard_size_for(phones: int, messages_per_user: list[int]) -> int:
    """The largest shard size (messages) that makes at least `phones` phones."""
    for size in range(max(messages_per_user), 0, -1):
        if sum(-(-n // size) for n in messages_per_user) >= phones:
            return size
    return 1


def memory_rank(
    federation: FederationConfig,
    phones: int,
    rounds: int,
    out: str,
    parent: int,
    report: str,
) -> None:
    """One rank of the memory run; rank 0 records the process tree's PSS.

    The rank shards the users into at least `phones` phones itself, so that the
    launching process never holds the corpus (its memory counts in the tree).
    """
    ranks = ranks_here()
    corpus = CorpusConfig()
    splits = load_corpus(corpus)
    counts = [len(u.train) for u in splits.training_users.values()]
    fleet = replace(federation.fleet, messages_per_phone=shard_size_for(phones, counts))
    sim = Simulation.create(
        out,
        federation=replace(federation, fleet=fleet),
        corpus=corpus,
        model=ModelConfig(),
        splits=splits,
        ranks=ranks,
    )
    del splits
    gathered = ranks.all_gather_objects(os.getpid())
    pids: list[int] = sorted({parent, *(int(str(p)) for p in gathered)})
    lines = [f"{len(sim.fleet):,} phones on {ranks.world_size} rank(s)"]
    series = []
    started = time.perf_counter()
    for _ in range(rounds):
        sim.run_round()
        if ranks.rank == 0:
            series.append(sum(pss_bytes(p) for p in pids))
    peaks = ranks.all_gather_objects(peak_rss_bytes())
    if ranks.rank == 0:
        warm = min(WARM_ROUNDS, rounds) - 1
        mib = 2**20
        growth = series[-1] / series[warm] - 1
        trend = (
            statistics.mean(series[-10:]) / statistics.mean(series[warm : warm + 10])
            - 1
        )
        lines += [
            f"{rounds} rounds in {time.perf_counter() - started:.0f} s",
            f"PSS of the process tree after round {warm + 1}: "
            f"{series[warm] / mib:,.0f} MiB; after round {rounds}: "
            f"{series[-1] / mib:,.0f} MiB ({growth:+.1%}); last 10 rounds' mean "
            f"against rounds {warm + 1}-{warm + 10}: {trend:+.1%}; max "
            f"{max(series) / mib:,.0f} MiB",
            "peak RSS per rank: "
            + ", ".join(f"{p / mib:,.0f} MiB" for p in peaks)  # type: ignore[operator]
            + f"; this benchmark's parent {peak_rss_bytes(parent) / mib:,.0f} MiB",
        ]
        with open(report, "w") as handle:
            handle.write("\n".join(lines))
    sim.close()


def run_memory(
    phones: int, rounds: int, workers: int, precision: str, console: Console
) -> None:
    """Memory of a fleet of at least `phones` phones over `rounds` rounds."""
    federation = FederationConfig(
        eval_every=0,
        workers=workers,
        local=LocalTrainingConfig(max_local_steps=1, precision=precision),
    )
    with tempfile.TemporaryDirectory() as tmp:
        args = (federation, phones, rounds, os.path.join(tmp, "run"), os.getpid())
        report = os.path.join(tmp, "memory.txt")
        if workers == 1:
            memory_rank(*args, report)
        else:
            launch_local(memory_rank, (*args, report), workers=workers, threads=1)
        with open(report) as handle:
            for line in handle:
                console.print("memory: " + line.rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds")
    parser.add_argument("--workers", type=int, default=2, help="ranks of fedtype")
    parser.add_argument(
        "--precision", choices=["fp32", "bf16"], default=DEFAULT_PRECISION
    )
    parser.add_argument(
        "--shapes",
        nargs="+",
        choices=["default", "fedavg"],
        default=["default", "fedavg"],
    )
    parser.add_argument("--phones", type=int, default=10_000)
    parser.add_argument("--memory-rounds", type=int, default=100)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    console = Console(width=110)
    console.print(
        f"{os.cpu_count()} cores, torch {torch.__version__}; fedtype on "
        f"{args.workers} rank(s), {args.precision}; load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    if not args.skip_speed:
        rates = matmul_rates()
        console.print(
            "matmul 2048^2 on every core: "
            + ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in rates.items())
        )
        all_shapes = shapes(args.precision, args.workers)
        results = {
            name: run_speed(all_shapes[name], args.rounds, args.workers)
            for name in args.shapes
        }
        console.print(speed_table(results, args.workers))
        console.print(f"load average after: {os.getloadavg()[0]:.2f}")
    if not args.skip_memory:
        run_memory(
            args.phones, args.memory_rounds, args.workers, args.precision, console
        )


if __name__ == "__main__":
    main()
