"""The screen in small rounds (issue 24, section 2): a median of fewer than six
values is not trusted; the round relies on the absolute bounds and the history."""

from __future__ import annotations

from screening import DEFAULT, sketched, stats

from coordinator.round.robust import (
    MIN_FOR_MEDIAN,
    Rejection,
    ScreenConfig,
    ScreenHistory,
    screen_stats,
)


def test_small_round_relies_on_the_bounds_then_on_the_history() -> None:
    # Prepare: four phones at pace 0.1, one at 0.9 (under its bound 1), one at
    # 1.5 (over it)
    round_ = [stats(f"p{i}", 16, 0.1) for i in range(4)]
    round_ += [stats("fast", 16, 0.9), stats("over", 16, 1.5)]

    # Execute: no history (five survivors' paces), then one past pace of 0.1
    alone, rejected_alone, _ = screen_stats(
        round_, config=DEFAULT, history=ScreenHistory()
    )
    pooled, rejected, _ = screen_stats(
        round_, config=DEFAULT, history=ScreenHistory((0.1,), (0.1,))
    )

    # Assert: five values are too few for a median, so only the absolute bound
    # acts; with the history's sixth the median is 0.1 and 0.9 > 5 x 0.1
    assert MIN_FOR_MEDIAN == 6
    assert alone == ["p0", "p1", "p2", "p3", "fast"]
    assert [r.client_id for r in rejected_alone] == ["over"]
    assert pooled == ["p0", "p1", "p2", "p3"]
    assert rejected[0] == Rejection(
        "fast", "norm 0.9 over 1 steps > 5 x median per step 0.1"
    )


def test_direction_rule_needs_six_survivors_in_the_round() -> None:
    # Prepare: sketches along e1, one flipped; every norm 1
    e1, flipped = [1.0, 0.0], [-1.0, 0.0]
    five = [sketched(f"p{i}", e1) for i in range(4)] + [sketched("flip", flipped)]
    six = [*five, sketched("p4", e1)]

    # Execute
    accepted_five, _, _ = screen_stats(
        five, config=ScreenConfig(), history=ScreenHistory()
    )
    accepted_six, rejected, _ = screen_stats(
        six, config=ScreenConfig(), history=ScreenHistory()
    )

    # Assert: the median of six is e1 and the flip's cosine with it is -1
    assert accepted_five == ["p0", "p1", "p2", "p3", "flip"]
    assert accepted_six == ["p0", "p1", "p2", "p3", "p4"]
    assert rejected == [
        Rejection("flip", "direction: cosine -1.000 with the round's median update "
                  "< -0.2"),
    ]  # fmt: skip
