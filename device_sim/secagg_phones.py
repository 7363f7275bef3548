"""The simulated phones of one SecAgg+ round, answering the server's messages.

Each phone is a `device_sim.secagg_client.SecAggClient`, whose secrets never
leave it unsealed; this object only routes the server's messages to them
(`secagg.PhoneSide`). Every rank builds the same phones from the round's public
parameters (their simulated secrets derive from `(seed, server_round,
client_id)`), so the phone that trained on a rank masks there.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from device_sim.secagg_client import Masker, SecAggClient
from secagg import (
    EncryptedShare,
    PublicKeys,
    RoundParameters,
    UnmaskRequest,
    UnmaskResponse,
)


class SecAggPhones:
    """A round's phones, keyed by client_id."""

    def __init__(self, clients: Mapping[str, SecAggClient]) -> None:
        self.clients = dict(sorted(clients.items()))
        self._maskers: dict[str, Masker] = {}

    @classmethod
    def for_round(
        cls, parameters: RoundParameters, cohort: Collection[str]
    ) -> SecAggPhones:
        """The phones of `cohort` (a `secagg.PhonesFactory`)."""
        return cls(
            {u: SecAggClient(client_id=u, parameters=parameters) for u in cohort}
        )

    def advertise(self) -> list[PublicKeys]:
        """Round 0: every phone's two public keys."""
        return [c.advertise() for c in self.clients.values()]

    def share(
        self, neighbours: Mapping[str, list[PublicKeys]], sharing: Collection[str]
    ) -> list[EncryptedShare]:
        """Round 1: the sealed shares of the phones in `sharing`."""
        return [
            m for u in sorted(sharing) for m in self.clients[u].share(neighbours[u])
        ]

    def receive(self, inbox: Mapping[str, list[EncryptedShare]]) -> None:
        """Round 2 begins: each phone keeps its shares and its masker."""
        for client_id, shares in inbox.items():
            self.receive_one(client_id, shares)

    def receive_one(self, client_id: str, shares: Sequence[EncryptedShare]) -> None:
        """One phone keeps the shares relayed to it, and its masker."""
        self._maskers[client_id] = self.clients[client_id].receive(shares)

    def masker(self, client_id: str) -> Masker:
        """The phone's masker."""
        return self._maskers[client_id]

    def masking(self) -> frozenset[str]:
        """The phones ready to mask."""
        return frozenset(self._maskers)

    def respond(
        self, request: UnmaskRequest, answering: Sequence[str]
    ) -> list[UnmaskResponse]:
        """Round 3: the answers of the phones still online."""
        return [self.clients[v].respond(request) for v in sorted(answering)]
