"""Training speed of the federated fleet against a plain loop, and its memory.

    .venv/bin/python benchmarks/fleet.py [--quick] [--rounds 8] [--executors ...]
        [--memory-executor serial] [--phones 10000] [--memory-rounds 100]

Speed: one `Simulation` per executor (serial, batched, parallel) runs the same
rounds (selection depends on the seed alone, so every executor trains the same
phones on the same batches). Round by round, in rotating order, each simulation
runs a round, and a plain loop (one model, one optimizer, `train_step`) trains on
exactly the batches the round's phones trained on: the same tokens, batch size and
model, with no phones, copies, probes or checkpoints: the compute floor. Tokens a
second of each and their ratio are taken per round, and the medians reported, so
that the load of other processes on a shared machine hits both sides alike. The
first round of each is a warm-up and not counted (worker start, allocator pools).

Memory: a fleet of at least `--phones` phones (users cut into conversation-sized
shards) runs `--memory-rounds` rounds of one local step each. The proportional set
size (PSS: resident memory, pages shared between processes split among them) of
this process and the executor's workers is read after every round; its growth from
round 10 (warm) to the last must stay under 5 %, and the peak resident memory
(getrusage; VmHWM for the workers) under 2 GB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import torch

# Run as a script, so this directory is on sys.path.
from fleet_meters import (  # type: ignore[import-not-found]
    TimedExecutor,
    measured,
    median,
    peak_rss_bytes,
    pss_bytes,
    rss_bytes,
)
from rich.console import Console
from rich.table import Table

from coordinator.config import FederationConfig
from coordinator.simulation import Simulation
from corpora.corpus import CorpusConfig, CorpusSplits, load_corpus
from corpora.tokenizer import WordTokenizer
from device_sim.batched import BatchedExecutor, phone_batches
from device_sim.config import FleetConfig, LocalTrainingConfig
from device_sim.executor import ClientExecutor, SerialExecutor
from device_sim.parallel import ParallelExecutor
from models.batching import count_targets
from models.config import ModelConfig
from models.model import NextWordModel
from models.training import make_optimizer, train_step

# name: (executor class, its settings beyond the model, tokenizer and local ones).
# serial: `Phone.train` in this process. batched: the stacked hand-written model,
# one phone a pass; batched-16: 16 phones a pass. parallel: a worker process a
# core with the batched engine; parallel-serial: the same with `Phone.train`.
EXECUTORS: dict[str, tuple[Any, dict[str, Any]]] = {
    "serial": (SerialExecutor, {}),
    "batched": (BatchedExecutor, {"group_size": 1}),
    "batched-16": (BatchedExecutor, {"group_size": 16}),
    "parallel": (ParallelExecutor, {"engine": "batched"}),
    "parallel-serial": (ParallelExecutor, {"engine": "serial"}),
}
# Rounds after which memory counts as warmed up.
WARM_ROUNDS = 10


def make_executor(
    name: str, model: ModelConfig, tokenizer: WordTokenizer, local: LocalTrainingConfig
) -> ClientExecutor:
    """The executor of `EXECUTORS` called `name`."""
    kind, settings = EXECUTORS[name]
    executor: ClientExecutor = kind(
        model_config=model, tokenizer=tokenizer, local=local, **settings
    )
    return executor


def round_batches(
    timed: TimedExecutor,
    tokenizer: WordTokenizer,
    local: LocalTrainingConfig,
    max_len: int,
) -> list[torch.Tensor]:
    """The batches the phones of the executor's last round trained on."""
    batches = []
    for phone in timed.phones:
        data = phone.local_data(
            tokenizer=tokenizer,
            config=local,
            max_len=max_len,
            server_round=timed.server_round,
        )
        batches += phone_batches(
            data.sequences,
            local.training_config(),
            pad_id=tokenizer.pad_id,
            rng=data.rng,
        )
    return batches


def plain_loop(
    model: NextWordModel,
    optimizer: torch.optim.Optimizer,
    batches: list[torch.Tensor],
    local: LocalTrainingConfig,
    pad_id: int,
) -> float:
    """Seconds `train_step` takes over `batches` on one model."""
    config = local.training_config()
    started = time.perf_counter()
    for batch in batches:
        train_step(model, optimizer, batch, config, pad_id=pad_id)
    return time.perf_counter() - started


def start_simulations(
    names: Sequence[str],
    out: str,
    federation: FederationConfig,
    splits: CorpusSplits,
    tokenizer: WordTokenizer,
) -> dict[str, tuple[Simulation, TimedExecutor]]:
    """A simulation per executor name, each with its executor behind a timer."""
    sims = {}
    for name in names:
        sim = Simulation.create(
            os.path.join(out, name.replace(" ", "_")),
            federation=federation,
            corpus=splits.config,
            model=ModelConfig(),
            tokenizer=tokenizer,
            splits=splits,
        )
        sim.executor.close()
        timed = TimedExecutor(
            make_executor(name, ModelConfig(), tokenizer, federation.local)
        )
        sim.executor = timed
        sims[name] = (sim, timed)
    return sims


# Per variant, per counted round: (tokens, wall seconds, CPU seconds).
Samples = dict[str, list[tuple[int, float, float]]]


def speed_round(
    sims: dict[str, tuple[Simulation, TimedExecutor]],
    plain: dict[int, tuple[NextWordModel, torch.optim.Optimizer]],
    server_round: int,
    tokenizer: WordTokenizer,
) -> tuple[int, dict[str, tuple[float, float]]]:
    """Run one round of every simulation and the plain loops, in rotating order.

    Returns the round's tokens and each variant's (wall, CPU) seconds.
    """
    names = list(sims)
    shift = server_round % len(names)
    order = [*names[shift:], *names[:shift]]
    counts = list(plain)[server_round % 2 :] + list(plain)[: server_round % 2]
    threads = torch.get_num_threads()
    local = next(iter(sims.values()))[0].federation.local
    spent: dict[str, tuple[float, float]] = {}
    tokens: dict[str, int] = {}
    batches: list[torch.Tensor] = []
    for i, name in enumerate(order):
        sim, timed = sims[name]
        pids: list[int] = getattr(timed.inner, "worker_pids", list)()
        record, wall, cpu = measured(sim.run_round, pids)
        spent[name], tokens[name] = (wall, cpu), record["tokens"]
        spent[f"{name} (train only)"] = (timed.seconds, float("nan"))
        if not batches:
            batches = round_batches(timed, tokenizer, local, ModelConfig().max_len)
        # The plain loops go between the executors, on the round's batches.
        for count in counts[i : i + 1] if i < len(order) - 1 else counts[i:]:
            model, optimizer = plain[count]
            torch.set_num_threads(count)
            run = partial(
                plain_loop, model, optimizer, batches, local, tokenizer.pad_id
            )
            _, wall, cpu = measured(run, [])
            torch.set_num_threads(threads)
            spent[f"plain loop, {count} thread{'s' * (count > 1)}"] = (wall, cpu)
    expected = sum(count_targets(b, tokenizer.pad_id) for b in batches)
    if any(t != expected for t in tokens.values()):
        raise RuntimeError(f"the executors trained different tokens: {tokens}")
    return expected, spent


def speed(
    splits: CorpusSplits,
    tokenizer: WordTokenizer,
    names: Sequence[str],
    rounds: int,
    local: LocalTrainingConfig,
    console: Console,
) -> Samples:
    """Each executor's rounds and the plain loops on the same batches, per round."""
    federation = FederationConfig(rounds=rounds + 1, eval_every=0, local=local)
    plain = {}
    for count in sorted({os.cpu_count() or 1, 1}, reverse=True):
        torch.manual_seed(0)
        model = NextWordModel(ModelConfig())
        plain[count] = (model, make_optimizer(model, local.training_config()))
    samples: Samples = {}
    with tempfile.TemporaryDirectory() as out:
        sims = start_simulations(names, out, federation, splits, tokenizer)
        try:
            for r in range(rounds + 1):
                tokens, spent = speed_round(sims, plain, r, tokenizer)
                console.print(
                    f"round {r + 1}: {tokens:,} tokens"
                    + (" (warm-up, not counted)" if r == 0 else "")
                    + "".join(f"; {k} {w:.2f} s" for k, (w, _) in spent.items())
                )
                for key, (wall, cpu) in spent.items():
                    if r > 0:
                        samples.setdefault(key, []).append((tokens, wall, cpu))
        finally:
            for sim, _ in sims.values():
                sim.close()
    return samples


def speed_table(samples: Samples, rounds: int, loss_sequences: int) -> Table:
    """Medians over rounds of throughput and of ratios taken within a round."""
    plain = [k for k in samples if k.startswith("plain")]
    one = "plain loop, 1 thread"
    table = Table(
        title=f"Training throughput, median of {rounds} rounds "
        f"(phones' loss probes: {loss_sequences} sequences)"
    )
    for column in (
        "variant",
        "tokens/s",
        "/ fastest plain",
        "tokens/CPU-s",
        "/ plain 1 thread",
    ):
        table.add_column(column, justify="left" if column == "variant" else "right")
    by_speed = sorted(
        samples.items(), key=lambda kv: -median([t / w for t, w, _ in kv[1]])
    )
    for key, rows in by_speed:
        fastest = [
            min(samples[p][i][1] for p in plain) / wall
            for i, (_, wall, _) in enumerate(rows)
        ]
        per_cpu = [t / cpu for t, _, cpu in rows]
        by_one = [samples[one][i][2] / cpu for i, (_, _, cpu) in enumerate(rows)]
        table.add_row(
            key,
            f"{median([t / w for t, w, _ in rows]):,.0f}",
            f"{median(fastest):.2f}",
            f"{median(per_cpu):,.0f}" if rows[0][2] == rows[0][2] else "",
            f"{median(by_one):.2f}" if rows[0][2] == rows[0][2] else "",
        )
    return table


def shard_size_for(phones: int, messages_per_user: list[int]) -> int:
    """The largest shard size (messages) that makes at least `phones` phones."""
    for size in range(max(messages_per_user), 0, -1):
        if sum(-(-n // size) for n in messages_per_user) >= phones:
            return size
    return 1


def memory(
    splits: CorpusSplits,
    tokenizer: WordTokenizer,
    name: str,
    phones: int,
    rounds: int,
    console: Console,
) -> None:
    """Peak and per-round resident memory of a large fleet over many rounds."""
    sizes = [len(u.train) for u in splits.training_users.values()]
    shard = shard_size_for(phones, sizes)
    federation = FederationConfig(
        rounds=rounds,
        eval_every=0,
        local=LocalTrainingConfig(max_local_steps=1),
        fleet=FleetConfig(shard_messages=shard),
    )
    model_config = ModelConfig()
    with tempfile.TemporaryDirectory() as out:
        sim = Simulation.create(
            out,
            federation=federation,
            corpus=splits.config,
            model=model_config,
            tokenizer=tokenizer,
            splits=splits,
        )
        sim.executor.close()
        executor = make_executor(name, model_config, tokenizer, federation.local)
        sim.executor = executor
        workers = (
            executor.worker_pids() if isinstance(executor, ParallelExecutor) else []
        )
        console.print(
            f"memory: {len(sim.fleet):,} phones ({shard} messages a shard), "
            f"{name} executor, RSS {rss_bytes() / 2**20:,.0f} MiB before round 1"
        )
        series, abandoned = [], 0
        started = time.perf_counter()
        for r in range(1, rounds + 1):
            abandoned += sim.run_round()["abandoned"]
            series.append(pss_bytes() + sum(pss_bytes(p) for p in workers))
            if r == 1 or r % 10 == 0:
                console.print(
                    f"memory: round {r}: PSS {series[-1] / 2**20:,.0f} MiB, RSS this "
                    f"process {rss_bytes() / 2**20:,.0f} MiB"
                )
        elapsed = time.perf_counter() - started
        peak_workers = sum(peak_rss_bytes(p) for p in workers)
        sim.close()
    # Single rounds swing with the phones drawn; compare 10-round means too.
    warm = min(WARM_ROUNDS, rounds) - 1
    growth = (series[-1] - series[warm]) / series[warm]
    first, last = series[warm : warm + 10], series[-10:]
    trend = statistics.mean(last) / statistics.mean(first) - 1
    mib = 2**20
    console.print(
        f"memory: {rounds} rounds in {elapsed:.0f} s ({abandoned} abandoned); "
        f"PSS (this process + {len(workers)} workers) after round {warm + 1} "
        f"{series[warm] / mib:,.0f} MiB, after round {rounds} {series[-1] / mib:,.0f} "
        f"MiB: growth {growth:+.1%}; mean of the last 10 rounds against rounds "
        f"{warm + 1}-{warm + len(first)}: {trend:+.1%}; from round {warm + 1} on min "
        f"{min(series[warm:]) / mib:,.0f}, max {max(series[warm:]) / mib:,.0f} MiB; "
        f"peak RSS this process {peak_rss_bytes() / mib:,.0f} MiB, workers "
        f"{peak_workers / mib:,.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--rounds", type=int, help="timed rounds (default 8, quick 2)")
    parser.add_argument(
        "--executors", nargs="+", choices=list(EXECUTORS), default=list(EXECUTORS)
    )
    parser.add_argument("--memory-executor", choices=list(EXECUTORS), default="serial")
    parser.add_argument(
        "--loss-sequences",
        type=int,
        help="the phones' loss-probe size (default: LocalTrainingConfig's)",
    )
    parser.add_argument("--phones", type=int, default=10_000)
    parser.add_argument("--memory-rounds", type=int, help="default 100, quick 20")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads of in-process executors (default: torch's); the plain "
        "loop runs with 1 and with every core",
    )
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 8)
    memory_rounds = args.memory_rounds or (20 if args.quick else 100)
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(width=110)
    splits = load_corpus(CorpusConfig())
    tokenizer = WordTokenizer.public()
    console.print(
        f"{os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; {len(splits.training_users)} users"
    )
    if not args.skip_speed:
        local = LocalTrainingConfig()
        if args.loss_sequences is not None:
            local = replace(local, loss_sequences=args.loss_sequences)
        load = os.getloadavg()[0]
        samples = speed(splits, tokenizer, args.executors, rounds, local, console)
        console.print(speed_table(samples, rounds, local.loss_sequences))
        console.print(
            f"load average (1 min) {load:.1f} before, {os.getloadavg()[0]:.1f} after"
        )
    if not args.skip_memory:
        memory(
            splits, tokenizer, args.memory_executor, args.phones, memory_rounds, console
        )


if __name__ == "__main__":
    main()
