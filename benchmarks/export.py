"""Parity and cost of the exported keyboard model: fp32 and int8 ONNX vs PyTorch.

    .venv/bin/python -m benchmarks.export --run RUN [--step N] [--prefixes 1000]
        [--messages 2000] [--calls 2000] [--json FILE]

Exports the run's checkpoint twice (fp32, int8) into a temporary folder, then on
the run's held-out users: the largest logit difference from PyTorch on a batch of
held-out messages; strip agreement over `--prefixes` prefixes typed as a person
types (cut after each letter or space, `models.parity`); held-out top-1, top-3
and keystroke savings through the one `models.metrics.evaluate`; file sizes; and
latency on one thread (torch and onnxruntime alike): one graph step of one token,
and one `Suggester.suggest` call a key while typing held-out messages.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from benchmarks.model import suggestion_latencies
from benchmarks.reporting import load_average, report_figures
from corpora.corpus import load_corpus
from corpora.samples import heldout_sample
from corpora.tokenizer import WordTokenizer
from models.batching import encode_messages, pad_batch
from models.export import export_model
from models.metrics import evaluate
from models.onnx_engine import load_exported
from models.parity import strip_agreement, strips, typed_prefixes
from models.rundir import RunDir
from models.suggest import Suggester

# One-token steps timed per engine, after this many untimed ones.
STEP_CALLS, WARMUP_CALLS = 2000, 50


def max_logit_difference(
    a: nn.Module, b: nn.Module, tokenizer: WordTokenizer, texts: list[str]
) -> float:
    """The largest |logit| difference of two engines on a batch of `texts`."""
    rows = [[tokenizer.bos_id, *ids] for ids in encode_messages(tokenizer, texts, 32)]
    batch = pad_batch(rows, tokenizer.pad_id)  # (B, T)
    with torch.inference_mode():
        return float((a(batch)[0] - b(batch)[0]).abs().max())


def step_latencies(engine: nn.Module, hidden_dim: int, calls: int) -> list[float]:
    """Seconds of one one-token step carrying the state (what a key costs the
    model at a new word), for torch or onnxruntime."""
    token = torch.tensor([[2]])
    state = (torch.zeros(1, 1, hidden_dim), torch.zeros(1, 1, hidden_dim))
    seconds = []
    with torch.inference_mode():
        for call in range(calls + WARMUP_CALLS):
            start = time.perf_counter()
            _, state = engine(token, state)
            if call >= WARMUP_CALLS:
                seconds.append(time.perf_counter() - start)
    return seconds


def _ms(values: list[float], quantile: float) -> float:
    return float(np.quantile(np.array(values), quantile) * 1e3)


def measure(args: argparse.Namespace, scratch: Path, console: Console) -> dict:
    """Every figure of the report, keyed by engine."""
    run = RunDir(args.run)
    model, step = run.load_model(args.step)
    model.eval()
    tokenizer = run.load_tokenizer()
    with console.status("loading the corpus"):
        splits = load_corpus(run.corpus_config())
    texts = heldout_sample(splits, args.messages)
    prefixes = typed_prefixes(texts, args.prefixes)
    engines: dict[str, nn.Module] = {"torch": model}
    sizes: dict[str, int] = {}
    for precision in ("fp32", "int8"):
        with console.status(f"exporting {precision}"):
            out = scratch / precision
            manifest = export_model(
                model,
                tokenizer,
                out,
                source={"run": args.run},
                int8=precision == "int8",
            )
        engines[precision] = load_exported(out, threads=1).model
        sizes[precision] = manifest["files"][manifest["model_file"]]["bytes"]
    report: dict[str, Any] = {"run": args.run, "step": step, "engines": {}}
    with console.status("strips of the typed prefixes"):
        shown = {
            name: strips(Suggester(e, tokenizer), prefixes)
            for name, e in engines.items()
        }
    for name, engine in engines.items():
        with console.status(f"{name}: evaluating and timing"):
            metrics = evaluate(engine, tokenizer, texts, max_len=model.config.max_len)
            keys = suggestion_latencies(Suggester(engine, tokenizer), texts, args.calls)
            every = keys.in_word + keys.new_word
            steps = step_latencies(engine, model.config.hidden_dim, STEP_CALLS)
        report["engines"][name] = {
            "max_logit_diff": max_logit_difference(
                engine, model, tokenizer, texts[:64]
            ),
            "strip_agreement": strip_agreement(shown[name], shown["torch"]),
            "strip_agreement_fp32": strip_agreement(shown[name], shown["fp32"]),
            "top1": metrics.top1,
            "top3": metrics.top3,
            "keystroke_savings": metrics.keystroke_savings,
            "bytes": sizes.get(name, _state_bytes(model)),
            "step_ms": (_ms(steps, 0.5), _ms(steps, 0.99)),
            "key_ms": (_ms(every, 0.5), _ms(every, 0.99)),
        }
    report["prefixes"] = len(prefixes)
    report["messages"] = len(texts)
    report["word_targets"] = metrics.num_targets
    report["load_average"] = load_average()
    return report


def _state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def print_report(report: dict, console: Console) -> None:
    table = Table(
        title=f"{report['run']} at step {report['step']}: {report['prefixes']:,} "
        f"typed prefixes, {report['messages']:,} held-out messages, one thread"
    )
    for column in (
        "engine",
        "max |Δlogit|",
        "strip = torch",
        "strip = fp32",
        "top-1",
        "top-3",
        "keys saved",
        "MB",
        "step p50/p99 ms",
        "key p50/p99 ms",
    ):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for name, row in report["engines"].items():
        table.add_row(
            name,
            f"{row['max_logit_diff']:.2e}",
            f"{row['strip_agreement']:.2%}",
            f"{row['strip_agreement_fp32']:.2%}",
            f"{row['top1']:.2%}",
            f"{row['top3']:.2%}",
            f"{row['keystroke_savings']:.2%}",
            f"{row['bytes'] / 1e6:.2f}",
            "{:.3f} / {:.3f}".format(*row["step_ms"]),
            "{:.3f} / {:.3f}".format(*row["key_ms"]),
        )
    console.print(table)
    one, five = report["load_average"]
    console.print(
        f"load average {one:.2f} (1 min), {five:.2f} (5 min): a shared machine, "
        "the latencies are contended. torch MB: its fp32 state dict."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run directory")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step")
    parser.add_argument("--prefixes", type=int, default=1000, help="typed prefixes")
    parser.add_argument("--messages", type=int, default=2000, help="held-out sample")
    parser.add_argument("--calls", type=int, default=2000, help="keys timed")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    console = Console(width=160)
    with tempfile.TemporaryDirectory() as scratch:
        report = measure(args, Path(scratch), console)
    report_figures(report, print_report, console=console, json_path=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
