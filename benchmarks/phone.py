"""What one phone pays in a default round: bytes down and up, local training
FLOPs, peak memory and time, measured with the real model on this machine.

    .venv/bin/python -m benchmarks.phone [--phones 5] [--json FILE]

The phones measured are training users of the default corpus at evenly spaced
ranks of their local step count (the smallest, the median, the cap of
`LocalTrainingConfig.max_local_steps`), each running `Phone.train` from the
default round-0 model with the default local settings on one thread. FLOPs are
counted by `torch.utils.flop_counter.FlopCounterMode` (the matmuls of forward
and backward; the fused oneDNN LSTM through a formula given here), set beside
the analytic 3 x forward FLOPs per token over every position trained (padding
included). Peak memory is the rise
of the process's resident set (VmHWM after resetting it through
/proc/self/clear_refs) over its size before training, so the Python and torch
baseline every app would carry is left out. The exported model's size and
per-key latency come from `benchmarks/export.py`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.reporting import load_average, report_figures
from coordinator.config import FederationConfig
from coordinator.round.rounds import model_bytes
from corpora.corpus import CorpusConfig, load_corpus
from corpora.tokenizer import WordTokenizer
from device_sim.config import FleetConfig
from device_sim.phone import ClientReport, Phone
from device_sim.profile import draw_profile
from models.config import ModelConfig
from models.model import flops_per_token
from models.weights import initial_model, parameters_of


def _lstm_flops(input_shape: Any, w_ih: Any, w_hh: Any, *_: Any, **__: Any) -> int:
    """One LSTM layer's matmuls: (B x T) positions x 4H x (E + H), x2."""
    positions = input_shape[0] * input_shape[1]
    return 2 * positions * w_ih[0] * (w_ih[1] + w_hh[1])


def _lstm_backward_flops(*args: Any, **kwargs: Any) -> int:
    """The gradients of the input and of the weights: twice the forward."""
    return 2 * _lstm_flops(*args, **kwargs)


# oneDNN's fused LSTM, which FlopCounterMode has no formula for.
LSTM_FLOPS = {
    torch.ops.aten.mkldnn_rnn_layer: _lstm_flops,
    torch.ops.aten.mkldnn_rnn_layer_backward: _lstm_backward_flops,
}


def _status_kib(field: str) -> int:
    """A /proc/self/status memory field (VmRSS, VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    """Reset VmHWM to the current resident set (Linux 4.0+)."""
    Path("/proc/self/clear_refs").write_text("5")


def measure_phone(
    phone: Phone,
    tokenizer: WordTokenizer,
    model_config: ModelConfig,
    federation: FederationConfig,
) -> dict[str, Any]:
    """One phone's local training of round 1: FLOPs, peak memory, seconds."""
    model = initial_model(model_config, federation.seed, tokenizer)
    global_parameters = [p.clone() for p in parameters_of(model)]

    def train() -> ClientReport:
        return phone.train(
            model,
            global_parameters,
            tokenizer=tokenizer,
            config=federation.local,
            server_round=1,
        )

    train()  # warm-up: allocations, caches
    counter = FlopCounterMode(display=False, custom_mapping=LSTM_FLOPS)
    with counter:
        report = train()
    before = _status_kib("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    train()
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    steps = report.metrics.steps
    positions = steps * federation.local.batch_size * model_config.max_len
    return {
        "client_id": phone.client_id,
        "steps": steps,
        "tokens": report.metrics.num_tokens,
        "flops": counter.get_total_flops(),
        "flops_bound": 3 * flops_per_token(model_config) * positions,
        "peak_mib": (peak - before) / 1024,
        "seconds": seconds,
    }


def measure(phones: int, console: Console) -> dict[str, Any]:
    """The default round's bytes and `phones` phones' training costs."""
    federation = FederationConfig()
    with console.status("loading the corpus"):
        splits = load_corpus(CorpusConfig())
        tokenizer = WordTokenizer.public(10_000)
    model_config = ModelConfig(vocab_size=tokenizer.vocab_size)
    fleet = [
        Phone(
            client_id,
            train=user.train,
            future=(),
            profile=draw_profile(federation.seed, client_id, FleetConfig()),
            seed=federation.seed,
        )
        for client_id, user in splits.training_users.items()
    ]
    steps = [
        p.local_steps(tokenizer, federation.local, model_config.max_len) for p in fleet
    ]
    order = np.argsort(steps, kind="stable")
    picks = [int(order[int(i)]) for i in np.linspace(0, len(order) - 1, phones)]
    size = model_bytes(parameters_of(initial_model(model_config, 0, tokenizer)))
    measured = []
    for index in picks:
        with console.status(f"training {fleet[index].client_id}"):
            measured.append(
                measure_phone(fleet[index], tokenizer, model_config, federation)
            )
    return {
        "model_bytes": size,
        "selected": federation.selection_size,
        "clients_per_round": federation.clients_per_round,
        "median_steps": float(np.median(steps)),
        "phones": measured,
        "load_average": load_average(),
    }


def print_report(report: dict[str, Any], console: Console) -> None:
    mb = report["model_bytes"] / 1e6
    console.print(
        f"a phone downloads {mb:.2f} MB (the fp32 weights) and uploads {mb:.2f} MB "
        f"(its fp32 update); a default round selects {report['selected']} phones "
        f"for {report['clients_per_round']} reports. Median local steps over the "
        f"fleet: {report['median_steps']:.0f}."
    )
    table = Table(title="local training of round 1, one thread, default settings")
    for column in (
        "phone", "steps", "tokens", "GFLOPs counted", "GFLOPs 3x fwd bound",
        "peak MiB", "seconds",
    ):  # fmt: skip
        table.add_column(column, justify="left" if column == "phone" else "right")
    for row in report["phones"]:
        table.add_row(
            row["client_id"][:8],
            str(row["steps"]),
            f"{row['tokens']:,}",
            f"{row['flops'] / 1e9:.2f}",
            f"{row['flops_bound'] / 1e9:.2f}",
            f"{row['peak_mib']:.0f}",
            f"{row['seconds']:.2f}",
        )
    console.print(table)
    one, five = report["load_average"]
    console.print(f"load average {one:.2f} / {five:.2f}: the seconds are contended.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phones", type=int, default=5, help="phones measured")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    console = Console()
    report = measure(max(1, args.phones), console)
    report_figures(report, print_report, console=console, json_path=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
