"""What a central run saves to resume: counters, the optimizer's state, the run spec.

    RUN_DIR/optimizer/step_000042.safetensors   Adam's moments after step 42

is written beside the model checkpoint, before `state.json`; state.json is written
last, so a run killed at any point resumes from the last complete save. Only the
latest optimizer file is kept: the model checkpoints are what later commands read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.files import atomic_write
from models.rundir import RunDir, RunDirError


@dataclass
class Progress:
    """Counters of a run, saved in state.json at every evaluation."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # the epoch in progress (== epochs when done)
    batch_in_epoch: int = 0  # steps taken in that epoch
    tokens_total: int = 0  # targets trained on, all workers
    wall_seconds_total: float = 0.0  # training time, evaluation excluded
    bytes_total: int = 0  # bytes the workers sent (models/distributed.py)

    @classmethod
    def from_state(cls, state: dict[str, Any], source: Path) -> Progress:
        try:
            return cls(
                step=int(state["step"]),
                epoch=int(state["epoch"]),
                batch_in_epoch=int(state["batch_in_epoch"]),
                tokens_total=int(state["tokens_total"]),
                wall_seconds_total=float(state["wall_seconds_total"]),
                bytes_total=int(state["bytes_total"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise RunDirError(
                f"{source}: not a central run's state ({error})"
            ) from None

    def as_state(self) -> dict[str, Any]:
        return asdict(self)


def optimizer_path(run: RunDir, step: int) -> Path:
    """Where the optimizer state after `step` lives."""
    return run.path / "optimizer" / f"step_{step:06d}.safetensors"


def save_optimizer(run: RunDir, step: int, optimizer: torch.optim.Optimizer) -> None:
    """Write the optimizer's per-parameter tensors atomically; drop older files."""
    tensors = {
        f"{index}.{key}": value.detach().contiguous().cpu()
        for index, state in optimizer.state_dict()["state"].items()
        for key, value in state.items()
        if isinstance(value, torch.Tensor)
    }
    path = optimizer_path(run, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda temporary: save_file(tensors, str(temporary)))
    for old in path.parent.glob("step_*.safetensors"):
        if old != path:
            old.unlink(missing_ok=True)


def load_optimizer_tensors(run: RunDir, step: int) -> dict[str, torch.Tensor]:
    """The tensors `save_optimizer` wrote after `step`."""
    path = optimizer_path(run, step)
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing, cannot resume the optimizer") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise RunDirError(f"{path}: unreadable ({error})") from None


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]
) -> None:
    """Load `save_optimizer`'s tensors into a fresh optimizer of the same model."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    template = optimizer.state_dict()
    optimizer.load_state_dict(
        {"state": state, "param_groups": template["param_groups"]}
    )
