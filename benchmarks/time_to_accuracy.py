"""Time to accuracy: when the fleet is good. `python -m benchmarks.time_to_accuracy`

Runs each recipe from a fresh run, one after another in this process (issue 29),
and records the wall time until held-out top-3 first reaches the target (by
default 0.9 of central's held-out top-3, central's figure given by
`--central-top3` or read from a stored central run by `--central-run`), the
rounds that took, and top-3 at rounds 60, 100 and 300 when the run gets there.
Evaluation time counts in the wall time, as a user waits for it too; every recipe
evaluates the same held-out sample on the same schedule (`--eval-every`).

A recipe is a `+`-joined list of changes from `fedtype simulate`'s defaults
(FedAvgM, full softmax, the CPU's default precision): `default` changes nothing;
a strategy name (`fedadagrad`, `fedadam`, ...) sets it at its default server step;
`clientlrX`, `serverlrX`, `tauX`, `cohortN` (reports a round) and `lrwarmN` set
those settings; `sampledN` trains with the sampled softmax of N words,
`fullendK` makes each phone's last K steps full, and `untilR` samples only in
rounds 1 to R. The table gives each recipe's mean over the seeds and its time
to the target as a ratio to `default`'s (run it first or alongside).

    python -m benchmarks.time_to_accuracy --central-top3 0.2762 \\
        --recipes default fedadagrad+clientlr2 sampled1024 --rounds 60
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

import torch
from rich.console import Console

from benchmarks.time_to_accuracy_report import (
    BASELINE,
    Point,
    RunResult,
    machine_line,
    progress,
    results_table,
    stored_results,
)
from coordinator.config import FederationConfig
from coordinator.round.strategies import STRATEGIES
from coordinator.run.simulation import Simulation
from corpora.corpus import CorpusConfig, CorpusSplits, load_corpus
from corpora.tokenizer import WordTokenizer

# Recipe parts that take a number, and the setting each sets.
_NUMBERED = {
    "clientlr": ("local", "client_lr", float),
    "sampled": ("local", "softmax_samples", int),
    "fullend": ("local", "softmax_full_steps", int),
    "until": ("local", "softmax_sampled_rounds", int),
    "serverlr": ("strategy", "server_lr", float),
    "tau": ("strategy", "tau", float),
    "cohort": ("federation", "clients_per_round", int),
    "lrwarm": ("strategy", "warmup_rounds", int),
}


class RecipeError(ValueError):
    """A recipe part that names no setting; the message says which."""


def recipe_config(recipe: str, base: FederationConfig) -> FederationConfig:
    """The federation `recipe` describes (see the module docstring)."""
    federation, local, strategy = base, base.local, base.strategy
    for part in recipe.split("+"):
        if part == BASELINE:
            continue
        if part in STRATEGIES:
            strategy = replace(strategy, name=part, server_lr=None)
            continue
        prefix = next((p for p in _NUMBERED if part.startswith(p)), None)
        if prefix is None:
            raise RecipeError(f"recipe {recipe!r}: unknown part {part!r}")
        where, name, kind = _NUMBERED[prefix]
        try:
            value = kind(part[len(prefix) :])
        except ValueError:
            raise RecipeError(f"recipe {recipe!r}: {part!r} needs a number") from None
        if where == "local":
            local = replace(local, **{name: value})
        elif where == "strategy":
            strategy = replace(strategy, **{name: value})
        else:
            federation = replace(federation, **{name: value})
        if prefix == "sampled":
            local = replace(local, train_softmax="sampled")
    return replace(federation, local=local, strategy=strategy)


class RecipeRun:
    """A recipe's fresh run, stepped a round at a time.

    Its clocks run only while it is created or steps, so that runs stepped in
    turn (`main`) share the machine's varying load fairly.
    """

    def __init__(
        self,
        recipe: str,
        federation: FederationConfig,
        *,
        out: Path,
        splits: CorpusSplits,
        corpus: CorpusConfig,
        tokenizer: WordTokenizer,
    ) -> None:
        self.recipe, self.federation = recipe, federation
        self.wall = self.cpu = 0.0
        self.curve: list[Point] = []
        self.abandoned = self.tokens = 0
        with self._clock():
            self.simulation = Simulation.create(
                out,
                federation=federation,
                corpus=corpus,
                tokenizer=tokenizer,
                splits=splits,
            )

    @contextlib.contextmanager
    def _clock(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu

    @property
    def done(self) -> bool:
        return self.simulation.server_round >= self.federation.rounds

    def step(self) -> None:
        """One round, and its evaluation when the schedule has one."""
        with self._clock():
            record = self.simulation.run_round()
        self.abandoned += bool(record["abandoned"])
        self.tokens += int(record["tokens"])
        heldout = record.get("heldout")
        if heldout:
            metrics = (float(heldout[k]) for k in ("top1", "top3", "perplexity"))
            point = (int(record["server_round"]), self.wall, self.cpu, *metrics)
            self.curve.append(point)  # type: ignore[arg-type]

    def result(self) -> RunResult:
        self.simulation.close()
        return RunResult(
            self.recipe,
            self.federation.seed,
            self.curve,
            self.wall,
            self.cpu,
            self.abandoned,
            self.tokens,
        )


def run_in_turn(
    configs: dict[str, FederationConfig],
    *,
    splits: CorpusSplits,
    corpus: CorpusConfig,
    tokenizer: WordTokenizer,
    on_point: Callable[[str, Point], None] | None = None,
) -> list[RunResult]:
    """Fresh runs of every recipe, a round of each in turn until all are done.

    `on_point` hears each evaluation as (recipe, point).
    """
    with tempfile.TemporaryDirectory() as out:
        runs = [
            RecipeRun(
                recipe,
                federation,
                out=Path(out) / str(index),
                splits=splits,
                corpus=corpus,
                tokenizer=tokenizer,
            )
            for index, (recipe, federation) in enumerate(configs.items())
        ]
        while not all(run.done for run in runs):
            for run in runs:
                if not run.done:
                    evaluated = len(run.curve)
                    run.step()
                    if on_point is not None and len(run.curve) > evaluated:
                        on_point(run.recipe, run.curve[-1])
        return [run.result() for run in runs]


def central_top3(args: argparse.Namespace) -> float:
    """Central's held-out top-3: `--central-top3`, or the stored run's last."""
    if args.central_top3 is not None:
        return float(args.central_top3)
    from cli.compare_runs import load_run

    return float(load_run(args.central_run).final["heldout"]["top3"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    fed = FederationConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    central = parser.add_mutually_exclusive_group(required=True)
    central.add_argument("--central-top3", type=float, help="central's top-3")
    central.add_argument("--central-run", help="a stored central run directory")
    parser.add_argument(
        "--target-fraction",
        type=float,
        nargs="+",
        default=[0.9],
        help="targets as shares of central's top-3, a table each (default: 0.9)",
    )
    parser.add_argument("--recipes", nargs="+", default=[BASELINE])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--eval-every", type=int, default=fed.eval_every)
    parser.add_argument("--heldout-messages", type=int, default=fed.heldout_messages)
    parser.add_argument("--future-messages", type=int, default=fed.future_messages)
    parser.add_argument("--keystroke-texts", type=int, default=fed.keystroke_texts)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="append each run's result here, one a line")
    parser.add_argument(
        "--from-json", help="tabulate the results stored in this file; run nothing"
    )
    return parser.parse_args(argv)


def recipe_configs(args: argparse.Namespace) -> dict[str, FederationConfig]:
    """Each recipe's federation over the options' rounds, fleet and evaluation."""
    base = FederationConfig(
        rounds=args.rounds,
        eval_every=args.eval_every,
        heldout_messages=args.heldout_messages,
        future_messages=args.future_messages,
        keystroke_texts=args.keystroke_texts,
    )
    base = replace(base, fleet=replace(base.fleet, max_users=args.max_users))
    return {r: recipe_config(r, base) for r in args.recipes}


def run_all(args: argparse.Namespace, console: Console) -> list[RunResult]:
    """Every recipe under every seed; each result printed (and stored) as it ends."""
    configs = recipe_configs(args)
    corpus = CorpusConfig()
    splits = load_corpus(corpus)
    tokenizer = WordTokenizer.public()
    results: list[RunResult] = []
    for seed in args.seeds:
        seeded = {r: replace(f, seed=seed) for r, f in configs.items()}
        for result in run_in_turn(
            seeded,
            splits=splits,
            corpus=corpus,
            tokenizer=tokenizer,
            on_point=progress(console, seed),
        ):
            results.append(result)
            line = json.dumps(asdict(result))
            console.print(line, soft_wrap=True, markup=False)
            if args.json:
                with open(args.json, "a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=200)
    try:
        recipe_configs(args)
        targets = [f * central_top3(args) for f in args.target_fraction]
        stored = stored_results(args.from_json) if args.from_json else None
    except (ValueError, OSError, KeyError, TypeError) as error:
        # RecipeError, a bad setting or file, a central run without a top-3.
        console.print(f"time_to_accuracy: {error}", markup=False)
        return 2
    torch.set_num_threads(args.threads)
    console.print(machine_line())
    results = stored if stored is not None else run_all(args, console)
    for target in targets:
        console.print(results_table(results, target))
    console.print(machine_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
