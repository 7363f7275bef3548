"""Speed of the model on this machine: training, suggestions, evaluation.

    .venv/bin/python -m benchmarks.model [--steps 30] [--calls 400] [--threads N]

Training speed is set against the machine's own float32 matmul rate, measured in
the same run: tokens/s x 3 x forward FLOPs per token (backward costs about twice
the forward) over the matmul GFLOP/s gives the share of the peak the LSTM
reaches. Only non-padding targets count as tokens, so padding lowers the share.
Suggestion latency is measured by typing held-out messages key by key.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from benchmarks.reporting import load_average
from corpora.corpus import CorpusConfig, load_corpus
from corpora.samples import evenly_spaced
from corpora.tokenizer import WordTokenizer
from device_sim.memory import MemoryMixture, build_memory
from device_sim.memory_config import MemoryConfig
from models.batching import encode_messages
from models.config import ModelConfig, TrainingConfig
from models.metrics import evaluate
from models.model import NextWordModel, count_parameters, flops_per_token
from models.sampled_softmax import public_proposal
from models.suggest import Suggester
from models.training import train_local

# Optimizer steps before timing: the first steps allocate and warm caches.
WARMUP_STEPS = 3
# Training runs timed: the phones' plain SGD, with the full softmax and with
# the sampled one (`--train-softmax sampled`), and the central baseline's Adam.
_SGD = TrainingConfig(batch_size=16, lr=0.5, optimizer="sgd")
TRAINING_RUNS = {
    "SGD, batch 16": _SGD,
    "SGD, batch 16, sampled 1,024": replace(_SGD, train_softmax="sampled"),
    "SGD, batch 16, sampled 4,096": replace(
        _SGD, train_softmax="sampled", softmax_samples=4096
    ),
    "Adam, batch 32": TrainingConfig(batch_size=32, lr=2e-3, optimizer="adam"),
}


@dataclass(frozen=True)
class Latencies:
    """Seconds per `Suggester.suggest` call, by kind of keystroke."""

    in_word: list[float]  # a letter inside a word: the cached context is reused
    new_word: list[float]  # after a space or mark: one model pass on a new context


def matmul_gflops(size: int = 1024, repeats: int = 10) -> float:
    """Best float32 GFLOP/s of a `size` x `size` matmul over `repeats` tries."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def training_tokens_per_second(
    model_config: ModelConfig,
    sequences: list[list[int]],
    config: TrainingConfig,
    *,
    pad_id: int,
    steps: int,
    proposal: torch.Tensor | None = None,
) -> float:
    """Non-padding tokens a second over `steps` timed steps of `train_local`.

    `proposal` is the sampled softmax's (`models.sampled_softmax`), if it samples.
    """
    torch.manual_seed(0)
    model = NextWordModel(model_config)
    rng = np.random.default_rng(0)
    warmup = replace(config, max_steps=WARMUP_STEPS)
    train_local(model, sequences, warmup, pad_id=pad_id, rng=rng, proposal=proposal)
    timed = replace(config, max_steps=steps)
    start = time.perf_counter()
    result = train_local(
        model, sequences, timed, pad_id=pad_id, rng=rng, proposal=proposal
    )
    return result.num_tokens / (time.perf_counter() - start)


def suggestion_latencies(
    suggester: Suggester, texts: list[str], calls: int
) -> Latencies:
    """Type `texts` one key at a time until `calls` suggestions were timed."""
    in_word: list[float] = []
    new_word: list[float] = []
    for text in texts:
        for end in range(1, len(text) + 1):
            typed = text[:end]
            start = time.perf_counter()
            suggester.suggest(typed)
            elapsed = time.perf_counter() - start
            (in_word if typed[-1].isalnum() else new_word).append(elapsed)
            if len(in_word) + len(new_word) >= calls:
                return Latencies(in_word, new_word)
    return Latencies(in_word, new_word)


def _ms(values: list[float], quantile: float) -> str:
    if not values:
        return "-"
    return f"{np.quantile(np.array(values), quantile) * 1e3:.2f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps a run")
    parser.add_argument("--calls", type=int, default=400, help="suggestions timed")
    parser.add_argument("--messages", type=int, default=2000, help="training slice")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()

    with console.status("loading the corpus"):
        splits = load_corpus(CorpusConfig())
        tokenizer = WordTokenizer.public(10_000)
    model_config = ModelConfig(vocab_size=tokenizer.vocab_size)
    texts = splits.train_texts()[: args.messages]
    sequences = encode_messages(tokenizer, texts, model_config.max_len)
    heldout = evenly_spaced(splits.heldout_texts(), 1000)

    with console.status("measuring the matmul rate"):
        peak = matmul_gflops()
    forward = flops_per_token(model_config)
    table = Table(title=f"fedtype model benchmark ({torch.get_num_threads()} threads)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("note")
    table.add_row(
        "parameters", f"{count_parameters(NextWordModel(model_config)):,}", ""
    )
    table.add_row("forward FLOPs / token", f"{forward / 1e6:.2f} M", "training ~3x")
    table.add_row("float32 matmul", f"{peak:.1f} GFLOP/s", "1024 x 1024, best of 10")
    for name, config in TRAINING_RUNS.items():
        with console.status(f"training: {name}"):
            rate = training_tokens_per_second(
                model_config,
                sequences,
                config,
                pad_id=tokenizer.pad_id,
                steps=args.steps,
                proposal=public_proposal(tokenizer),
            )
        # The sampled runs do less arithmetic a token than `forward` counts.
        achieved = rate * 3 * forward / 1e9
        table.add_row(
            f"train {name}",
            f"{rate:,.0f} tokens/s",
            f"{achieved:.1f} GFLOP/s = {achieved / peak:.0%} of matmul",
        )

    torch.manual_seed(0)
    model = NextWordModel(model_config)
    suggester = Suggester(model, tokenizer)
    with console.status("typing held-out messages"):
        latencies = suggestion_latencies(suggester, heldout, args.calls)
    every = latencies.in_word + latencies.new_word
    for label, values in (
        ("suggest, any key", every),
        ("suggest, letter in a word", latencies.in_word),
        ("suggest, after space/mark", latencies.new_word),
    ):
        table.add_row(
            label,
            f"median {_ms(values, 0.5)}",
            f"p99 {_ms(values, 0.99)} over {len(values)} calls",
        )
    memory = build_memory(
        model, tokenizer, texts[:600], capacity=MemoryConfig().capacity
    )
    mixed = MemoryMixture(model=model, memory=memory, mixing=MemoryConfig().prior)
    with console.status("typing held-out messages with a full phone memory"):
        remembered = suggestion_latencies(
            Suggester(mixed, tokenizer), heldout, args.calls
        )
    values = remembered.in_word + remembered.new_word
    table.add_row(
        f"suggest, {len(memory):,}-entry memory",
        f"median {_ms(values, 0.5)}",
        f"p99 {_ms(values, 0.99)} over {len(values)} calls",
    )
    with console.status("evaluating 1,000 held-out messages"):
        start = time.perf_counter()
        metrics = evaluate(model, tokenizer, heldout)
        seconds = time.perf_counter() - start
    table.add_row(
        "evaluate 1,000 messages",
        f"{seconds:.1f} s",
        f"{metrics.num_targets:,} word targets, keystrokes on 400",
    )
    # An untrained model still saves keys: once the typed prefix leaves three
    # words or fewer, any model shows the intended one. This is the floor.
    table.add_row(
        "untrained model",
        f"KSR {metrics.keystroke_savings:.1%}",
        f"top-3 {metrics.top3:.2%}, perplexity {metrics.perplexity:,.0f}",
    )
    console.print(table)
    one, five = load_average()
    console.print(
        f"load average {one:.2f} (1 min), {five:.2f} (5 min) on "
        f"{os.cpu_count()} CPUs: other processes slow every figure above."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
