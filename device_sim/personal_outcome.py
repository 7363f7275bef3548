"""What a phone reports after personalising: counts on its own future text.

The phone builds its personal model (`device_sim.personalize.personalize_texts`),
measures the global model and every variant on its future text (the messages
federated evaluation uses, `Phone.future_texts`), and reports additive counts
and, per variant, the paired counts a sign test needs: future word targets the
variant's top-1 got and the global model's missed (wins), and the reverse
(losses). Never text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from corpora.tokenizer import WordTokenizer
from device_sim.memory_config import NO_MEMORY, Mixing
from device_sim.personal_model import (
    VARIANTS,
    Personalized,
    model_of,
    personalize_texts,
    variant_key,
)
from device_sim.personalize import PersonalizationConfig
from device_sim.phone import Phone
from models.metrics import EvalCounts, count_metrics, word_hits
from models.model import NextWordModel
from models.weights import Parameters


@dataclass(frozen=True)
class Paired:
    """One variant against the global model, target by target (top-1)."""

    wins: int  # future word targets the variant got and the global model missed
    losses: int  # the reverse


@dataclass(frozen=True)
class PhoneOutcome:
    """What a phone reports after personalising: counts and settings, no text."""

    client_id: str
    client_lr: float | None  # the chosen step size; None when it could not train
    steps: int  # the chosen step count; 0 when it could not train
    kept: bool  # the gate kept the personal model (it beat the global on validation)
    validation_global: EvalCounts | None  # None when the phone has no slice
    validation_personal: EvalCounts | None
    future_global: EvalCounts
    future_personal: EvalCounts
    # The memory's mixing the gate chose on the global and on the gated weights
    # (weight 0: the memory is off), and the future counts with each.
    mixing_global: Mixing = NO_MEMORY
    mixing_gated: Mixing = NO_MEMORY
    future_memory: EvalCounts | None = None  # None: as the global model's
    future_gated_memory: EvalCounts | None = None  # None: as the gated model's
    paired: tuple[tuple[str, Paired], ...] = ()  # (variant, its paired counts)

    @property
    def future_gated(self) -> EvalCounts:
        """The gated model's future counts: the personal one's where kept."""
        return self.future_personal if self.kept else self.future_global

    def future(self, variant: str) -> EvalCounts:
        """The future counts of "global" or one of `VARIANTS`."""
        futures = {
            "global": self.future_global,
            "personal": self.future_personal,
            "gated": self.future_gated,
            "memory": self.future_memory or self.future_global,
            "gated+memory": self.future_gated_memory or self.future_gated,
        }
        if variant not in futures:
            raise ValueError(f"unknown variant {variant!r} ({', '.join(futures)})")
        return futures[variant]

    def paired_of(self, variant: str) -> Paired | None:
        """The variant's wins and losses against the global model, if measured."""
        return dict(self.paired).get(variant)


def _measure(
    model: nn.Module,
    texts: list[str],
    *,
    tokenizer: WordTokenizer,
    max_len: int,
    keystroke_texts: int,
) -> tuple[EvalCounts, torch.Tensor]:
    """The counts of `model` on `texts` and its top-1 hit on each word target."""
    counts = count_metrics(
        model, tokenizer, texts, max_len=max_len, keystroke_texts=keystroke_texts
    )
    hits = word_hits(model, tokenizer, texts, max_len=max_len)[:, 0]
    return counts, hits


def _measure_variants(
    personal: Personalized,
    model: NextWordModel,
    texts: list[str],
    *,
    tokenizer: WordTokenizer,
    keystroke_texts: int,
) -> dict[str, tuple[EvalCounts, torch.Tensor]]:
    """Counts and top-1 hits of "global" and every variant on `texts`; a variant
    that is the same model as one already measured is not measured again."""
    measured: dict[str, tuple[EvalCounts, torch.Tensor]] = {}
    done: dict[tuple[int, Mixing], tuple[EvalCounts, torch.Tensor]] = {}
    for variant in ("global", *VARIANTS):
        key = variant_key(personal, variant)
        if key not in done:
            done[key] = _measure(
                model_of(personal, model, variant),
                texts,
                tokenizer=tokenizer,
                max_len=model.config.max_len,
                keystroke_texts=keystroke_texts,
            )
        measured[variant] = done[key]
    return measured


def _paired_with_global(
    measured: dict[str, tuple[EvalCounts, torch.Tensor]],
) -> tuple[tuple[str, Paired], ...]:
    """Each variant's top-1 hits paired with the global model's on the same
    targets: (variant, Paired(its wins, its losses))."""
    base = measured["global"][1]
    return tuple(
        (v, Paired(int((hits & ~base).sum()), int((~hits & base).sum())))
        for v, (_, hits) in measured.items()
        if v != "global"
    )


def personalize_phone(
    phone: Phone,
    global_parameters: Parameters,
    *,
    model: NextWordModel,
    tokenizer: WordTokenizer,
    config: PersonalizationConfig,
    seed: int,
    max_messages: int,
    keystroke_texts: int,
) -> PhoneOutcome | None:
    """Personalise on `phone`'s own history and measure every variant there.

    Args:
        phone: The phone; its text stays in this function.
        global_parameters: The global model's weights, every trajectory's start.
        model: A scratch model of the global model's shape, overwritten.
        seed: The run's seed; with the client_id it names the phone's stream.
        max_messages: Future messages measured on (the federated evaluation's).
        keystroke_texts: Of them, messages whose keystrokes are simulated.

    Returns:
        The outcome, or None when the phone has no future text to measure on.
        A phone with no validation slice or nothing left to train on keeps the
        global weights (`steps` 0, `kept` False) and the memory's prior mixing.
    """
    texts = phone.future_texts(max_messages)
    if not texts:
        return None
    personal = personalize_texts(
        phone.train_texts(),
        global_parameters,
        model=model,
        tokenizer=tokenizer,
        config=config,
        seed=seed,
        client_id=phone.client_id,
    )
    measured = _measure_variants(
        personal, model, texts, tokenizer=tokenizer, keystroke_texts=keystroke_texts
    )
    fine = personal.fine_tune
    return PhoneOutcome(
        client_id=phone.client_id,
        client_lr=fine.client_lr if fine else None,
        steps=fine.steps if fine else 0,
        kept=personal.kept,
        validation_global=personal.validation_global,
        validation_personal=fine.counts if fine else None,
        future_global=measured["global"][0],
        future_personal=measured["personal"][0],
        mixing_global=personal.mixing_global,
        mixing_gated=personal.mixing_gated,
        future_memory=measured["memory"][0],
        future_gated_memory=measured["gated+memory"][0],
        paired=_paired_with_global(measured),
    )
