"""The time-to-accuracy benchmark's recipes and its reading of a run's curve."""

from __future__ import annotations

import pytest
from rich.console import Console

from benchmarks.time_to_accuracy import RecipeError, recipe_config
from benchmarks.time_to_accuracy_report import RunResult, results_table
from coordinator.config import FederationConfig


def _result(recipe: str, curve: list[tuple[int, float, float]]) -> RunResult:
    # (round, wall s, top-3) points; CPU half the wall, top-1 and perplexity fixed
    points = [(r, wall, wall / 2, 0.1, top3, 200.0) for r, wall, top3 in curve]
    return RunResult(recipe, 0, points, curve[-1][1], curve[-1][1] / 2, 0, 100)


def test_recipe_config_applies_each_part() -> None:
    # Prepare
    base = FederationConfig()

    # Execute
    config = recipe_config("fedadagrad+clientlr2+sampled512+fullend2+cohort40", base)

    # Assert
    strategy = config.strategy
    assert (strategy.name, strategy.server_lr, config.clients_per_round) == (
        "fedadagrad",
        None,
        40,
    )
    local = config.local
    assert (local.client_lr, local.train_softmax, local.softmax_samples) == (
        2.0,
        "sampled",
        512,
    )
    assert local.softmax_full_steps == 2
    assert recipe_config("default", base) == base


@pytest.mark.parametrize(
    ("recipe", "message"),
    [("fedsgd", "unknown part 'fedsgd'"), ("clientlrfast", "needs a number")],
)
def test_recipe_config_refuses_unknown_parts(recipe: str, message: str) -> None:
    # Execute
    with pytest.raises(RecipeError) as caught:
        recipe_config(recipe, FederationConfig())

    # Assert
    assert message in str(caught.value)


def test_run_result_first_reach_and_milestones() -> None:
    # Prepare: top-3 of 0.10, 0.20 and 0.15 after rounds 10, 60 and 100
    result = _result("default", [(10, 5.0, 0.10), (60, 30.0, 0.20), (100, 50.0, 0.15)])

    # Execute
    reached = result.reached(0.12)

    # Assert: first reached at round 60, 30 s; nothing reaches 0.25
    assert reached is not None and (reached[0], reached[1]) == (60, 30.0)
    assert result.reached(0.25) is None
    assert (result.top3_at(100), result.top3_at(300)) == (0.15, None)


def test_results_table_ratio_to_default() -> None:
    # Prepare: default reaches 0.2 after 40 s, sampled after 10 s
    results = [
        _result("default", [(10, 20.0, 0.1), (20, 40.0, 0.2)]),
        _result("sampled1024", [(10, 10.0, 0.2)]),
    ]

    # Execute
    console = Console(width=250, record=True)
    console.print(results_table(results, 0.2))
    text = console.export_text()

    # Assert: 10 / 40 = 0.25 of default's wall and CPU time
    sampled = next(line for line in text.splitlines() if "sampled1024" in line)
    assert "0.25, 0.25" in sampled
