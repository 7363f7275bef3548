"""How the phones' contributions are summed: in the clear, or under SecAgg+.

A transport opens a round for the accepted cohort, hands each phone the masker
it needs (none in the clear), and closes the round on the all-reduced total:

- `ClearSum`: float64 vectors summed as they are (DP without secure aggregation);
- `SecureSum`: SecAgg+ (Bonawitz et al. 2017; Bell et al. 2020): int64 masked
  vectors summed exactly, unmasked by the survivors' shares and checked
  (`coordinator.protections.sum_checks`): the server sees the survivors' sum only.

Real phones drop out during the protocol, not only before training, and SecAgg+
exists to survive that. The fleet's `dropout_rate` therefore applies at each
stage of the protocol too, as a draw from `(seed, server_round, client_id,
stage)` (`device_sim.profile.drops_out`, identical on every rank):

- "secagg-keys": the phone advertised its keys and dropped before sending its
  shares; it is not in U2, no neighbour masks with it, nothing to recover;
- "secagg-masking": the phone shared and masked, and dropped before its masked
  input arrived; the server asks its neighbours for shares of its mask key and
  removes the pairwise masks they added (it is "recovered").

The survivors' sum is unmasked exactly; when too few phones remain at a stage,
or some secret lacks t shares, the round is abandoned (`SecAggAbort`) with the
stage counts in the reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from coordinator.config import FederationConfig
from coordinator.protections.secagg_server import SecAggSession
from coordinator.protections.sum_checks import check_round_sum
from coordinator.round.robust import UpdateStats
from device_sim.executor import ClientSummary
from device_sim.profile import drops_out
from secagg import MaskerLike, PhonesFactory, SecAggAbort, SecAggConfig

# Bytes of a phone's SecAgg+ messages besides its masked vector: two public
# keys, and per neighbour a sealed pair of shares and one share in the unmask
# answer (docs/secagg.md, "Bytes up per phone").
_KEY_BYTES = 64
_NEIGHBOUR_BYTES = 172


@dataclass(frozen=True)
class SumShape:
    """What the server must know to check a round's sum: public settings."""

    counts: Sequence[int]  # the screened counts of the phones in the sum
    clip_norm: float  # the round's C
    size: int  # D, the update part's length
    appended: int  # values after it
    noise_stddev: float = 0.0  # one phone's noise share's stddev (0: none)


@dataclass(frozen=True)
class Opening:
    """What a transport opens a round with (public settings)."""

    config: FederationConfig
    server_round: int
    max_abs: float  # the public bound on every value a phone sends
    phones: PhonesFactory  # the round's phones, as the server talks to them


@dataclass
class ClearSum:
    """DP without secure aggregation: float64 vectors summed as they are."""

    survivors: list[str]
    dtype: torch.dtype = torch.float64
    reveals_norms: bool = True  # the screen may see each phone's norm
    mask_seconds: float = 0.0

    @staticmethod
    def view(summaries: Sequence[ClientSummary]) -> Sequence[ClientSummary]:
        """What the screen sees: the summaries as they are."""
        return summaries

    @classmethod
    def open(cls, cohort: Sequence[str], opening: Opening) -> ClearSum:
        """Every accepted phone sends its vector in the clear."""
        return cls(sorted(cohort))

    def masker(self, client_id: str) -> MaskerLike | None:
        """No mask in the clear."""
        return None

    def close(
        self, total: np.ndarray, *, shape: SumShape, config: FederationConfig
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The sum as summed, no figures."""
        return total, {}

    def bytes_up_per_phone(self, shape: SumShape) -> int | None:
        """None: each phone sent its update as summarised."""
        return None


@dataclass
class SecureSum:
    """One SecAgg+ round's session, and who dropped out where."""

    session: SecAggSession
    survivors: list[str]  # phones whose masked inputs are in the sum (U3)
    dropped_after_keys: list[str]
    dropped_after_masking: list[str]
    dtype: torch.dtype = torch.int64
    reveals_norms: bool = False  # no single norm, sketch or loss crosses
    started: float = field(default_factory=time.perf_counter)
    mask_seconds: float = 0.0  # this rank's phones only

    @classmethod
    def open(cls, cohort: Sequence[str], opening: Opening) -> SecureSum:
        """Key exchange and shares for `cohort`, with the stage dropouts drawn.

        Raises:
            SecAggAbort: too few phones shared their keys (reason with counts).
        """
        begun = time.perf_counter()
        opened = start_secagg(cohort, opening)
        opened.started = begun
        return opened

    @staticmethod
    def view(summaries: Sequence[ClientSummary]) -> list[UpdateStats]:
        """What the screen may see of each phone: no norm (0 passes)."""
        return [
            UpdateStats(s.client_id, s.num_examples, 0.0, s.finite, s.problem)
            for s in summaries
        ]

    def masker(self, client_id: str) -> MaskerLike:
        """The phone's masking state (its pairwise and self masks)."""
        return self.session.phones.masker(client_id)

    def close(
        self, total: np.ndarray, *, shape: SumShape, config: FederationConfig
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The survivors' float64 sum, checked, and the line's `secagg` figures.

        Raises:
            SecAggAbort: the sum could not be unmasked, or no honest cohort
                could have sent it (`SumCheckFailed`).
        """
        summed = self.unmask(total)
        check_round_sum(
            summed,
            shape.counts,
            config=config,
            spec=self.session.parameters.spec,
            clip_norm=shape.clip_norm,
            size=shape.size,
            noise_stddev=shape.noise_stddev,
        )
        return summed, {"secagg": {**self._metrics(shape), **self.counts()}}

    def bytes_up_per_phone(self, shape: SumShape) -> int:
        """A phone's masked vector, its keys, and its messages to neighbours."""
        parameters = self.session.parameters
        vector = math.ceil(self.session.bits / 8) * (shape.size + shape.appended)
        return vector + _KEY_BYTES + _NEIGHBOUR_BYTES * parameters.degree

    def _metrics(self, shape: SumShape) -> dict[str, Any]:
        parameters = self.session.parameters
        return {
            "seconds": time.perf_counter() - self.started,
            "mask_seconds": self.mask_seconds,  # this rank's phones only
            "bytes_up_per_phone": self.bytes_up_per_phone(shape),
            "degree": parameters.degree,
            "threshold": parameters.threshold,
        }

    def unmask(self, total: np.ndarray) -> np.ndarray:
        """The survivors' float64 sum from their masked sum, or `SecAggAbort`."""
        try:
            return self.session.unmask(total, survivors=self.survivors)
        except SecAggAbort as abort:
            raise SecAggAbort(f"{abort.reason}; {self._drops()}") from None

    def counts(self) -> dict[str, Any]:
        """The metrics line's dropout figures (after `unmask`)."""
        return {
            "dropped_after_keys": len(self.dropped_after_keys),
            "dropped_after_masking": len(self.dropped_after_masking),
            "recovered": len(self.session.server.recovered),
            "survivors": len(self.survivors),
        }

    def _drops(self) -> str:
        return (
            f"{len(self.dropped_after_keys)} dropped after the key exchange, "
            f"{len(self.dropped_after_masking)} after masking, "
            f"{len(self.survivors)} survived"
        )


def start_secagg(cohort: Sequence[str], opening: Opening) -> SecureSum:
    """Key exchange and shares for `cohort`, with the stage dropouts drawn.

    Raises:
        SecAggAbort: too few phones shared their keys (reason with the counts).
    """
    config, server_round = opening.config, opening.server_round
    rate = config.fleet.dropout_rate

    def drops(client_id: str, stage: str) -> bool:
        return drops_out(config.seed, server_round, client_id, rate, stage=stage)

    after_keys = [c for c in cohort if drops(c, "secagg-keys")]
    sharing = [c for c in cohort if c not in after_keys]
    after_masking = [c for c in sharing if drops(c, "secagg-masking")]
    survivors = [c for c in sharing if c not in after_masking]
    try:
        session = SecAggSession.setup(
            cohort,
            phones=opening.phones,
            config=SecAggConfig(bits=config.privacy.secagg_bits),
            seed=config.seed,
            server_round=server_round,
            max_abs=opening.max_abs,
            shared=sharing,
        )
    except SecAggAbort as abort:
        raise SecAggAbort(
            f"{abort.reason}; {len(after_keys)} of {len(cohort)} dropped after "
            "the key exchange"
        ) from None
    return SecureSum(session, survivors, after_keys, after_masking)


Transport = type[ClearSum] | type[SecureSum]
