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
from models.settings import GRAD_CLIP_RENAME, check_settings, renamed, setting

# The central baseline's optimizers (`CentralConfig.optimizer`).
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")


@dataclass(frozen=True)
class CentralConfig:
    """How the central (pooled-data) baseline trains, evaluates and saves."""

    # Seeds model init, the data order and the corpus' held-out draw.
    seed: int = setting(0, help="seed of everything random")
    # Passes over the pooled training set.
    epochs: int = setting(1, at_least=1, help="passes over the pooled data")
    # Upper bound on optimizer steps in all, or None for whole epochs.
    max_steps: int | None = setting(None, at_least=1, help="stop after this many steps")
    # Sequences per optimizer step over ALL workers (each takes batch_size / W), so
    # 1 and W workers follow the same learning curve per step.
    batch_size: int = setting(32, at_least=1, help="sequences per step, all workers")
    # Adam's step size; 2e-3 with batch 32 trains the LSTM well within one epoch.
    lr: float = setting(2e-3, above=0, help="learning rate")
    # "adam" (the usual central choice) or "sgd".
    optimizer: str = setting("adam", choices=OPTIMIZERS, help="optimizer")
    # Global gradient-norm clip; LSTMs diverge without one.
    grad_clip_norm: float = setting(1.0, at_least=0)
    # Evaluate (and checkpoint) every this many steps, 0 for epoch ends only.
    eval_every: int = setting(500, at_least=0, help="evaluate every N steps, 0: epochs")
    # Held-out users' messages evaluated: the fleet's fixed, evenly spaced sample.
    heldout_messages: int = setting(HELDOUT_MESSAGES, at_least=0)
    # Training users' future messages evaluated, drawn as the fleet's cohort is.
    future_messages: int = setting(FUTURE_MESSAGES, at_least=0)
    # At most this many future messages per user, as on the fleet's phones.
    future_messages_per_user: int = setting(FUTURE_MESSAGES_PER_PHONE, at_least=1)
    # Messages on which keystroke savings are simulated, per evaluation set.
    keystroke_texts: int = setting(KEYSTROKE_TEXTS, at_least=0)
    # Messages per shard of the pooled set: one shard's token ids are in memory at
    # a time, so memory stays bounded as the corpus grows.
    shard_messages: int = setting(20_000, at_least=1, help="messages per data shard")
    # Keep every this many steps' checkpoint for good (0: only the latest two).
    checkpoint_every: int = setting(0, at_least=0)
    # Secret Sharer canaries per repeat count planted in the pooled train text
    # (models.run_canaries; 0: none), as `fedtype simulate --canaries` does.
    canaries: int = setting(
        0,
        at_least=0,
        at_most=MAX_COUNT,
        help="Secret Sharer canaries per repeat count planted in the pooled train "
        "text, new runs only (default: %(default)s)",
    )

    def __post_init__(self) -> None:
        check_settings(self, CentralConfigError)

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
        payload = renamed(payload, GRAD_CLIP_RENAME)
        return cls(**{k: v for k, v in payload.items() if k in known})


@dataclass(frozen=True)
class LocalOnlyConfig:
    """How each user trains alone and how the result is measured (`fedtype
    local-only`, central.local_only)."""

    # Seeds the shared initial model, each user's batch order and the samples.
    seed: int = setting(0, help="seed of the initial model, batch orders and samples")
    # Passes over the user's own training messages.
    local_epochs: int = setting(
        5, at_least=1, help="passes over each user's own messages"
    )
    # Sequences per batch; most users hold only a few batches.
    batch_size: int = setting(16, at_least=1, help="sequences per batch")
    # Plain SGD step size, as on the phones.
    lr: float = setting(0.5, above=0, help="SGD step size")
    # Global gradient-norm clip of each step.
    grad_clip_norm: float = 1.0
    # Train every training user (True) or only the future cohort's (False).
    all_users: bool = setting(
        False, help="train every training user, not only the future cohort's"
    )
    # Future messages in the cohort, as in the fleet's evaluation.
    future_messages: int = FUTURE_MESSAGES
    # At most this many (oldest) future messages per user.
    future_messages_per_user: int = setting(FUTURE_MESSAGES_PER_PHONE, at_least=1)
    # Messages on which keystroke savings are simulated, spread over the users.
    keystroke_texts: int = KEYSTROKE_TEXTS
    # Users whose models are also evaluated on held-out users' text.
    heldout_models: int = setting(
        20, help="users whose models are also measured on held-out text"
    )
    # Held-out messages each of those models is evaluated on (a fixed sample).
    heldout_messages_per_model: int = setting(
        300,
        help="held-out messages each of those models is measured on",
        aliases=("heldout-messages",),
    )
    # Keystroke-savings messages per held-out evaluation.
    heldout_keystroke_texts: int = 100

    def __post_init__(self) -> None:
        check_settings(self, CentralConfigError)
