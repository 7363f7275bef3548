"""Cost of one SecAgg+ round at the real model size, phone side and server side.

    .venv/bin/python -m benchmarks.secagg [--cohorts 20 100 500] [--dropout 0.1]
        [--size 1360661] [--bits 32] [--degree K]

For each cohort of n simulated phones (default config: k = 2 ceil(log2 n)
neighbours, a majority threshold t, b = 32 bits) one round is run
through `SecAggSession.setup` itself, with a timer around each phone's part
(`TimedPhones`) and the server's the rest:

- phone setup: advertise keys, share b_u and the mask key (Shamir, AES-GCM),
  open the neighbours' shares and agree the pairwise mask seeds;
- mask: quantise and add k + 1 AES-CTR masks to a vector of `--size` float64
  coordinates (1,360,660 parameters plus num_examples);
- server setup: the graph and the relay; sum: adding the uploads mod 2^b as
  `modular_sum` does (the round loop's all_reduce replaces it); unmask:
  reconstruct the seeds and keys from the survivors' shares, regenerate and
  remove the masks, dequantise (the survivors' answers, a few dictionary
  look-ups each, are timed with it).

Every phone of every cohort is timed (none extrapolated). The round is run
twice on the same masked vectors: with every phone uploading, and with
`--dropout` of the phones (every tenth, say) dropping after masking, before the
upload, so that the server must also recover their mask keys and regenerate
the pairwise masks they shared with their surviving neighbours. The second run
rebuilds the session from the same seed, which reproduces every mask.

Bytes up per phone count what a phone sends: two public keys, k sealed shares,
the masked vector packed at ceil(b / 8) bytes a coordinate, and its unmask
response (k shares); a float32 update of the same size is 4 bytes a coordinate.
Each run also checks the unmasked sum against the plaintext sum; the error sits
near its bound because the phones cycle through a few inputs, whose rounding
errors then add up coherently.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from coordinator.protections.secagg_server import SecAggSession, modular_sum
from device_sim.secagg_client import SecAggClient
from device_sim.secagg_phones import SecAggPhones
from secagg import EncryptedShare, PublicKeys, RoundParameters, SecAggConfig
from secagg.shamir import Share

SIZE = 1_360_661
SEED = 0
SERVER_ROUND = 1
# |x_i| bound: clip norm 1 times at most 16 steps x 16 sequences (default fleet).
MAX_ABS = 256.0
# Distinct random inputs cycled over the phones (drawing 500 would dominate).
INPUT_POOL = 4


@dataclass(frozen=True)
class RoundCost:
    """One cohort's measured round."""

    phones: int
    degree: int
    threshold: int
    dropped: int
    phone_setup_s: list[float]  # per phone
    mask_s: list[float]  # per phone (those that drop after masking included)
    server_setup_s: float
    sum_s: float
    unmask_s: float
    bytes_up: float  # mean per phone
    max_error: float
    error_bound: float


def since(started: float) -> float:
    """Seconds since the `time.perf_counter()` reading `started`."""
    return time.perf_counter() - started


class TimedPhones(SecAggPhones):
    """The simulation's phones, with each phone's own work timed apart."""

    def __init__(self, parameters: RoundParameters, cohort: Collection[str]) -> None:
        self.seconds = dict.fromkeys(sorted(cohort), 0.0)
        super().__init__(
            {
                u: self._timed(u, SecAggClient, client_id=u, parameters=parameters)
                for u in cohort
            }
        )

    def _timed(
        self, phone: str, work: Callable[..., Any], /, *args: Any, **kw: Any
    ) -> Any:
        """`work(*args, **kw)`, its time added to `phone`'s."""
        started = time.perf_counter()
        done = work(*args, **kw)
        self.seconds[phone] += since(started)
        return done

    def advertise(self) -> list[PublicKeys]:
        return [self._timed(u, c.advertise) for u, c in self.clients.items()]

    def share(
        self, neighbours: Mapping[str, list[PublicKeys]], sharing: Collection[str]
    ) -> list[EncryptedShare]:
        return [
            m
            for u in sorted(sharing)
            for m in self._timed(u, self.clients[u].share, neighbours[u])
        ]

    def receive_one(self, client_id: str, shares: Sequence[EncryptedShare]) -> None:
        self._timed(client_id, super().receive_one, client_id, shares)


def timed_setup(
    ids: list[str], config: SecAggConfig
) -> tuple[SecAggSession, dict[str, float], float]:
    """`SecAggSession.setup`, with each phone's and the server's time kept apart
    (the server's: the whole setup less the phones' own work)."""
    made: list[TimedPhones] = []

    def phones(parameters: RoundParameters, cohort: Collection[str]) -> TimedPhones:
        made.append(TimedPhones(parameters, cohort))
        return made[-1]

    started = time.perf_counter()
    session = SecAggSession.setup(
        ids,
        phones=phones,
        config=config,
        seed=SEED,
        server_round=SERVER_ROUND,
        max_abs=MAX_ABS,
    )
    whole = since(started)
    phone = made[0].seconds
    return session, phone, whole - sum(phone.values())


def run_cohort(
    n: int, *, dropout: float, size: int, bits: int, degree: int | None
) -> list[RoundCost]:
    """The full-upload round and the round with `dropout` dropping after masking."""
    ids = [f"phone-{i:04d}" for i in range(n)]
    config = SecAggConfig(bits=bits, degree=degree)
    rng = np.random.default_rng(SEED)
    pool = [rng.uniform(-1, 1, size) for _ in range(INPUT_POOL)]
    step = max(1, round(1 / dropout)) if dropout > 0 else n + 1
    dropped = {u for i, u in enumerate(ids) if i % step == step - 1}
    session, phone_s, server_setup_s = timed_setup(ids, config)
    mask_s: dict[str, float] = {}
    # modular_sum's work, upload by upload, so that no 500 vectors are held.
    sum_s = {"all": 0.0, "dropped": 0.0}
    totals = {"all": np.zeros(size, np.uint64), "dropped": np.zeros(size, np.uint64)}
    plain = {"all": np.zeros(size), "dropped": np.zeros(size)}
    for i, u in enumerate(ids):
        x = pool[i % INPUT_POOL]
        started = time.perf_counter()
        masked = session.maskers[u].mask(x)
        mask_s[u] = since(started)
        for key in ("all",) if u in dropped else ("all", "dropped"):
            started = time.perf_counter()
            np.add(totals[key], masked.vector.astype(np.uint64), out=totals[key])
            sum_s[key] += since(started)
            plain[key] += x
    costs = []
    for key in ("all", "dropped") if dropped else ("all",):
        if key == "dropped":
            # A fresh round from the same seed: the same masks, unanswered phones.
            session, _, server_setup_s = timed_setup(ids, config)
        survivors = [u for u in ids if key == "all" or u not in dropped]
        started = time.perf_counter()
        total = modular_sum([totals[key]], bits)
        sum_s[key] += since(started)
        started = time.perf_counter()
        result = session.unmask(total, survivors=survivors)
        unmask_s = since(started)
        parameters = session.parameters
        costs.append(
            RoundCost(
                phones=n,
                degree=parameters.degree,
                threshold=parameters.threshold,
                dropped=n - len(survivors),
                phone_setup_s=list(phone_s.values()),
                mask_s=list(mask_s.values()),
                server_setup_s=server_setup_s,
                sum_s=sum_s[key],
                unmask_s=unmask_s,
                bytes_up=bytes_up(parameters.degree, size, bits),
                max_error=float(np.abs(result - plain[key]).max()),
                error_bound=parameters.spec.error_bound(len(survivors)),
            )
        )
    return costs


def bytes_up(degree: int, size: int, bits: int) -> float:
    """What one phone sends: keys, sealed shares, masked vector, unmask response."""
    share = len(Share(1, (0, 0, 0)).to_bytes())
    sealed = 2 * share + 16  # two shares and the AES-GCM tag
    return 2 * 32 + degree * sealed + -(-bits // 8) * size + degree * share


def table(costs: list[RoundCost], size: int, bits: int) -> Table:
    out = Table(title=f"One SecAgg+ round, {size:,} coordinates, b = {bits}")
    columns = (
        "phones",
        "k/t",
        "dropped",
        "setup ms/phone",
        "mask ms/phone",
        "phones total s",
        "server setup s",
        "sum s",
        "unmask s",
        "MB up/phone",
        "error/bound",
    )
    for column in columns:
        out.add_column(column, justify="right")
    for c in costs:
        phone_total = sum(c.phone_setup_s) + sum(c.mask_s)
        out.add_row(
            f"{c.phones}",
            f"{c.degree}/{c.threshold}",
            f"{c.dropped}",
            f"{statistics.mean(c.phone_setup_s) * 1e3:.1f}",
            f"{statistics.mean(c.mask_s) * 1e3:.1f}",
            f"{phone_total:.2f}",
            f"{c.server_setup_s:.3f}",
            f"{c.sum_s:.3f}",
            f"{c.unmask_s:.3f}",
            f"{c.bytes_up / 1e6:.3f}",
            f"{c.max_error:.1e}/{c.error_bound:.1e}",
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", type=int, nargs="+", default=[20, 100, 500])
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--bits", type=int, default=SecAggConfig().bits)
    parser.add_argument("--degree", type=int, default=None, help="k (default: auto)")
    args = parser.parse_args()
    console = Console(width=150)
    console.print(f"load average before: {os.getloadavg()[0]:.2f}")
    costs = []
    for n in args.cohorts:
        costs.extend(
            run_cohort(
                n,
                dropout=args.dropout,
                size=args.size,
                bits=args.bits,
                degree=args.degree,
            )
        )
    console.print(f"load average after: {os.getloadavg()[0]:.2f}")
    console.print(table(costs, args.size, args.bits))
    console.print(
        f"float32 update: {4 * args.size / 1e6:.3f} MB up per phone; "
        "mask / phone covers quantising and all k + 1 masks"
    )


if __name__ == "__main__":
    main()
