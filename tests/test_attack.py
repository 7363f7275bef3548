"""The curious server's bag-of-words attack, on hand-made and on real updates."""

from __future__ import annotations

import math
from statistics import mean

import numpy as np
import pytest
import torch

from coordinator.measure.attack import (
    AttackScore,
    bias_tokens,
    moved_rows,
    recover_tokens,
    score,
    update_parts,
)
from coordinator.measure.attack_probe import top_words
from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer
from models.batching import encode_messages
from models.config import ModelConfig, TrainingConfig
from models.model import NextWordModel
from models.training import train_local

# Messages of each attacked phone: all trained on in one epoch, so the truth is
# exactly the words of its sequences.
PHONE_MESSAGES = 60


def test_update_parts_finds_bias_and_embedding_by_shape() -> None:
    # Prepare: V = 5, E = 2, among other tensors in some order.
    bias, table = torch.zeros(5), torch.ones(5, 2)
    update = [torch.zeros(8, 2), bias, torch.zeros(2), table]

    # Execute
    found_bias, found_table = update_parts(update, vocab_size=5)
    named = update_parts({"output_bias": bias, "embedding.weight": table}, vocab_size=5)

    # Assert
    assert found_bias is bias and found_table is table
    assert named[0] is bias and named[1] is table


def test_update_parts_rejects_an_ambiguous_update() -> None:
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match="expected one"):
        update_parts([torch.zeros(5), torch.zeros(5)], vocab_size=5)


def test_bias_tokens_keeps_rises_above_the_fraction() -> None:
    # Prepare: rises at ids 1 (1.0), 3 (0.05) and 4 (0.3).
    delta = torch.tensor([-0.1, 1.0, -0.2, 0.05, 0.3])

    # Execute / Assert: 0.1 of the top rise is 0.1.
    assert bias_tokens(delta) == {1, 3, 4}
    assert bias_tokens(delta, fraction=0.1) == {1, 4}


def test_moved_rows_ranks_by_row_norm() -> None:
    # Prepare: row norms 0, 5, 1, 2.
    delta = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])

    # Execute / Assert
    assert moved_rows(delta, count=2) == {1, 3}
    assert moved_rows(delta, count=0) == set()


def test_score_counts_words_only() -> None:
    # Prepare: ids 0-1 are specials; words 2-6. Recovered words {2, 3, 5},
    # typed words {2, 3, 4, 6}: 2 hits.
    recovered, truth = {0, 2, 3, 5}, {0, 1, 2, 3, 4, 6}

    # Execute
    result = score(recovered, truth, word_ids=range(2, 7))

    # Assert
    assert result.precision == pytest.approx(2 / 3)
    assert result.recall == 0.5
    assert (result.recovered, result.truth) == (3, 4)
    assert math.isnan(score(set(), {2}, word_ids=[2]).precision)


def phone_update(
    global_model: NextWordModel,
    texts: list[str],
    tokenizer: WordTokenizer,
    seed: int,
) -> tuple[list[torch.Tensor], set[int]]:
    """A phone's real update from `global_model` and the words it trained on."""
    model = NextWordModel(global_model.config)
    model.load_state_dict(global_model.state_dict())
    sequences = encode_messages(tokenizer, texts, global_model.config.max_len)
    config = TrainingConfig(batch_size=16, lr=1.0, epochs=1)
    rng = np.random.default_rng(seed)
    train_local(model, sequences, config, pad_id=tokenizer.pad_id, rng=rng)
    update = [
        (p - g).detach()
        for p, g in zip(model.parameters(), global_model.parameters(), strict=True)
    ]
    return update, {i for s in sequences for i in s}


def first_phones_updates(
    splits: CorpusSplits, tokenizer: WordTokenizer, global_model: NextWordModel
) -> list[tuple[list[torch.Tensor], set[int]]]:
    """The real updates and typed words of the first 5 training users' phones."""
    users = list(splits.training_users.values())[:5]
    return [
        phone_update(global_model, list(u.train[:PHONE_MESSAGES]), tokenizer, k)
        for k, u in enumerate(users)
    ]


@pytest.fixture(scope="module")
def global_model(
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
) -> NextWordModel:
    """A tiny model trained 60 steps on users 10 onwards, as a global model is."""
    torch.manual_seed(0)
    model = NextWordModel(tiny_model_config)
    users = list(small_splits.training_users.values())[10:]
    texts = [t for u in users for t in u.train]
    sequences = encode_messages(tokenizer, texts, tiny_model_config.max_len)
    config = TrainingConfig(batch_size=16, lr=1.0, max_steps=60)
    train_local(
        model, sequences, config, pad_id=tokenizer.pad_id, rng=np.random.default_rng(0)
    )
    return model


def test_attack_recovers_a_single_phones_words(
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    global_model: NextWordModel,
) -> None:
    # Prepare: the first 5 training users, none of whom the global model saw.
    updates = first_phones_updates(small_splits, tokenizer, global_model)

    # Execute
    def scores(use_embedding: bool) -> list[AttackScore]:
        return [
            score(
                recover_tokens(
                    update,
                    vocab_size=tokenizer.vocab_size,
                    use_embedding=use_embedding,
                ),
                truth,
                word_ids=tokenizer.word_ids,
            )
            for update, truth in updates
        ]

    bias_only, with_rows = scores(False), scores(True)

    # Assert: measured precision 1.00 / recall 0.92-0.97 from the bias alone,
    # 0.90-0.98 / 0.95-0.99 with the embedding rows added.
    assert min(s.precision for s in bias_only) >= 0.95
    assert min(s.recall for s in bias_only) >= 0.85
    assert min(s.precision for s in with_rows) >= 0.85
    assert min(s.recall for s in with_rows) >= 0.9
    assert mean(s.recall for s in with_rows) > mean(s.recall for s in bias_only)


def test_attack_on_a_sum_recovers_the_union_but_not_who_typed_it(
    small_splits: CorpusSplits,
    tokenizer: WordTokenizer,
    global_model: NextWordModel,
) -> None:
    # Prepare: five phones' updates summed, as secure aggregation reveals them.
    updates = first_phones_updates(small_splits, tokenizer, global_model)
    total = [sum(parts) for parts in zip(*(u for u, _ in updates), strict=True)]
    union = set().union(*(truth for _, truth in updates))

    # Execute
    recovered = recover_tokens(total, vocab_size=tokenizer.vocab_size)
    cohort = score(recovered, union, word_ids=tokenizer.word_ids)
    per_phone = [
        score(recovered, truth, word_ids=tokenizer.word_ids) for _, truth in updates
    ]

    # Assert: the union is still recovered (measured 1.00 / 0.97); as a guess of
    # one phone's words the bag is mostly other phones' (precision 0.17-0.51).
    assert cohort.precision >= 0.95 and cohort.recall >= 0.9
    assert mean(s.precision for s in per_phone) <= 0.5


def test_top_words_ranks_recovered_words_by_bias_rise() -> None:
    # Prepare: four words; "b" rose most, then "c", then "a"; specials rose too.
    tokenizer = WordTokenizer.from_words(["a", "b", "c", "d"])
    ids = {w: tokenizer.encode(w)[0] for w in "abcd"}
    bias = torch.zeros(tokenizer.vocab_size)
    bias[ids["a"]], bias[ids["b"]], bias[ids["c"]] = 0.1, 0.5, 0.3
    bias[tokenizer.bos_id] = 0.9
    recovered = {ids["a"], ids["b"], ids["c"], tokenizer.bos_id}

    # Execute
    words = top_words(bias, recovered, tokenizer, count=2)

    # Assert: specials left out, largest rise first, cut at count.
    assert words == ["b", "c"]
