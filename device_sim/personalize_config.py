"""How a phone fine-tunes the global model on its own history (`fedtype personalize`).

The settings of `device_sim.personalize`, apart from its torch code, so that the
CLI builds `fedtype personalize --help` without importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from device_sim.config import MAX_CLIENT_LR, FleetConfigError, LocalTrainingConfig
from device_sim.memory_config import MemoryConfig
from models.config import DEFAULT_PRECISION, PRECISIONS, TrainingConfig

# The weights a phone may fine-tune, by `PersonalizationConfig.trained`, as
# prefixes of `NextWordModel`'s parameter names. The output layer is tied to the
# input embedding, so freezing the embedding freezes the output matrix too: "head"
# is the last layer's own weights, the projection and the output bias.
TRAINED: dict[str, tuple[str, ...]] = {
    "all": ("",),
    "no-embedding": ("lstm.", "projection.", "output_bias"),
    "head": ("projection.", "output_bias"),
    "bias": ("output_bias",),
}


# The personal models measured against the global one: the fine-tune everywhere,
# the fine-tune where the gate kept it, the global model with the phone's memory,
# and the gated fine-tune with its memory (the phone's personal model).
VARIANTS = ("personal", "gated", "memory", "gated+memory")

# Future messages a phone must be measured on to count among the long-future
# phones, whose per-phone figures mean more (at 10 messages, about 60 word
# targets, a phone's top-1 moves by chance alone about 20 % relative).
LONG_FUTURE_MESSAGES = 30
# Most future messages a phone may be measured on (far above any user's).
MAX_FUTURE_MESSAGES = 10_000


@dataclass(frozen=True)
class PersonalizationConfig:
    """How a phone fine-tunes the global model on its own history."""

    # Step sizes of the phone's plain SGD tried; each is one trajectory from the
    # global weights. The fleet's own client_lr is 1.0; smaller steps stay nearer
    # the global model that already knows the language.
    client_lrs: tuple[float, ...] = (0.1, 0.3, 1.0)
    # Step counts at which each trajectory is scored on the validation slice.
    steps: tuple[int, ...] = (4, 8, 16, 32)
    # Newest share of the phone's train messages held back as its validation slice
    # (rounded as the corpus's future split is; a phone needs 3 to have one).
    validation_fraction: float = 0.2
    # Sequences (messages) per fine-tuning batch, as in the fleet's rounds.
    batch_size: int = 16
    # Global gradient-norm clip of each step, as in the fleet's rounds.
    grad_clip_norm: float = 1.0
    # Arithmetic of the fine-tuning steps ("bf16" or "fp32"); measuring is fp32.
    precision: str = DEFAULT_PRECISION
    # Which weights fine-tune (`TRAINED`); the others stay the global model's.
    trained: str = "all"
    # The phone's memory mixed into the (gated) model (`device_sim.memory`).
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def __post_init__(self) -> None:
        if not self.client_lrs or not all(
            0 < lr <= MAX_CLIENT_LR for lr in self.client_lrs
        ):
            raise FleetConfigError(
                f"client_lrs must be step sizes in (0, {MAX_CLIENT_LR:g}], "
                f"got {self.client_lrs}"
            )
        if not self.steps or not all(s >= 1 for s in self.steps):
            raise FleetConfigError(f"steps must be counts >= 1, got {self.steps}")
        if not 0 < self.validation_fraction < 1:
            raise FleetConfigError(
                "validation_fraction must lie in (0, 1), "
                f"got {self.validation_fraction}"
            )
        if self.batch_size < 1:
            raise FleetConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.grad_clip_norm >= 0 and math.isfinite(self.grad_clip_norm)):
            raise FleetConfigError(
                f"grad_clip_norm must be >= 0, got {self.grad_clip_norm}"
            )
        if self.precision not in PRECISIONS:
            raise FleetConfigError(f"unknown precision {self.precision!r}")
        if self.trained not in TRAINED:
            raise FleetConfigError(
                f"trained must be one of {', '.join(TRAINED)}, got {self.trained!r}"
            )

    @classmethod
    def from_local(
        cls,
        local: LocalTrainingConfig,
        *,
        client_lrs: Sequence[float] | None = None,
        steps: Sequence[int] | None = None,
        validation_fraction: float | None = None,
        trained: str | None = None,
        memory: MemoryConfig | None = None,
    ) -> PersonalizationConfig:
        """The grid (or the given settings) with the fleet's batch, clip, precision."""
        defaults = cls()
        return cls(
            client_lrs=tuple(client_lrs) if client_lrs else defaults.client_lrs,
            steps=tuple(sorted(set(steps))) if steps else defaults.steps,
            validation_fraction=validation_fraction or defaults.validation_fraction,
            batch_size=local.batch_size,
            grad_clip_norm=local.grad_clip_norm,
            precision=local.precision,
            trained=trained or defaults.trained,
            memory=memory or defaults.memory,
        )

    def training_config(self, client_lr: float, epochs: int) -> TrainingConfig:
        """The shared loop's settings of one trajectory: the grid's longest run."""
        return TrainingConfig(
            batch_size=self.batch_size,
            lr=client_lr,
            optimizer="sgd",
            epochs=epochs,
            max_steps=max(self.steps),
            grad_clip_norm=self.grad_clip_norm,
            precision=self.precision,
        )
