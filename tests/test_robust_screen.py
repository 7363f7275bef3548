"""The statistics screen: absolute bounds from the phones' settings, a robust
reference kept across rounds, and every hostile kind of report rejected."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from screening import DEFAULT, screen_reports, sketched, stats

from coordinator.round.robust import (
    Rejection,
    ScreenConfig,
    ScreenHistory,
    UpdateStats,
    screen_stats,
)
from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer
from device_sim.config import LocalTrainingConfig
from device_sim.faults import corrupt_report, default_fault_scale
from models.batching import encode_messages
from models.config import ModelConfig
from models.model import NextWordModel
from models.training import train_local

# The relative rule only, as the old screen.
RELATIVE = ScreenConfig()


def test_screen_config_bounds_follow_the_local_settings() -> None:
    # Prepare
    doubled = ScreenConfig.for_training(
        LocalTrainingConfig(local_epochs=2, client_lr=0.5, grad_clip_norm=2.0)
    )

    # Execute / Assert: 16 steps x 16 sequences; ceil(n / 16) steps, at most 16
    assert DEFAULT.max_examples() == 256
    assert [DEFAULT.max_norm(n) for n in (3, 16, 17, 47, 256, 10_000)] == [
        1.0, 1.0, 2.0, 3.0, 16.0, 16.0,
    ]  # fmt: skip
    # Two epochs: 16 // 2 = 8 batches, each seen twice; a step moves 0.5 x 2 = 1
    assert doubled.max_examples() == 128
    assert doubled.max_norm(20) == 4.0 and doubled.max_norm(500) == 16.0
    assert RELATIVE.max_examples() is None and RELATIVE.max_norm(5) is None


def test_screen_stats_rejects_each_broken_bound_in_order() -> None:
    # Prepare
    reports = [
        stats("ok", 16, 0.9),
        stats("far", 20, 3.0),  # 2 steps: at most 2
        stats("greedy", 300, 1.0),  # more sequences than a phone trains on
        stats("nan", 16, math.nan),
        UpdateStats("bent", 0, math.nan, False, "shape (4,) != (5,) in tensor 0"),
        stats("edge", 47, 3.0),  # exactly 3 steps' worth
    ]

    # Execute
    accepted, rejected, history = screen_stats(
        reports, config=DEFAULT, history=ScreenHistory()
    )

    # Assert
    assert accepted == ["ok", "edge"]
    assert rejected == [
        Rejection("far", "norm 3 > 2, the furthest 20 examples' clipped SGD "
                  "steps can move"),
        Rejection("greedy", "num_examples 300 > 256, the most a phone trains on "
                  "in a round"),
        Rejection("nan", "non-finite values (NaN or Inf) in the update"),
        Rejection("bent", "shape (4,) != (5,) in tensor 0"),
    ]  # fmt: skip
    # Per claimed step: "ok" took 1 step (0.9 / 1), "edge" 3 steps (3.0 / 3)
    assert history == ScreenHistory(norms=(0.9, 3.0), step_norms=(0.9, 1.0))


def test_screen_stats_history_holds_when_half_a_round_is_hostile() -> None:
    # Prepare: earlier rounds accepted norms near 1; now 3 honest and 3 hostile
    history = ScreenHistory(norms=(1.0, 1.0, 1.2, 0.8, 1.0, 1.1))
    round_ = [stats(f"h{i}", 1, 1.0) for i in range(3)]
    round_ += [stats(f"x{i}", 1, 20.0 + i) for i in range(3)]

    # Execute
    alone, rejected_alone, _ = screen_stats(
        round_, config=RELATIVE, history=ScreenHistory()
    )
    pooled, rejected, after = screen_stats(round_, config=RELATIVE, history=history)

    # Assert: this round's median (1 + 20) / 2 = 10.5 lets every 20 pass (20 <=
    # 5 x 10.5); pooled with the history the median is 1.0 and 20 > 5 x 1
    assert len(alone) == 6 and rejected_alone == []
    assert pooled == ["h0", "h1", "h2"]
    assert rejected[0] == Rejection("x0", "norm 20 > 5 x median 1")
    assert after.norms == (*history.norms, 1.0, 1.0, 1.0)


def test_screen_stats_norm_rule_judges_the_pace_not_the_norm() -> None:
    # Prepare: earlier rounds accepted paces (norm per step) of 0.1; an honest
    # heavy typist (256 sequences, 16 steps) moved 4.8, a one-step phone 0.9
    history = ScreenHistory(norms=(0.1,) * 8, step_norms=(0.1,) * 8)
    round_ = [stats("heavy", 256, 4.8), stats("fast", 16, 0.9)]
    raw = ScreenConfig()  # no local settings: the norms themselves

    # Execute
    accepted, rejected, _ = screen_stats(round_, config=DEFAULT, history=history)
    accepted_raw, _, _ = screen_stats(round_, config=raw, history=history)

    # Assert: paces 4.8 / 16 = 0.3 and 0.9; the pooled median of eight 0.1s,
    # 0.3 and 0.9 is 0.1, so 0.3 <= 5 x 0.1 < 0.9. On raw norms the median is
    # also 0.1 and the heavy typist's 4.8 was rejected too.
    assert accepted == ["heavy"]
    assert rejected == [
        Rejection("fast", "norm 0.9 over 1 steps > 5 x median per step 0.1")
    ]
    assert accepted_raw == []


def test_screen_stats_history_keeps_the_newest() -> None:
    # Prepare
    config = ScreenConfig(history_size=3)
    history = ScreenHistory(norms=(5.0, 6.0))

    # Execute
    _, _, after = screen_stats(
        [stats("a", 1, 1.0), stats("b", 1, 2.0)], config=config, history=history
    )

    # Assert
    assert after.norms == (6.0, 1.0, 2.0)
    assert ScreenHistory.from_dict(after.to_dict()) == after
    assert ScreenHistory.from_dict(None) == ScreenHistory()


def test_screen_with_config_applies_the_bounds() -> None:
    # Prepare: a report of 3 examples may move at most 1; one that moved 5
    reference = [torch.zeros(2)]
    reports = [
        ("a", [torch.tensor([0.6, 0.8])], 3),
        ("b", [torch.tensor([3.0, 4.0])], 3),
    ]

    # Execute
    accepted, rejected = screen_reports(reference, reports, config=DEFAULT)

    # Assert
    assert [r[0] for r in accepted] == ["a"]
    assert rejected[0].client_id == "b" and rejected[0].reason.startswith("norm 5 > 1")


# Small phones: at most 4 steps of 8 sequences, lr 1, clip 1.
SMALL_LOCAL = LocalTrainingConfig(max_local_steps=4, batch_size=8, client_lr=1.0)
Reports = list[tuple[str, list[torch.Tensor], int]]


@pytest.fixture(scope="module")
def honest(
    small_splits: CorpusSplits, tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> tuple[list[torch.Tensor], Reports]:
    """Ten phones' real clipped-SGD updates from one initial model."""
    return honest_updates(small_splits, tokenizer, tiny_model_config, 10)


def honest_updates(
    splits: CorpusSplits, tokenizer: WordTokenizer, config: ModelConfig, count: int
) -> tuple[list[torch.Tensor], Reports]:
    """Real clipped-SGD updates of `count` users from one initial model."""
    local = SMALL_LOCAL
    torch.manual_seed(0)
    model = NextWordModel(config)
    start = [p.detach().clone() for p in model.parameters()]
    reports = []
    for user in list(splits.training_users.values())[:count]:
        sequences = encode_messages(tokenizer, list(user.train), config.max_len)
        budget = local.sequence_budget() or len(sequences)
        sequences = sequences[:budget]
        with torch.no_grad():
            for p, s in zip(model.parameters(), start, strict=True):
                p.copy_(s)
        train_local(
            model,
            sequences,
            local.training_config(),
            pad_id=tokenizer.pad_id,
            rng=np.random.default_rng(0),
        )
        update = [
            p.detach() - s for p, s in zip(model.parameters(), start, strict=True)
        ]
        reports.append((user.user, update, len(sequences)))
    return start, reports


@pytest.mark.parametrize("kind", ["scale", "count", "nan", "inf"])
def test_default_screen_rejects_30_percent_hostile_real_updates(
    honest: tuple[list[torch.Tensor], Reports], kind: str
) -> None:
    # Prepare: ten phones' real updates; phones 0, 4 and 8 send a corrupted one
    reference, reports = honest
    config = ScreenConfig.for_training(SMALL_LOCAL)
    hostile = {0, 4, 8}
    sent = []
    for index, (client_id, update, n) in enumerate(reports):
        if index in hostile:
            update, n = corrupt_report(
                update, n, kind=kind, scale=default_fault_scale(kind)
            )
        sent.append((client_id, update, n))

    # Execute
    accepted, rejected = screen_reports(reference, sent, config=config)

    # Assert: every honest update is within its bound, every hostile one is out
    assert [r[0] for r in accepted] == [
        r[0] for i, r in enumerate(reports) if i not in hostile
    ]
    assert {r.client_id for r in rejected} == {reports[i][0] for i in hostile}


def test_default_screen_rejects_sign_flips_beyond_an_honest_reach(
    honest: tuple[list[torch.Tensor], Reports],
) -> None:
    # Prepare: every phone flips its update times -5
    reference, reports = honest
    config = ScreenConfig.for_training(SMALL_LOCAL)
    flipped = [
        (c, corrupt_report(u, n, kind="sign", scale=5.0)[0], n) for c, u, n in reports
    ]
    reach = {
        c: math.sqrt(sum(float(t.double().pow(2).sum()) for t in u))
        / (config.max_norm(n) or math.inf)
        for c, u, n in reports
    }

    # Execute
    accepted, _ = screen_reports(reference, flipped, config=config)

    # Assert: a flip is caught exactly when 5 x the honest norm breaks the bound;
    # one that stays within what an honest phone could move is not (by size, it
    # cannot be told apart: the robust aggregators are the defence for it)
    assert {c for c, _, _ in accepted} == {c for c, r in reach.items() if 5 * r <= 1}
    assert 0 < len(accepted) < len(reports)


def test_screen_stats_progress_rule_stops_an_inflated_count() -> None:
    # Prepare: three honest phones move 1.0, 0.8 and 0.8 a step (16, 32 and 48
    # sequences: 1, 2 and 3 steps); a liar with 2 sequences claims 200 (13 steps)
    # but moved only as far as its one real step, 0.9
    round_ = [stats("a", 16, 1.0), stats("b", 32, 1.6), stats("c", 48, 2.4)]
    round_ += [stats("liar", 200, 0.9)]

    # Execute
    accepted, rejected, history = screen_stats(
        round_, config=replace(DEFAULT, min_for_norm_check=3), history=ScreenHistory()
    )

    # Assert: per step 1.0, 0.8, 0.8 and 0.9 / 13 = 0.069; the median is 0.8 and
    # 0.069 x 5 < 0.8. Every norm is within its absolute bound and every pace
    # within 5 x the median
    assert accepted == ["a", "b", "c"]
    assert rejected == [
        Rejection("liar", "norm 0.9 over 13 steps for 200 examples < 1/5 of the "
                  "median per step 0.8"),
    ]  # fmt: skip
    assert history.step_norms == pytest.approx((1.0, 0.8, 0.8))


def test_screen_stats_direction_rule_stops_a_flipped_update() -> None:
    # Prepare: sketches by hand, all of norm 1; "flip" is -b scaled to norm 1
    half = math.sqrt(0.5)
    sketches = {
        "a": [1.0, 0.0, 0.0],
        "b": [half, half, 0.0],
        "c": [half, 0.0, half],
        "flip": [-half, -half, 0.0],
    }
    round_ = [sketched(c, v) for c, v in sketches.items()]

    # Execute
    accepted, rejected, _ = screen_stats(
        round_, config=ScreenConfig(min_for_norm_check=3), history=ScreenHistory()
    )
    off, _, _ = screen_stats(
        round_,
        config=ScreenConfig(min_cosine=-1.0, min_for_norm_check=3),
        history=ScreenHistory(),
    )

    # Assert: the coordinate-wise median is (0.707, 0, 0) (medians of
    # {1, .707, .707, -.707}, {0, .707, 0, -.707} and {0, 0, .707, 0}), and the
    # flipped update's cosine with it is -0.707
    assert accepted == ["a", "b", "c"]
    assert rejected == [
        Rejection("flip", "direction: cosine -0.707 with the round's median "
                  "update < -0.2"),
    ]  # fmt: skip
    assert off == ["a", "b", "c", "flip"]


def test_screen_stats_without_norms_applies_the_bounds_only() -> None:
    # Prepare: secure aggregation shows no norm (0) and no sketch
    round_ = [stats("a", 16, 0.0), stats("b", 32, 0.0), stats("liar", 200, 0.0)]
    round_ += [stats("greedy", 300, 0.0)]
    history = ScreenHistory(norms=(1.0,), step_norms=(1.0,))
    config = ScreenConfig.for_training(LocalTrainingConfig(), relative=False)

    # Execute
    accepted, rejected, after = screen_stats(round_, config=config, history=history)

    # Assert: only the count bound applies; the history is left as it was
    assert accepted == ["a", "b", "liar"]
    assert [r.client_id for r in rejected] == ["greedy"]
    assert after == history


def test_screen_history_reads_a_state_without_step_norms() -> None:
    # Prepare: state.json as runs before the progress rule wrote it
    old = {"norms": [1.0, 2.0]}

    # Execute
    history = ScreenHistory.from_dict(old)

    # Assert
    assert history == ScreenHistory(norms=(1.0, 2.0))
    assert ScreenHistory.from_dict(history.to_dict()) == history


def test_default_screen_rejects_30_percent_sign_flipped_real_updates(
    honest: tuple[list[torch.Tensor], Reports],
) -> None:
    # Prepare: phones 0, 4 and 8 send their real update flipped, at its own size
    reference, reports = honest
    config = ScreenConfig.for_training(SMALL_LOCAL)
    hostile = {0, 4, 8}
    sent = [
        (c, corrupt_report(u, n, kind="sign", scale=1.0)[0] if i in hostile else u, n)
        for i, (c, u, n) in enumerate(reports)
    ]

    # Execute
    accepted, rejected = screen_reports(reference, sent, config=config)

    # Assert: no norm rule can see a flip at its own size; the direction rule
    # drops exactly the flipped three
    assert [r[0] for r in accepted] == [
        r[0] for i, r in enumerate(reports) if i not in hostile
    ]
    assert {r.client_id for r in rejected} == {reports[i][0] for i in hostile}
    assert all(r.reason.startswith("direction: cosine -") for r in rejected)
