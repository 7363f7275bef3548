"""The phone's memory: the kNN distribution, the mixture, the gate, the sign test."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from helpers import make_phone, seeded_parameters

from coordinator.run.personal_gains import gain_summary, sign_test
from corpora.tokenizer import WordTokenizer
from device_sim.memory import (
    MemoryMixture,
    PhoneMemory,
    build_memory,
    knn_probabilities,
    mix_log_probabilities,
    phrase_probabilities,
)
from device_sim.memory_config import NO_MEMORY, MemoryConfig, Mixing
from device_sim.personal_model import (
    Personalized,
    choose_mixing,
    model_of,
    personalize_texts,
    validation_counts,
)
from device_sim.personal_outcome import Paired, personalize_phone
from device_sim.personalize import PersonalizationConfig, beats, split_train
from models.config import ModelConfig
from models.metrics import EvalCounts, count_metrics, evaluate
from models.model import NextWordModel
from models.weights import Parameters, load_parameters

# A name the tokenizer knows, typed again and again in one context.
TRAIN = tuple(f"say hi to anna and bob number {i}" for i in range(12))
FUTURE = ("say hi to anna", "hi to anna and bob")
GRID = PersonalizationConfig(
    client_lrs=(0.1,), steps=(1,), batch_size=4, precision="fp32"
)


def train_memory_mixture(
    tokenizer: WordTokenizer, model_config: ModelConfig, *, mixing: Mixing
) -> MemoryMixture:
    """The untrained model of torch seed 0 mixed, by `mixing`, with a memory of
    TRAIN (every entry kept)."""
    torch.manual_seed(0)
    model = NextWordModel(model_config).eval()
    memory = build_memory(model, tokenizer, TRAIN, capacity=4096)
    return MemoryMixture(model=model, memory=memory, mixing=mixing)


def personalised(
    texts: Sequence[str],
    tokenizer: WordTokenizer,
    model_config: ModelConfig,
    *,
    client_id: str = "p",
) -> tuple[Personalized, NextWordModel, Parameters]:
    """`personalize_texts` of `texts` under GRID from the seeded start, on a fresh
    scratch model: (its result, the scratch model, the start)."""
    start = seeded_parameters(model_config)
    model = NextWordModel(model_config)
    personal = personalize_texts(
        texts, start, model=model, tokenizer=tokenizer, config=GRID, seed=0,
        client_id=client_id,
    )  # fmt: skip
    return personal, model, start


def test_knn_probabilities_hand_computed() -> None:
    # Prepare: keys at 0, 1 and 3 on a line; values words 2, 5, 2; query at 0.
    memory = PhoneMemory(
        keys=torch.tensor([[0.0], [1.0], [3.0]]),
        values=torch.tensor([2, 5, 2]),
        previous=torch.tensor([0, 0, 0]),
    )
    mixing = Mixing(weight=0.5, neighbours=2, temperature=1.0)

    # Execute: the two nearest are at squared distances 0 and 1.
    p = knn_probabilities(torch.tensor([[0.0]]), memory, mixing, vocab_size=6)

    # Assert: votes softmax(-0, -1) = (e / (e + 1), 1 / (e + 1)).
    e = math.e
    assert p[0, 2].item() == pytest.approx(e / (e + 1))
    assert p[0, 5].item() == pytest.approx(1 / (e + 1))
    assert p.sum().item() == pytest.approx(1.0)


def test_mixture_hand_computed() -> None:
    # Prepare: the model says (1/2, 1/2), the memory (1, 0), λ = 1/4.
    logits = torch.tensor([[0.0, 0.0]])
    knn = torch.tensor([[1.0, 0.0]])

    # Execute
    mixed = mix_log_probabilities(logits, [(knn, 0.25)]).exp()

    # Assert: 1/4 · 1 + 3/4 · 1/2 = 5/8, and 3/4 · 1/2 = 3/8.
    assert mixed[0].tolist() == pytest.approx([5 / 8, 3 / 8])


def test_phrase_probabilities_hand_computed() -> None:
    # Prepare: entries (previous -> value) 1->2, 1->3, 1->2, 4->5 over V = 6.
    memory = PhoneMemory(
        keys=torch.zeros(4, 1),
        values=torch.tensor([2, 3, 2, 5]),
        previous=torch.tensor([1, 1, 1, 4]),
    )

    # Execute: after 1, after 4, after 0 (never before a value), after 1 again.
    p = phrase_probabilities(torch.tensor([1, 4, 0, 1]), memory, vocab_size=6)

    # Assert: after 1 the three entries split 2/3 to word 2 and 1/3 to word 3.
    assert p[0].tolist() == pytest.approx([0, 0, 2 / 3, 1 / 3, 0, 0])
    assert p[1].tolist() == [0, 0, 0, 0, 0, 1]
    assert p[2].tolist() == [0] * 6
    assert torch.equal(p[3], p[0])


def test_mixture_of_both_readings_hand_computed() -> None:
    # Prepare: model (1/2, 1/2), kNN (1, 0) at λ = 1/4, phrases (0, 1) at
    # μ = 1/8, so the model keeps 5/8.
    logits = torch.tensor([[0.0, 0.0]])
    knn, after = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])

    # Execute
    mixed = mix_log_probabilities(logits, [(knn, 0.25), (after, 0.125)]).exp()

    # Assert: 1/4 + 5/8 · 1/2 = 9/16, and 1/8 + 5/8 · 1/2 = 7/16.
    assert mixed[0].tolist() == pytest.approx([9 / 16, 7 / 16])


def test_memory_keeps_the_word_before_each_entry(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare
    model = NextWordModel(tiny_model_config)

    # Execute
    memory = build_memory(model, tokenizer, ["good night"], capacity=100)

    # Assert: <bos> good night <eos>: good after <bos>, night after good, ...
    good, night = tokenizer.encode("good night")
    assert memory.previous.tolist() == [tokenizer.bos_id, good, night]
    assert memory.values.tolist() == [good, night, tokenizer.eos_id]


def test_mixture_with_weight_zero_is_the_model_exactly(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare
    mixed = train_memory_mixture(tokenizer, tiny_model_config, mixing=NO_MEMORY)
    tokens = torch.tensor([tokenizer.encode("say hi to")])

    # Execute
    with torch.no_grad():
        expected, _ = mixed.model(tokens)
        got, _ = mixed(tokens)

    # Assert
    assert torch.equal(got, expected)


def test_memory_keeps_the_newest_entries(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare: "a b" gives 3 entries (a, b, <eos>) a message.
    model = NextWordModel(tiny_model_config)
    texts = ["hello there", "good night"]

    # Execute
    full = build_memory(model, tokenizer, texts, capacity=100)
    newest = build_memory(model, tokenizer, texts, capacity=2)

    # Assert
    ids = tokenizer.encode("good night")
    assert len(full) == 6
    assert newest.values.tolist() == [ids[1], tokenizer.eos_id]
    assert torch.equal(newest.keys, full.keys[-2:])


@pytest.mark.parametrize(
    "mixing",
    [Mixing(0.5, 8, temperature=1.0), Mixing(0.0, 1, 1.0, phrase_weight=0.5)],
    ids=["knn", "phrases"],
)
def test_memory_puts_a_repeated_name_in_the_strip(
    mixing: Mixing, tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare: an untrained model, and a memory of "... to anna ..." repeated.
    mixed = train_memory_mixture(tokenizer, tiny_model_config, mixing=mixing)
    tokens = torch.tensor([[tokenizer.bos_id, *tokenizer.encode("say hi to")]])

    # Execute
    with torch.no_grad():
        scores, _ = mixed(tokens)

    # Assert
    strip = scores[0, -1].topk(3).indices.tolist()
    assert tokenizer.encode("anna")[0] in strip


def test_gate_never_picks_worse_than_the_model_on_validation(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare
    torch.manual_seed(0)
    model = NextWordModel(tiny_model_config).eval()
    fit, validation = split_train(TRAIN, 0.2)
    baseline = count_metrics(
        model, tokenizer, validation, max_len=16, keystroke_texts=0
    )
    config = MemoryConfig(weights=(0.1, 0.5), neighbours=(1, 4))

    # Execute
    chosen = choose_mixing(
        model, (fit, validation), tokenizer=tokenizer, baseline=baseline, config=config
    )

    # Assert: the choice scores at least as well as λ = 0 with the memory of the
    # older messages, and λ = 0 is kept unless something beat it strictly.
    memory = build_memory(model, tokenizer, fit, capacity=config.capacity)
    counts = validation_counts(
        model, memory, chosen, tokenizer=tokenizer, validation=validation
    )
    assert chosen == NO_MEMORY or beats(counts, baseline)


def test_phone_without_validation_slice_takes_the_prior(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare: two messages are too few for a validation slice.
    texts = TRAIN[:2]

    # Execute
    personal, _, _ = personalised(texts, tokenizer, tiny_model_config)

    # Assert
    assert personal.fine_tune is None and not personal.kept
    assert personal.mixing_gated == GRID.memory.prior
    assert len(personal.memory_gated) == 2 * len(tokenizer.encode(TRAIN[0])) + 2


def test_personalize_phone_pairs_every_variant(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare
    start = seeded_parameters(tiny_model_config)
    model = NextWordModel(tiny_model_config)

    # Execute
    outcome = personalize_phone(
        make_phone(TRAIN, FUTURE),
        start,
        model=model,
        tokenizer=tokenizer,
        config=GRID,
        seed=0,
        max_messages=2,
        keystroke_texts=0,
    )

    # Assert: wins - losses is the change in top-1 hits, for every variant.
    assert outcome is not None
    for variant, paired in outcome.paired:
        gained = outcome.future(variant).top1_hits - outcome.future_global.top1_hits
        assert paired.wins - paired.losses == gained


def test_model_of_global_is_the_global_weights(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare
    personal, model, start = personalised(TRAIN, tokenizer, tiny_model_config)
    reference = NextWordModel(tiny_model_config)
    load_parameters(reference, start)

    # Execute
    chosen = model_of(personal, model, "global")

    # Assert
    assert all(
        torch.equal(a, b)
        for a, b in zip(chosen.parameters(), reference.parameters(), strict=True)
    )


@pytest.mark.parametrize(
    ("wins", "losses", "expected"),
    [
        (0, 0, 1.0),
        (6, 0, 2 / 64),  # 2 · (1/2)^6
        (5, 0, 2 / 32),  # 0.0625: not significant at 5 %
        (1, 9, 2 * 11 / 1024),  # 2 · (C(10,0) + C(10,1)) / 2^10
        (3, 3, 1.0),
    ],
)
def test_sign_test_hand_computed(wins: int, losses: int, expected: float) -> None:
    # Execute / Assert
    assert sign_test(wins, losses) == pytest.approx(expected)


def test_gain_summary_counts_significance_by_sign_test() -> None:
    # Prepare: one phone 6-0 (helped, p = 0.031), one 0-6 (hurt), one 5-0
    # (p = 0.0625: no detectable change though its top-1 rose).
    base = EvalCounts(10, 12, 40, 1.0, 40, 0, 0, 1)
    pairs = [
        (EvalCounts(16, 12, 40, 1.0, 40, 0, 0, 1), base),
        (EvalCounts(4, 12, 40, 1.0, 40, 0, 0, 1), base),
        (EvalCounts(15, 12, 40, 1.0, 40, 0, 0, 1), base),
    ]
    paired = [Paired(6, 0), Paired(0, 6), Paired(5, 0)]

    # Execute
    summary = gain_summary(pairs, paired)

    # Assert
    assert summary.significantly_helped == pytest.approx(1 / 3)
    assert summary.significantly_hurt == pytest.approx(1 / 3)
    assert summary.no_detectable_change == pytest.approx(1 / 3)
    assert summary.helped_share == pytest.approx(2 / 3)
    assert summary.hurt_share == pytest.approx(1 / 3)


def test_personal_model_fits_the_phones_texts_and_leaves_global(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare: the demo's phone, repeating itself; the start's values, as the
    # seeded start will hold them.
    texts = ["the blue train leaves at noon", "the blue train is late"] * 8
    before = seeded_parameters(tiny_model_config)

    # Execute
    personal, model, start = personalised(
        texts, tokenizer, tiny_model_config, client_id="this-phone"
    )
    mine = evaluate(
        model_of(personal, model), tokenizer, texts, max_len=16, keystroke_texts=0
    )
    fleet = evaluate(
        model_of(personal, model, "global"),
        tokenizer,
        texts,
        max_len=16,
        keystroke_texts=0,
    )

    # Assert
    assert personal.mixing_gated.weight > 0
    assert mine.perplexity < fleet.perplexity
    assert all(torch.equal(a, b) for a, b in zip(before, start, strict=True))


def test_knn_grid_leaves_the_model_a_share() -> None:
    # Prepare
    config = MemoryConfig(weights=(0.1, 0.25, 0.5), phrase_weights=(0.1, 0.6))

    # Execute: on top of μ = 0.6, λ = 0.5 would leave the model nothing.
    grid = config.grid(0.6)

    # Assert
    assert sorted({m.weight for m in grid}) == [0.1, 0.25]
    assert {m.phrase_weight for m in grid} == {0.6}
    assert [m.phrase_weight for m in config.phrase_grid()] == [0.1, 0.6]
    assert {m.weight for m in config.phrase_grid()} == {0.0}
    with pytest.raises(ValueError, match="phrase_weight"):
        Mixing(0.5, 8, 0.1, phrase_weight=0.5)
