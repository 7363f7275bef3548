"""Personalisation on the phone: the global model fine-tuned on the phone's own text.

After Wang et al. 2019 ("Federated Evaluation of On-device Personalization", arXiv
1910.10252): each phone fine-tunes the global model on its own train text, which
helps most users and hurts some, so a phone keeps the personal model only where it
beat the global one on data it held back. Here:

- the phone's train messages are cut chronologically: the newest
  `validation_fraction` are its validation slice, the older ones are trained on;
- the fine-tuning settings (client_lr, steps) are chosen on that slice from a small
  grid, each step size one trajectory from the global weights scored at each step
  count of the grid, through the one training loop (`models.training.train_local`),
  all weights trained or only some layers (`TRAINED`);
- the gate keeps the personal model only where it beat the global one on the slice;
- the global and personal models are then measured on the phone's future text,
  the same messages federated evaluation uses (`Phone.evaluate_counts`).

What the phone reports is an `PhoneOutcome`: additive counts and the chosen
settings, never text. Future text takes no part in any choice.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from corpora.corpus import chronological_split
from corpora.tokenizer import WordTokenizer
from device_sim.config import MAX_CLIENT_LR, FleetConfigError, LocalTrainingConfig
from device_sim.memory_config import MemoryConfig
from models.config import DEFAULT_PRECISION, PRECISIONS, TrainingConfig
from models.metrics import EvalCounts, count_metrics
from models.model import NextWordModel
from models.seeding import numpy_rng
from models.training import train_local
from models.weights import Parameters, load_parameters, parameters_of

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
    clip_norm: float = 1.0
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
        if not (self.clip_norm >= 0 and math.isfinite(self.clip_norm)):
            raise FleetConfigError(f"clip_norm must be >= 0, got {self.clip_norm}")
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
            clip_norm=local.clip_norm,
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
            clip_norm=self.clip_norm,
            precision=self.precision,
        )


def validation_score(counts: EvalCounts) -> tuple[int, float]:
    """How good a model is on a validation slice: top-1 hits, then lower loss.

    A non-finite loss (a trajectory that diverged) ranks below every finite one.
    """
    loss = counts.loss_sum
    return counts.top1_hits, -loss if math.isfinite(loss) else -math.inf


def beats(candidate: EvalCounts, incumbent: EvalCounts) -> bool:
    """Whether `candidate` scores strictly higher than `incumbent` on one slice."""
    return validation_score(candidate) > validation_score(incumbent)


def split_train(
    texts: Sequence[str], validation_fraction: float
) -> tuple[list[str], list[str]]:
    """(older messages to train on, newest messages to validate on)."""
    fit, validation = chronological_split(list(texts), validation_fraction)
    return list(fit), list(validation)


@contextlib.contextmanager
def trainable_only(model: NextWordModel, trained: str) -> Iterator[None]:
    """Within the block, only the weights `TRAINED[trained]` names take gradients.

    The others get no gradient, so the shared loop's SGD leaves them as they are,
    and autograd does not go back through the layers below the trained ones.
    """
    prefixes = TRAINED[trained]
    before = [p.requires_grad for p in model.parameters()]
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(prefixes))
    try:
        yield
    finally:
        for parameter, flag in zip(model.parameters(), before, strict=True):
            parameter.requires_grad_(flag)


@dataclass(frozen=True, eq=False)
class FineTune:
    """The grid's best fine-tune of a phone: its settings, weights and score."""

    client_lr: float
    steps: int
    counts: EvalCounts  # on the validation slice
    parameters: Parameters


def search_fine_tune(
    model: NextWordModel,
    global_parameters: Parameters,
    sequences: list[list[int]],
    validation: list[str],
    *,
    tokenizer: WordTokenizer,
    config: PersonalizationConfig,
    seed: int,
    client_id: str,
) -> FineTune:
    """The grid's best (client_lr, steps) on the validation slice, and its weights.

    Every trajectory draws its batches from the stream `(seed, "personalize",
    client_id)`, so the weights at step s of a trajectory are exactly those of a
    fresh `train_local` with `max_steps=s`; ties go to the smaller step size and
    the fewer steps.
    """
    batches = -(-len(sequences) // config.batch_size)
    epochs = -(-max(config.steps) // batches)
    scored = set(config.steps)
    best: list[FineTune] = []

    def score(client_lr: float, step: int, _loss: float) -> None:
        if step not in scored:
            return
        counts = count_metrics(
            model,
            tokenizer,
            validation,
            max_len=model.config.max_len,
            keystroke_texts=0,
        )
        model.train()
        if not best or beats(counts, best[0].counts):
            best[:] = [FineTune(client_lr, step, counts, parameters_of(model))]

    with trainable_only(model, config.trained):
        for client_lr in config.client_lrs:
            load_parameters(model, global_parameters)
            train_local(
                model,
                sequences,
                config.training_config(client_lr, epochs),
                pad_id=tokenizer.pad_id,
                rng=numpy_rng(seed, "personalize", client_id),
                on_step=functools.partial(score, client_lr),
            )
    return best[0]
