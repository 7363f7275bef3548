"""The time-to-accuracy benchmark's results: a run's curve, the table, the machine.

`benchmarks.time_to_accuracy` runs the recipes; this module reads and shows what
they did, also from a stored `--json` file.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import torch
from rich.console import Console
from rich.table import Table

from models.config import native_bf16

# Rounds at which the table reports held-out top-3 (issue 29).
MILESTONES = (60, 100, 300)
# The recipe every ratio is taken against: today's `fedtype simulate`.
BASELINE = "default"

# A held-out evaluation: (round, wall seconds, CPU seconds, top-1, top-3,
# perplexity), the clocks counting the run's own time from its creation.
Point = tuple[int, float, float, float, float, float]


@dataclass(frozen=True)
class RunResult:
    """One recipe's fresh run under one seed."""

    recipe: str
    seed: int
    curve: list[Point]  # every held-out evaluation, in order
    seconds: float  # wall time of the whole run, evaluations included
    cpu_seconds: float  # this process's CPU time in it (less hostage to load)
    abandoned: int  # rounds with too few reports to aggregate
    tokens: int  # targets the phones trained on, all rounds

    def reached(self, target: float) -> Point | None:
        """The first evaluation whose top-3 reaches `target`, or None."""
        return next((p for p in self.curve if p[4] >= target), None)

    def top3_at(self, server_round: int) -> float | None:
        """Held-out top-3 after `server_round`, if it was evaluated then."""
        return next((p[4] for p in self.curve if p[0] == server_round), None)


def _mean(values: list[float | None]) -> float | None:
    """The mean, or None when any run missed (a time to a target never reached)."""
    if not values or any(v is None for v in values):
        return None
    return statistics.fmean(v for v in values if v is not None)


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def results_table(results: list[RunResult], target: float) -> Table:
    """Each recipe's means over its seeds, and its times' ratios to `default`'s."""
    recipes = list(dict.fromkeys(r.recipe for r in results))
    by_recipe = {name: [r for r in results if r.recipe == name] for name in recipes}

    def to_target(runs: list[RunResult], index: int) -> float | None:
        points = [r.reached(target) for r in runs]
        return _mean([None if p is None else p[index] for p in points])

    base = by_recipe.get(BASELINE, [])
    base_wall, base_cpu = to_target(base, 1), to_target(base, 2)
    table = Table(title=f"time to held-out top-3 {target:.2%}")
    table.add_column("recipe")
    for column in ("seeds", "wall s", "CPU s", "rounds", "x default (wall, CPU)"):
        table.add_column(column, justify="right")
    for milestone in MILESTONES:
        table.add_column(f"top-3 @{milestone}", justify="right")
    for column in ("last round", "top-1", "top-3", "perplexity", "run wall, CPU s"):
        table.add_column(column, justify="right")
    for name, runs in by_recipe.items():
        wall, cpu = to_target(runs, 1), to_target(runs, 2)
        last = [
            _mean([r.curve[-1][i] if r.curve else None for r in runs])
            for i in (0, 3, 4, 5)
        ]
        table.add_row(
            name,
            str(len(runs)),
            _fmt(wall, "{:,.0f}"),
            _fmt(cpu, "{:,.0f}"),
            _fmt(to_target(runs, 0), "{:.0f}"),
            f"{_fmt(_ratio(wall, base_wall), '{:.2f}')}, "
            f"{_fmt(_ratio(cpu, base_cpu), '{:.2f}')}",
            *(_fmt(_mean([r.top3_at(m) for r in runs]), "{:.2%}") for m in MILESTONES),
            _fmt(last[0], "{:.0f}"),
            _fmt(last[1], "{:.2%}"),
            _fmt(last[2], "{:.2%}"),
            _fmt(last[3], "{:,.0f}"),
            f"{statistics.fmean(r.seconds for r in runs):,.0f}, "
            f"{statistics.fmean(r.cpu_seconds for r in runs):,.0f}",
        )
    return table


def machine_line() -> str:
    """The CPU capability, bf16 or not, threads and load: what the times depend on."""
    capability = torch.backends.cpu.get_cpu_capability()
    bf16 = "native bf16" if native_bf16() else "no native bf16"
    try:
        load = f"load average {os.getloadavg()[0]:.1f} (1 min)"
    except OSError:
        load = "load average unknown"
    return (
        f"CPU capability {capability}, {bf16}, {torch.get_num_threads()} torch "
        f"thread(s), {os.cpu_count()} CPUs, {load}"
    )


def progress(console: Console, seed: int) -> Callable[[str, Point], None]:
    """A printer of each evaluation of the runs under `seed`."""

    def show(recipe: str, point: Point) -> None:
        console.print(
            f"seed {seed} {recipe}: round {point[0]}, {point[1]:.0f} s "
            f"({point[2]:.0f} s CPU), top-3 {point[4]:.2%}, "
            f"perplexity {point[5]:,.0f}",
            markup=False,
        )

    return show


def stored_results(path: str) -> list[RunResult]:
    """The results a `--json` file holds."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    results = [RunResult(**json.loads(line)) for line in lines if line.strip()]
    return [replace(r, curve=[cast(Point, tuple(p)) for p in r.curve]) for r in results]
