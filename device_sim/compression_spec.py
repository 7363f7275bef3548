"""What `LocalTrainingConfig.update_compression` accepts, free of torch so that
the configs (and the command line's help) load no model code; the compression
itself is `device_sim.compression`."""

from __future__ import annotations

from dataclasses import dataclass

from device_sim.config import FleetConfigError

# What `LocalTrainingConfig.update_compression` accepts (F in (0, 1]).
COMPRESSIONS = ("none", "int8", "topk:F")


@dataclass(frozen=True)
class Compression:
    """A parsed `update_compression` setting."""

    kind: str  # "none", "int8" or "topk"
    fraction: float = 1.0  # topk's share of each tensor's values sent


def parse_compression(spec: str) -> Compression:
    """`none`, `int8` or `topk:F` with F in (0, 1]; a `FleetConfigError` else."""
    if spec in ("none", "int8"):
        return Compression(spec)
    kind, _, value = spec.partition(":")
    try:
        fraction = float(value)
    except ValueError:
        fraction = float("nan")
    if kind != "topk" or not 0 < fraction <= 1:
        raise FleetConfigError(
            f"update_compression {spec!r}: one of none, int8, topk:F with F in (0, 1]"
        )
    return Compression("topk", fraction)
