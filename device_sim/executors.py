"""The client executors by name, for configurations and command lines.

All three give the same reports within float rounding (the parallel one the same
whichever worker trains a phone); they differ in speed and in where the work runs.
`benchmarks/fleet.py` measures them against a plain training loop.
"""

from __future__ import annotations

from corpora.tokenizer import WordTokenizer
from device_sim.batched import BatchedExecutor
from device_sim.config import LocalTrainingConfig
from device_sim.executor import ClientExecutor, SerialExecutor
from device_sim.parallel import ParallelExecutor
from models.config import ModelConfig

# serial: `Phone.train` one phone after another in this process.
# batched: the hand-written stacked model (`device_sim.batched`) in this process.
# parallel: worker processes, one a core, each with the batched engine.
EXECUTOR_NAMES: tuple[str, ...] = ("serial", "batched", "parallel")


def make_executor(
    name: str,
    *,
    model_config: ModelConfig,
    tokenizer: WordTokenizer,
    local: LocalTrainingConfig,
    fault_kind: str = "nan",
    workers: int | None = None,
) -> ClientExecutor:
    """The executor called `name`; `workers` applies to "parallel" (None: a core)."""
    if name == "serial":
        return SerialExecutor(
            model_config=model_config,
            tokenizer=tokenizer,
            local=local,
            fault_kind=fault_kind,
        )
    if name == "batched":
        return BatchedExecutor(
            model_config=model_config,
            tokenizer=tokenizer,
            local=local,
            fault_kind=fault_kind,
        )
    if name == "parallel":
        return ParallelExecutor(
            model_config=model_config,
            tokenizer=tokenizer,
            local=local,
            fault_kind=fault_kind,
            workers=workers,
        )
    raise ValueError(f"unknown executor {name!r} (one of {', '.join(EXECUTOR_NAMES)})")
