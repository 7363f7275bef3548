"""A phone's personal model: the gated fine-tune, then its own memory mixed in.

The fine-tune (`device_sim.personalize`) helps some phones and hurts others, so
the phone keeps it only where it beat the global weights on its validation slice
(its newest train messages). Mixing a per-phone memory into the model's softmax
(`device_sim.memory`, kNN-LM as kNN-Per uses it, Marfoq et al. 2022) leaves the
weights as they are and falls back to them with λ = 0; its λ, k and T are chosen
on the same slice. `fedtype personalize` measures exactly `personalize_texts`'
result, and the demo's phone suggests with it (`model_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from corpora.tokenizer import WordTokenizer
from device_sim.memory import MemoryMixture, PhoneMemory, build_memory
from device_sim.memory_config import NO_MEMORY, MemoryConfig, Mixing
from device_sim.personalize import (
    FineTune,
    PersonalizationConfig,
    beats,
    search_fine_tune,
    split_train,
)
from device_sim.personalize_config import VARIANTS as VARIANTS
from models.batching import encode_messages
from models.metrics import EvalCounts, count_metrics
from models.model import NextWordModel
from models.weights import Parameters, load_parameters


@dataclass(frozen=True, eq=False)
class Personalized:
    """A phone's personal model: the gated fine-tune, then its memory mixed in.

    `fedtype personalize` measures exactly this, and the demo's phone suggests
    with it (`model_of`).
    """

    base: Parameters  # the global weights it started from
    fine_tune: FineTune | None  # the grid's best on validation; None: no slice
    kept: bool  # the gate kept the fine-tuned weights (they beat the global ones)
    validation_global: EvalCounts | None  # None when the phone has no slice
    gated: Parameters  # the fine-tuned weights where kept, else the global ones
    memory_global: PhoneMemory  # all train text under the global weights
    memory_gated: PhoneMemory  # ... under the gated weights
    mixing_global: Mixing  # the gate's λ, k, T for the memory on the global model
    mixing_gated: Mixing  # ... on the gated model


def validation_counts(
    model: NextWordModel,
    memory: PhoneMemory,
    mixing: Mixing,
    *,
    tokenizer: WordTokenizer,
    validation: Sequence[str],
) -> EvalCounts:
    """How the model mixed with `memory` by `mixing` scores on the slice."""
    mixed = MemoryMixture(model=model, memory=memory, mixing=mixing)
    return count_metrics(
        mixed,
        tokenizer,
        list(validation),
        max_len=model.config.max_len,
        keystroke_texts=0,
    )


def choose_mixing(
    model: NextWordModel,
    split: tuple[Sequence[str], Sequence[str]],
    *,
    tokenizer: WordTokenizer,
    baseline: EvalCounts,
    config: MemoryConfig,
) -> Mixing:
    """λ, k, T and μ of the memory, chosen on the validation slice of `split`
    (fit, validation): the phrase reading's μ first, then the kNN reading's λ,
    k and T on top of it.

    The memory then holds only the older `fit` messages, so the slice measures
    what it would add to text it has not seen. λ = μ = 0 (the model alone, scored
    `baseline`) stays unless a mixing beats it strictly, so the choice is never
    worse on the slice than the model. A phone without a slice (or with nothing
    older to remember) takes the configured prior.
    """
    fit, validation = split
    memory = build_memory(model, tokenizer, fit, capacity=config.capacity)
    if not baseline.word_targets or not len(memory):
        return config.prior

    def counts_of(mixing: Mixing) -> EvalCounts:
        return validation_counts(
            model, memory, mixing, tokenizer=tokenizer, validation=validation
        )

    phrases = _best(config.phrase_grid(), (NO_MEMORY, baseline), counts_of)
    return _best(config.grid(phrases[0].phrase_weight), phrases, counts_of)[0]


def _best(
    candidates: Sequence[Mixing],
    incumbent: tuple[Mixing, EvalCounts],
    counts_of: Callable[[Mixing], EvalCounts],
) -> tuple[Mixing, EvalCounts]:
    """The best on the slice of `incumbent` and `candidates`, with its counts; a
    candidate must beat the best before it strictly to take its place."""
    for mixing in candidates:
        counts = counts_of(mixing)
        if beats(counts, incumbent[1]):
            incumbent = (mixing, counts)
    return incumbent


def _memories(
    texts: Sequence[str],
    model: NextWordModel,
    *,
    tokenizer: WordTokenizer,
    config: MemoryConfig,
    split: tuple[list[str], list[str]],
    weights: tuple[Parameters, EvalCounts],
    gated: tuple[Parameters, EvalCounts] | None,
) -> tuple[tuple[PhoneMemory, Mixing], tuple[PhoneMemory, Mixing]]:
    """(memory, mixing) under the global weights and under the gated ones (the
    same pair when the gate dropped the fine-tune); each weights' (parameters,
    validation counts) given."""
    pairs = []
    for parameters, baseline in (weights, gated) if gated else (weights,):
        load_parameters(model, parameters)
        mixing = choose_mixing(
            model, split, tokenizer=tokenizer, baseline=baseline, config=config
        )
        memory = build_memory(model, tokenizer, texts, capacity=config.capacity)
        pairs.append((memory, mixing))
    return pairs[0], pairs[-1]


def personalize_texts(
    texts: Sequence[str],
    global_parameters: Parameters,
    *,
    model: NextWordModel,
    tokenizer: WordTokenizer,
    config: PersonalizationConfig,
    seed: int,
    client_id: str,
) -> Personalized:
    """The personal model of a phone whose train text is `texts` (oldest first).

    Fine-tune on the older messages, keep the result only where it beats the
    global weights on the newest ones (the validation slice), then choose the
    memory's mixing on the same slice, for the global and for the gated weights.
    `model` is a scratch model of the global model's shape, overwritten.
    """
    max_len = model.config.max_len
    fit, validation = split_train(texts, config.validation_fraction)
    load_parameters(model, global_parameters)
    baseline = count_metrics(
        model, tokenizer, validation, max_len=max_len, keystroke_texts=0
    )
    sequences = encode_messages(tokenizer, fit, max_len)
    best = None
    if sequences and baseline.word_targets:
        best = search_fine_tune(
            model,
            global_parameters,
            sequences,
            validation,
            tokenizer=tokenizer,
            config=config,
            seed=seed,
            client_id=client_id,
        )
    kept = best is not None and beats(best.counts, baseline)
    gated = best.parameters if kept and best is not None else global_parameters
    memories = _memories(
        texts,
        model,
        tokenizer=tokenizer,
        config=config.memory,
        split=(fit, validation),
        weights=(global_parameters, baseline),
        gated=(gated, best.counts) if kept and best is not None else None,
    )
    return Personalized(
        base=global_parameters,
        fine_tune=best,
        kept=kept,
        validation_global=baseline if baseline.word_targets else None,
        gated=gated,
        memory_global=memories[0][0],
        memory_gated=memories[1][0],
        mixing_global=memories[0][1],
        mixing_gated=memories[1][1],
    )


def variant_key(personal: Personalized, variant: str) -> tuple[int, Mixing]:
    """Equal for two variants that are the same model on this phone."""
    fine = personal.fine_tune
    weights = {
        "personal": fine.parameters if fine is not None else personal.base,
        "gated": personal.gated,
        "gated+memory": personal.gated,
    }.get(variant, personal.base)
    mixing = {
        "memory": personal.mixing_global,
        "gated+memory": personal.mixing_gated,
    }.get(variant, NO_MEMORY)
    return id(weights), mixing if mixing.mixes else NO_MEMORY


def model_of(
    personal: Personalized, model: NextWordModel, variant: str = "gated+memory"
) -> torch.nn.Module:
    """The suggesting model of one `VARIANTS` entry (or "global"), on `model`.

    "personal" is the fine-tune even where the gate dropped it; "gated+memory"
    is the personal model of the demo and of `fedtype personalize`'s report.
    """
    fine = personal.fine_tune
    weights = {
        "global": personal.base,
        "personal": fine.parameters if fine is not None else personal.base,
        "gated": personal.gated,
        "memory": personal.base,
        "gated+memory": personal.gated,
    }
    if variant not in weights:
        raise ValueError(f"unknown variant {variant!r} ({', '.join(weights)})")
    load_parameters(model, weights[variant])
    if variant == "memory":
        memory, mixing = personal.memory_global, personal.mixing_global
    elif variant == "gated+memory":
        memory, mixing = personal.memory_gated, personal.mixing_gated
    else:
        return model
    return MemoryMixture(model=model, memory=memory, mixing=mixing)
