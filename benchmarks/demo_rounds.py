"""Round time of the typing demo's fleet, headless: `python -m benchmarks.demo_rounds`.

A fresh fleet with `fedtype demo`'s settings (`cli.demo_cmd.create_run`, 10 phones
a round, an evaluation every round) on one torch thread, as the demo's child
process runs it (`tui.sim_fleet.SimulationFleet`): each round, then the live
central baseline trained up to the fleet's training tokens and evaluated on the
same held-out text (`--no-central` leaves it out). Prints each round's wall time,
split into the fleet's training, its evaluation and the central catch-up, and
the median after the first.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cli.demo_cmd import create_run, demo_federation
from coordinator.run.simulation import Simulation
from tui.live_central import open_live_central
from tui.sim_fleet import SimulationFleet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--no-central", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        started = begun = time.perf_counter()
        path = Path(out) / "run"
        live = not args.no_central
        splits = create_run(path, demo_federation(10), live_central=live)
        central = open_live_central(path, splits) if live else None
        fleet = SimulationFleet(Simulation.resume(path, splits=splits), central=central)
        print(f"fleet ready in {time.perf_counter() - started:.1f} s")
        walls = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            record = fleet.run_round()
            walls.append(time.perf_counter() - started)
            own = record["wall_seconds"] + record.get("eval_seconds", 0.0)
            top3 = (record.get("heldout") or {}).get("top3", float("nan"))
            print(
                f"round {record['server_round']}: {walls[-1]:.2f} s (training "
                f"{record['wall_seconds']:.2f} s, evaluation "
                f"{record.get('eval_seconds', 0.0):.2f} s, save and central "
                f"{walls[-1] - own:.2f} s), held-out top-3 {top3:.2%}, "
                f"{time.perf_counter() - begun:.0f} s since the start"
            )
        fleet.close()
        print(f"median round after the first: {statistics.median(walls[1:]):.2f} s")


if __name__ == "__main__":
    main()
