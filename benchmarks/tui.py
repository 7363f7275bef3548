"""Suggestion latency inside the typing demo, idle and while rounds train.

    .venv/bin/python -m benchmarks.tui [--keys 400] [--clients-per-round 10]
                                      [--threads 1] [--in-process]

(As a module: run as a script, `benchmarks/` would shadow the `tui` package.)

Runs the real `FedtypeApp` headless on a fresh default fleet (the default corpus
and model, `fedtype demo`'s federation settings) in a temporary directory, and
types held-out messages key by key, 80 ms apart. For every keystroke it times the
UI thread's suggestion work: the chips (wall and CPU time), the ghost text's
suggester call, and the whole way from the key event's creation to the chips
updated, which adds the time the key waited in the event loop; and the mean
wall time of a whole key cycle (the typist's gap included: a stalled app shows
here, since the next key waits for the last one to be handled). The panels below
(earlier rounds, this phone) follow once typing rests; they and the redraw after
each new round are timed too. The same typing is measured once with training
paused and once while rounds train, in a child process as `fedtype demo` does,
or with --in-process in a thread of the app's process. With the child process it
then times quitting in the middle of a round: `ChildProcessFleet.close` until the
thread that asked for the round has its answer (the round's failure).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from textual.events import Key
from textual.widgets import Input

from cli.demo_cmd import create_run, demo_federation
from coordinator.run.simulation import Simulation
from corpora.corpus import CorpusSplits
from corpora.samples import heldout_sample
from tui.app import FedtypeApp
from tui.child_fleet import ChildProcessFleet
from tui.ghost import GhostSuggester
from tui.keyboard import Keyboard
from tui.sim_fleet import SimulationFleet


@dataclass
class Timings:
    """Seconds per keystroke (and per round) of one phase."""

    chips: list[float] = field(default_factory=list)  # chips after a key, wall
    chips_cpu: list[float] = field(default_factory=list)  # the same, UI thread's CPU
    ghost: list[float] = field(default_factory=list)  # the ghost suggester's call
    key_to_chips: list[float] = field(default_factory=list)  # key event to chips
    panels: list[float] = field(default_factory=list)  # rounds panel, once typing rests
    after_round: list[float] = field(default_factory=list)  # redraw for a new model
    rounds: int = 0  # rounds finished during the phase
    seconds: float = 0.0  # wall time of the phase's typing, gaps included


def instrument(app: FedtypeApp, timings: dict[str, Timings], phase: list[str]) -> None:
    """Wrap the app's suggestion refresh, the field's key handler and the ghost
    suggester with timers (benchmark-only monkey-patching)."""
    keyboard = app.query_one(Keyboard)
    refresh, panels = keyboard.refresh_suggestions, keyboard.refresh_panels
    key_time = [0.0]

    def timed_refresh(*, ghost: bool = False, panels: bool = True) -> None:
        started, started_cpu = time.perf_counter(), time.thread_time()
        refresh(ghost=ghost, panels=panels)
        wall = time.perf_counter() - started
        current = timings[phase[0]]
        if key_time[0]:
            current.chips.append(wall)
            current.chips_cpu.append(time.thread_time() - started_cpu)
            current.key_to_chips.append(time.monotonic() - key_time[0])
            key_time[0] = 0.0
        else:
            current.after_round.append(wall)

    def timed_panels() -> None:
        started = time.perf_counter()
        panels()
        timings[phase[0]].panels.append(time.perf_counter() - started)

    keyboard.refresh_suggestions = timed_refresh  # type: ignore[method-assign]
    keyboard.refresh_panels = timed_panels  # type: ignore[method-assign]
    original_key = Input._on_key

    async def timed_key(self: Input, event: Key) -> None:
        key_time[0] = event.time
        await original_key(self, event)

    Input._on_key = timed_key  # type: ignore[method-assign]
    original_ghost = GhostSuggester.get_suggestion

    async def timed_ghost(self: GhostSuggester, value: str) -> str | None:
        started = time.perf_counter()
        result = await original_ghost(self, value)
        timings[phase[0]].ghost.append(time.perf_counter() - started)
        return result

    GhostSuggester.get_suggestion = timed_ghost  # type: ignore[method-assign]


def keys_of(texts: list[str], count: int) -> list[str]:
    """The first `count` keystrokes of typing `texts`, Enter after each."""
    keys: list[str] = []
    for text in texts:
        keys.extend(text)
        keys.append("ctrl+u")  # clear the field instead of sending the message
        if len(keys) >= count:
            break
    return [k for k in keys[:count] if k.isprintable()]


async def type_keys(pilot, keys: list[str], gap: float) -> None:
    """Press `keys` one by one, `gap` seconds apart (a fast typist: ~80 ms)."""
    for key in keys:
        await pilot.press(key)
        await asyncio.sleep(gap)


def close_during_round(run: Path, splits: CorpusSplits) -> float:
    """Seconds from `ChildProcessFleet.close`, half a second into a round (the
    second, so that the child has started), until the thread training rounds has
    returned."""
    fleet = ChildProcessFleet(run, splits=splits)
    first_round = threading.Event()

    def train() -> None:
        try:
            while True:
                fleet.train_round()
                first_round.set()
        except Exception:  # the round in flight fails when the child stops
            first_round.set()

    thread = threading.Thread(target=train)
    thread.start()
    first_round.wait()
    time.sleep(0.5)
    started = time.perf_counter()
    fleet.close()
    thread.join()
    return time.perf_counter() - started


async def measure(
    args: argparse.Namespace, run: Path, splits: CorpusSplits
) -> dict[str, Timings]:
    fleet: SimulationFleet | ChildProcessFleet
    if args.in_process:
        fleet = SimulationFleet(Simulation.resume(run, splits=splits))
    else:
        fleet = ChildProcessFleet(run, splits=splits)
    keys = keys_of(heldout_sample(splits, 2000), args.keys)
    app = FedtypeApp(fleet, autostart=False)
    timings = {"idle": Timings(), "training": Timings()}
    phase = ["idle"]
    async with app.run_test(size=(100, 40)) as pilot:
        instrument(app, timings, phase)
        started = time.perf_counter()
        await type_keys(pilot, keys, args.gap)
        timings["idle"].seconds = time.perf_counter() - started
        phase[0] = "training"
        await pilot.press("f5")
        while not str(app.query_one("#status").render()).startswith("training"):
            await pilot.pause(0.05)
        start_round = app.server_round
        started = time.perf_counter()
        await type_keys(pilot, keys, args.gap)
        timings["training"].seconds = time.perf_counter() - started
        timings["training"].rounds = app.server_round - start_round
        await pilot.press("f5")
        fleet.close()
    return timings


def table(timings: dict[str, Timings], load_before: tuple[float, ...]) -> Table:
    load = ", ".join(f"{x:.1f}" for x in load_before)
    result = Table(
        title="suggestion latency per keystroke in the demo (ms)",
        caption=f"load average before the run: {load} on {os.cpu_count()} CPUs",
    )
    for column in ("phase", "keys", "what", "median", "p90", "p99", "max"):
        result.add_column(column, justify="left" if column in "phasewhat" else "right")
    for name, phase in timings.items():
        label = f"{name} ({phase.rounds} rounds ran)" if name == "training" else name
        keys = len(phase.key_to_chips)
        per_key = phase.seconds / keys * 1000 if keys else 0.0
        result.add_row(label, str(keys), "whole cycle a key", f"{per_key:.0f} (mean)")
        label = ""
        for what, values in (
            ("chips", phase.chips),
            ("  (its CPU time)", phase.chips_cpu),
            ("ghost text", phase.ghost),
            ("key to chips", phase.key_to_chips),
            ("panels, on a pause", phase.panels),
            ("redraw, new model", phase.after_round),
        ):
            if not values:
                continue
            ms = sorted(v * 1000 for v in values)
            p = (
                statistics.quantiles(ms, n=100, method="inclusive")
                if len(ms) > 1
                else ms * 99
            )
            result.add_row(
                label,
                str(len(ms)),
                what,
                f"{statistics.median(ms):.2f}",
                f"{p[89]:.2f}",
                f"{p[98]:.2f}",
                f"{ms[-1]:.2f}",
            )
            label = ""
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=400, help="keystrokes a phase")
    parser.add_argument("--gap", type=float, default=0.08, help="seconds between keys")
    parser.add_argument("--clients-per-round", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="train in a thread of the app's process, not in a child process",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as directory:
        run = Path(directory) / "run"
        splits = create_run(run, demo_federation(args.clients_per_round))
        timings = asyncio.run(measure(args, run, splits))
        closing = None if args.in_process else close_during_round(run, splits)
    console = Console()
    console.print(table(timings, load_before))
    if closing is not None:
        console.print(
            f"close during a round, until its caller returns: {closing:.2f} s"
        )


if __name__ == "__main__":
    main()
