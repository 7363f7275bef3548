"""The central baseline's configuration: one frozen dataclass, saved in config.json."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from central.errors import CentralConfigError
from corpora.canaries import MAX_COUNT
from models.evaluation_sets import (
    FUTURE_MESSAGES,
    FUTURE_MESSAGES_PER_PHONE,
    HELDOUT_MESSAGES,
    KEYSTROKE_TEXTS,
)

# The central baseline's optimizers (`CentralConfig.optimizer`).
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")


@dataclass(frozen=True)
class CentralConfig:
    """How the central (pooled-data) baseline trains, evaluates and saves."""

    # Seeds model init, the data order and the corpus' held-out draw.
    seed: int = 0
    # Passes over the pooled training set.
    epochs: int = 1
    # Upper bound on optimizer steps in all, or None for whole epochs.
    max_steps: int | None = None
    # Sequences per optimizer step over ALL workers (each takes batch_size / W), so
    # 1 and W workers follow the same learning curve per step.
    batch_size: int = 32
    # Adam's step size; 2e-3 with batch 32 trains the LSTM well within one epoch.
    lr: float = 2e-3
    # "adam" (the usual central choice) or "sgd".
    optimizer: str = "adam"
    # Global gradient-norm clip; LSTMs diverge without one.
    clip_norm: float = 1.0
    # Evaluate (and checkpoint) every this many steps, 0 for epoch ends only.
    eval_every: int = 500
    # Held-out users' messages evaluated: the fleet's fixed, evenly spaced sample.
    heldout_messages: int = HELDOUT_MESSAGES
    # Training users' future messages evaluated, drawn as the fleet's cohort is.
    future_messages: int = FUTURE_MESSAGES
    # At most this many future messages per user, as on the fleet's phones.
    future_messages_per_user: int = FUTURE_MESSAGES_PER_PHONE
    # Messages on which keystroke savings are simulated, per evaluation set.
    keystroke_texts: int = KEYSTROKE_TEXTS
    # Messages per shard of the pooled set: one shard's token ids are in memory at
    # a time, so memory stays bounded as the corpus grows.
    shard_messages: int = 20_000
    # Keep every this many steps' checkpoint for good (0: only the latest two).
    checkpoint_every: int = 0
    # Secret Sharer canaries per repeat count planted in the pooled train text
    # (models.run_canaries; 0: none), as `fedtype simulate --canaries` does.
    canaries: int = 0

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "shard_messages")
        for name in (*positive, "future_messages_per_user"):
            if getattr(self, name) < 1:
                raise CentralConfigError(
                    f"{name} must be >= 1, not {getattr(self, name)}"
                )
        non_negative = (
            "eval_every",
            "heldout_messages",
            "future_messages",
            "keystroke_texts",
            "checkpoint_every",
            "canaries",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise CentralConfigError(
                    f"{name} must be >= 0, not {getattr(self, name)}"
                )
        if self.canaries > MAX_COUNT:
            raise CentralConfigError(
                f"canaries must be <= {MAX_COUNT}, not {self.canaries}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise CentralConfigError(f"max_steps must be >= 1, not {self.max_steps}")
        if not self.lr > 0:
            raise CentralConfigError(f"lr must be > 0, not {self.lr}")
        if self.clip_norm < 0:
            raise CentralConfigError(f"clip_norm must be >= 0, not {self.clip_norm}")
        if self.optimizer not in OPTIMIZERS:
            raise CentralConfigError(
                f"optimizer must be adam or sgd, not {self.optimizer!r}"
            )

    def check_workers(self, world_size: int) -> None:
        """Raise unless `batch_size` splits evenly over `world_size` workers."""
        if world_size < 1:
            raise CentralConfigError(f"workers must be >= 1, not {world_size}")
        if self.batch_size % world_size:
            raise CentralConfigError(
                f"batch_size {self.batch_size} does not split over {world_size} "
                f"workers; pick a multiple of {world_size}"
            )

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> CentralConfig:
        """The config a run saved, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known})


@dataclass(frozen=True)
class LocalOnlyConfig:
    """How each user trains alone and how the result is measured (`fedtype
    local-only`, central.local_only)."""

    # Seeds the shared initial model, each user's batch order and the samples.
    seed: int = 0
    # Passes over the user's own training messages.
    local_epochs: int = 5
    # Sequences per batch; most users hold only a few batches.
    batch_size: int = 16
    # Plain SGD step size, as on the phones.
    lr: float = 0.5
    # Global gradient-norm clip of each step.
    clip_norm: float = 1.0
    # Train every training user (True) or only the future cohort's (False).
    all_users: bool = False
    # Future messages in the cohort, as in the fleet's evaluation.
    future_messages: int = FUTURE_MESSAGES
    # At most this many (oldest) future messages per user.
    future_messages_per_user: int = FUTURE_MESSAGES_PER_PHONE
    # Messages on which keystroke savings are simulated, spread over the users.
    keystroke_texts: int = KEYSTROKE_TEXTS
    # Users whose models are also evaluated on held-out users' text.
    heldout_models: int = 20
    # Held-out messages each of those models is evaluated on (a fixed sample).
    heldout_messages: int = 300
    # Keystroke-savings messages per held-out evaluation.
    heldout_keystroke_texts: int = 100

    def __post_init__(self) -> None:
        positive = ("local_epochs", "batch_size", "future_messages_per_user")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, not {self.lr}")
