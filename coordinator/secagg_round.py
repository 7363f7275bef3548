"""Secure aggregation inside a simulated round, with phones dropping out in it.

Real phones drop out during the protocol, not only before training, and SecAgg+
exists to survive that (Bonawitz et al. 2017, section 4; Bell et al. 2020). The
fleet's `dropout_rate` therefore applies at each stage of the protocol too, as a
draw from `(seed, server_round, client_id, stage)` (`device_sim.profile.drops_out`,
identical on every rank):

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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from coordinator.config import FederationConfig
from coordinator.secagg_server import SecAggSession
from device_sim.profile import drops_out
from device_sim.secagg import SecAggAbort, SecAggConfig


@dataclass
class SecAggRound:
    """One round's session, and who dropped out where."""

    session: SecAggSession
    survivors: list[str]  # phones whose masked inputs are in the sum (U3)
    dropped_after_keys: list[str]
    dropped_after_masking: list[str]

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


def start_secagg(
    cohort: Sequence[str],
    *,
    config: FederationConfig,
    server_round: int,
    max_abs: float,
) -> SecAggRound:
    """Key exchange and shares for `cohort`, with the stage dropouts drawn.

    Raises:
        SecAggAbort: too few phones shared their keys (reason with the counts).
    """
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
            config=SecAggConfig(bits=config.privacy.secagg_bits),
            seed=config.seed,
            server_round=server_round,
            max_abs=max_abs,
            shared=sharing,
        )
    except SecAggAbort as abort:
        raise SecAggAbort(
            f"{abort.reason}; {len(after_keys)} of {len(cohort)} dropped after "
            "the key exchange"
        ) from None
    return SecAggRound(session, survivors, after_keys, after_masking)
