"""What the central trainer reports while it runs (rank 0 alone reports).

The CLI turns these into a progress bar, tests into lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainingStarted:
    """Training begins or resumes at `step` of `total_steps`."""

    step: int
    total_steps: int
    world_size: int
    shards: int  # shards of the pooled set
    train_sequences: int  # sequences in one epoch of the pooled set


@dataclass(frozen=True)
class StepDone:
    """An optimizer step finished."""

    step: int
    epoch: int
    loss: float  # this worker's mean loss over its batch (rank 0's view)


@dataclass(frozen=True)
class EvaluationStarted:
    """Rank 0 evaluates the model after `step` (the others wait)."""

    step: int


@dataclass(frozen=True)
class Evaluated:
    """An evaluation was saved: `record` is the metrics.jsonl line."""

    record: dict[str, Any]


Event = TrainingStarted | StepDone | EvaluationStarted | Evaluated
EventCallback = Callable[[Event], None]
