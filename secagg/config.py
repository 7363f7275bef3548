"""Settings of a secure-aggregation round, and the error that abandons one.

SecAgg+ (Bell et al. 2020, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead", CCS, ePrint 2020/704) replaces the complete graph
of Bonawitz et al. 2017 ("Practical Secure Aggregation for Privacy-Preserving
Machine Learning", CCS) by a sparse one: each phone masks with, and shares its
secrets among, only k = O(log n) neighbours, and t of them suffice to recover a
secret.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from secagg.quantize import QuantizationSpec, choose_spec

# Widest modulus: a centred sum below 2^53 converts to float64 exactly.
MAX_BITS = 53
MIN_BITS = 8


class SecAggAbort(Exception):
    """The round is abandoned and nothing is unmasked; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SecAggConfig:
    """How one secure-aggregation round is run."""

    # Bits b of the modulus 2^b of masked values. 32 puts 4 bytes per coordinate
    # on the wire (a float32 update's size), lets the phone mask in wrapping
    # uint32 lanes, and lets an int64 all_reduce add up to 2^31 phones exactly.
    bits: int = 32
    # Neighbours k of each phone; None: 2 * ceil(log2 n), the O(log n) degree of
    # Bell et al. 2020, capped at n - 1 (the complete graph of Bonawitz et al.).
    # An odd k below n - 1 is rounded up to even (see `graph.neighbour_graph`).
    degree: int | None = None
    # Shares t that recover a secret; None: a majority of the k neighbours, so
    # that the holders of a phone's two kinds of share can never both reach t.
    threshold: int | None = None
    # Fewest uploads that may be unmasked: the sum of one phone is its update.
    min_survivors: int = 2

    def __post_init__(self) -> None:
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(
                f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {self.bits}"
            )
        if self.degree is not None and self.degree < 1:
            raise ValueError(f"degree must be >= 1 or None, got {self.degree}")
        if self.threshold is not None and self.threshold < 1:
            raise ValueError(f"threshold must be >= 1 or None, got {self.threshold}")
        if self.min_survivors < 1:
            raise ValueError(f"min_survivors must be >= 1, got {self.min_survivors}")

    def degree_for(self, num_clients: int) -> int:
        """Neighbours per phone in a cohort of `num_clients` phones."""
        if num_clients < 2:
            raise SecAggAbort(f"a cohort of {num_clients} phone(s) cannot mask")
        wanted = self.degree if self.degree is not None else default_degree(num_clients)
        if wanted >= num_clients - 1:
            return num_clients - 1
        # A ring graph below the complete one links k/2 phones on either side.
        return wanted + wanted % 2

    def threshold_for(self, num_clients: int) -> int:
        """Shares that recover a secret in a cohort of `num_clients` phones."""
        degree = self.degree_for(num_clients)
        threshold = self.threshold if self.threshold is not None else degree // 2 + 1
        if threshold > degree:
            raise ValueError(f"threshold {threshold} > degree {degree}")
        return threshold


def default_degree(num_clients: int) -> int:
    """2 * ceil(log2 n) neighbours (even, as a Harary graph wants), at most n - 1."""
    return min(2 * math.ceil(math.log2(num_clients)), num_clients - 1)


@dataclass(frozen=True)
class RoundParameters:
    """The parameters of one round, the same on every phone and on the server."""

    server_round: int
    # The run's replay seed: it orders the neighbour graph (public) and, in the
    # simulation only, derives each phone's keys and seeds (see `keys`).
    seed: int
    num_clients: int  # n: the phones that advertised keys (U1)
    degree: int  # k neighbours per phone
    threshold: int  # t shares recover a secret
    min_survivors: int  # fewest uploads that may be unmasked
    spec: QuantizationSpec


def round_parameters(
    config: SecAggConfig,
    *,
    num_clients: int,
    max_abs: float,
    seed: int,
    server_round: int,
) -> RoundParameters:
    """Resolve `config` for a cohort of `num_clients` phones with |x_i| <= max_abs."""
    return RoundParameters(
        server_round=server_round,
        seed=seed,
        num_clients=num_clients,
        degree=config.degree_for(num_clients),
        threshold=config.threshold_for(num_clients),
        min_survivors=config.min_survivors,
        spec=choose_spec(bits=config.bits, max_abs=max_abs, num_clients=num_clients),
    )
