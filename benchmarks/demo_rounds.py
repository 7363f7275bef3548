"""Round time of the typing demo's fleet, headless: `python -m benchmarks.demo_rounds`.

A fresh fleet with `fedtype demo`'s settings (`cli.demo_cmd.demo_federation`,
10 phones a round, an evaluation every round) on one torch thread, as the demo's
child process runs it. Prints each round's wall time (training, evaluation, save)
and the median after the first.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from cli.demo_cmd import demo_federation
from coordinator.simulation import Simulation
from corpora.corpus import CorpusConfig
from models.config import ModelConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        sim = Simulation.create(
            f"{out}/run",
            federation=demo_federation(10),
            corpus=CorpusConfig(),
            model=ModelConfig(),
        )
        print(f"fleet ready in {time.perf_counter() - started:.1f} s")
        walls = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            record = sim.run_round()
            walls.append(time.perf_counter() - started)
            print(
                f"round {record['server_round']}: {walls[-1]:.2f} s (training "
                f"{record['wall_seconds']:.2f} s, evaluation "
                f"{record.get('eval_seconds', 0.0):.2f} s)"
            )
        print(f"median round after the first: {statistics.median(walls[1:]):.2f} s")


if __name__ == "__main__":
    main()
