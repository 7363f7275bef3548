"""Device profiles: when a phone may train, how fast it is, whether it drops out.

A keyboard trains only while the phone is idle, charging and on an unmetered
network (Bonawitz et al. 2019, "Towards Federated Learning at Scale", arXiv
1902.01046): in practice at night, so the eligible share of the fleet follows the
clock of the time zones its users live in. Each phone gets a profile drawn from
`(seed, client_id)`: a time zone from three regional clusters, a nightly charge
window, a chance of being on Wi-Fi on a given night, a speed factor and a
bandwidth. Which nights it is on Wi-Fi and whether it is idle when the server checks
in are hashed from `(seed, client_id, night)` and `(seed, server_round, client_id)`,
so availability is a pure function of time and can be evaluated for a whole fleet
at once as arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from device_sim.config import FleetConfig
from models.seeding import derive_seed, numpy_rng

# (mean UTC offset in hours, spread, share of phones): the Americas, Europe and
# Africa, Asia and Oceania. The uneven shares make the eligible share swing
# through the simulated day.
_REGIONS: tuple[tuple[float, float, float], ...] = (
    (-6.0, 2.0, 0.45),
    (1.0, 1.0, 0.30),
    (7.0, 2.0, 0.25),
)
# Local hour at which the nightly charge starts, on average, and its spread.
_CHARGE_START = (22.5, 1.5)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """The fixed traits of one simulated phone."""

    timezone_hours: float  # offset of its local time from UTC
    charge_start_hour: float  # local hour its nightly charge begins
    charge_hours: float  # how long it stays on the charger
    unmetered_prob: float  # chance of Wi-Fi on a given night
    speed_factor: float  # its local step takes this many median-phone steps
    bandwidth_bytes: float  # bytes a second, down and up
    faulty: bool  # corrupts its updates (a buggy or hostile device)
    network_key: int  # hashes (night) to its Wi-Fi draw
    idle_key: int  # hashes (server_round) to its idle draw


def draw_profile(seed: int, client_id: str, config: FleetConfig) -> DeviceProfile:
    """The profile of phone `client_id`, from the stream `(seed, "profile", id)`."""
    rng = numpy_rng(seed, "profile", client_id)
    shares = np.array([share for _, _, share in _REGIONS])
    mean, spread, _ = _REGIONS[int(rng.choice(len(_REGIONS), p=shares))]
    p = config.unmetered_prob
    unmetered = p if p in (0.0, 1.0) else float(rng.beta(8 * p, 8 * (1 - p)))
    length = float(np.clip(rng.normal(config.charge_hours, 1.5), 1.0, 24.0))
    return DeviceProfile(
        timezone_hours=float(np.round(rng.normal(mean, spread))),
        charge_start_hour=float(rng.normal(*_CHARGE_START) % 24),
        charge_hours=min(length, config.charge_hours * 2, 24.0),
        unmetered_prob=unmetered,
        speed_factor=float(rng.lognormal(0.0, config.speed_sigma)),
        bandwidth_bytes=float(
            rng.lognormal(np.log(config.bandwidth_mbps * 125e3), 0.7)
        ),
        faulty=bool(rng.random() < config.faulty_fraction),
        network_key=derive_seed(seed, "network", client_id),
        idle_key=derive_seed(seed, "idle", client_id),
    )


def hashed_uniform(keys: np.ndarray, counters: np.ndarray | int) -> np.ndarray:
    """Uniforms in [0, 1), one per key, from splitmix64 of (key, counter)."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.asarray(counters, dtype=np.uint64) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


class AvailabilityTable:
    """The eligibility-relevant traits of many phones as arrays, in fleet order."""

    def __init__(
        self,
        profiles: Sequence[DeviceProfile],
        config: FleetConfig,
        *,
        always: Sequence[bool] | None = None,
    ) -> None:
        self.config = config
        # Phones eligible at every moment (the demo's own phone on the desk).
        self.always = np.array(
            always if always is not None else [False] * len(profiles), dtype=bool
        )
        self.timezone = np.array([p.timezone_hours for p in profiles], np.float64)
        self.start = np.array([p.charge_start_hour for p in profiles], np.float64)
        self.length = np.array([p.charge_hours for p in profiles], np.float64)
        self.unmetered = np.array([p.unmetered_prob for p in profiles], np.float64)
        self.network_key = np.array([p.network_key for p in profiles], np.uint64)
        self.idle_key = np.array([p.idle_key for p in profiles], np.uint64)

    def __len__(self) -> int:
        return len(self.timezone)

    def eligible(self, simulated_seconds: float, server_round: int) -> np.ndarray:
        """Which phones are idle, charging and unmetered at that moment (bools)."""
        if not self.config.eligibility:
            return np.ones(len(self), dtype=bool)
        # Hours since the phone's first charge start, in its local time.
        since = simulated_seconds / 3600.0 + self.timezone - self.start + 24 * 1000
        charging = np.mod(since, 24.0) < self.length
        night = np.floor_divide(since, 24.0).astype(np.int64).astype(np.uint64)
        unmetered = hashed_uniform(self.network_key, night) < self.unmetered
        idle = hashed_uniform(self.idle_key, server_round) < self.config.idle_prob
        return (charging & unmetered & idle) | self.always


# Where in a round a phone can drop out: before training (the phone never
# reports), or inside secure aggregation after advertising its keys (it never
# sends its shares) or after masking (its masked input never arrives).
DROPOUT_STAGES = ("training", "secagg-keys", "secagg-masking")


def drops_out(
    seed: int,
    server_round: int,
    client_id: str,
    rate: float,
    *,
    stage: str = "training",
) -> bool:
    """Whether a selected phone drops out of round `server_round` at `stage`.

    Each stage has its own stream `(seed, server_round, client_id, stage)`, so a
    phone's fate at one stage does not depend on the others'.
    """
    if stage not in DROPOUT_STAGES:
        raise ValueError(f"unknown dropout stage {stage!r}")
    if rate <= 0:
        return False
    # The training stage keeps the stream it always had (runs replay unchanged).
    key = "dropout" if stage == "training" else f"dropout/{stage}"
    return bool(numpy_rng(seed, server_round, client_id, key).random() < rate)


def work_seconds(
    profile: DeviceProfile, *, steps: int, model_bytes: int, step_seconds: float
) -> float:
    """Simulated seconds from receiving the task to the report arriving."""
    transfer = 2 * model_bytes / profile.bandwidth_bytes
    return steps * step_seconds * profile.speed_factor + transfer
