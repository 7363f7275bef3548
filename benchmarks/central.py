"""Data-parallel speed of the central baseline on this machine.

    .venv/bin/python -m benchmarks.central [--steps 40] [--batch-size 32]

(as a module: run as a script, this file's name would shadow the `central`
package.)

Times `--steps` optimizer steps (after warm-up steps) of the default model on
the pooled training data, at the same global batch, in three settings:

- 1 worker, 1 intra-op thread
- 1 worker, 2 intra-op threads
- 2 workers (DDP over gloo on 127.0.0.1), 1 thread each: on a 2-core machine
  two workers with two threads each would oversubscribe the cores.

Tokens/s counts non-padding targets of all workers. Scaling efficiency is the
2-worker rate over twice the 1-worker, 1-thread rate; the speedup over 1 worker
with 2 threads says whether DDP beats simply giving one process both cores.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.nn.parallel import DistributedDataParallel

from central.data import PooledStream
from central.launch import launch_local
from central.step import data_parallel_step
from corpora.corpus import CorpusConfig, load_corpus
from corpora.tokenizer import WordTokenizer
from models.config import ModelConfig
from models.distributed import (
    ByteCounter,
    WorkerContext,
    context_from_env,
    destroy_process_group,
    init_process_group,
)
from models.model import NextWordModel
from models.seeding import derive_seed

# Steps run before timing: the first ones allocate and warm caches.
WARMUP_STEPS = 3


@dataclass(frozen=True)
class Timing:
    """One setting's measured rate."""

    tokens: int  # targets of all workers in the timed steps
    seconds: float
    bytes_sent: int  # all-reduce bytes of the timed steps (ring model)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def time_steps(context: WorkerContext, steps: int, batch_size: int) -> Timing:
    """Time `steps` steps of this worker (in a process group when W > 1)."""
    tokenizer = WordTokenizer.public()
    splits = load_corpus(CorpusConfig())
    config = ModelConfig(vocab_size=tokenizer.vocab_size)
    stream = PooledStream(
        splits=splits,
        tokenizer=tokenizer,
        max_len=config.max_len,
        shard_messages=20_000,
        batch_size=batch_size // context.world_size,
        seed=0,
        rank=context.rank,
        world_size=context.world_size,
    )
    batches = []
    for batch in stream.epoch(0):
        batches.append(batch)
        if len(batches) == WARMUP_STEPS + steps:
            break
    torch.manual_seed(derive_seed(0, "init"))
    model = NextWordModel(config)
    counter = ByteCounter(context.world_size)
    network: torch.nn.Module = model
    if context.distributed:
        network = DistributedDataParallel(model)
        network.register_comm_hook(None, counter.hook)
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    tokens, started, sent = 0, 0.0, 0
    for index, batch in enumerate(batches):
        if index == WARMUP_STEPS:
            started, sent = time.perf_counter(), counter.sent_bytes
        result = data_parallel_step(
            network,
            optimizer,
            batch,
            pad_id=tokenizer.pad_id,
            grad_clip_norm=1.0,
            context=context,
        )
        if index >= WARMUP_STEPS:
            tokens += result.global_targets
    return Timing(tokens, time.perf_counter() - started, counter.sent_bytes - sent)


def ddp_worker(out: str, steps: int, batch_size: int) -> None:
    """One of the DDP workers; rank 0 writes the timing to `out`."""
    context = context_from_env()
    init_process_group(context, timeout_s=600)
    try:
        timing = time_steps(context, steps, batch_size)
        if context.is_main:
            Path(out).write_text(json.dumps(timing.__dict__))
    finally:
        destroy_process_group()


def single(steps: int, batch_size: int, threads: int) -> Timing:
    """One worker in this process with `threads` intra-op threads."""
    torch.set_num_threads(threads)
    return time_steps(WorkerContext(0, 1, 0, torch.device("cpu")), steps, batch_size)


def two_workers(steps: int, batch_size: int) -> Timing:
    """Two DDP workers, one thread each."""
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "timing.json")
        launch_local(ddp_worker, (out, steps, batch_size), workers=2, threads=1)
        return Timing(**json.loads(Path(out).read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps")
    parser.add_argument("--batch-size", type=int, default=32, help="global batch")
    args = parser.parse_args()
    console = Console()
    console.print(f"load average before: {os.getloadavg()[0]:.2f}")
    results = {
        "1 worker, 1 thread": single(args.steps, args.batch_size, 1),
        "1 worker, 2 threads": single(args.steps, args.batch_size, 2),
        "2 workers, 1 thread each": two_workers(args.steps, args.batch_size),
    }
    console.print(f"load average after: {os.getloadavg()[0]:.2f}")
    table = Table(title=f"{args.steps} steps, global batch {args.batch_size}")
    for column in ("setting", "tokens/s", "bytes/step"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for name, timing in results.items():
        table.add_row(
            name,
            f"{timing.tokens_per_s:,.0f}",
            f"{timing.bytes_sent / args.steps:,.0f}",
        )
    console.print(table)
    base = results["1 worker, 1 thread"].tokens_per_s
    both = results["1 worker, 2 threads"].tokens_per_s
    ddp = results["2 workers, 1 thread each"].tokens_per_s
    console.print(
        f"scaling efficiency (2 workers / 2 x 1 worker, 1 thread): "
        f"{ddp / (2 * base):.0%}"
        f"\n2 workers vs 1 worker with 2 threads: {ddp / both:.2f}x"
    )


if __name__ == "__main__":
    main()
