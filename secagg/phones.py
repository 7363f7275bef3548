"""What the server may ask of a round's phones, as messages (no phone internals).

The server's side (`coordinator.protections.secagg_server.SecAggSession`)
drives the rounds of the protocol against any `PhoneSide`: the simulation's phones
(`device_sim.secagg_phones.SecAggPhones`), or a test's. Only messages cross:
public keys, sealed shares, the unmask request and answers, and, on the phone's
own rank, the masker each phone masks its contribution with.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

import numpy as np

from secagg.config import RoundParameters
from secagg.messages import (
    EncryptedShare,
    MaskedInput,
    PublicKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.quantize import QuantizationSpec


class MaskerLike(Protocol):
    """A phone's masking state for one round: what it masks its vector with."""

    @property
    def spec(self) -> QuantizationSpec:
        """The round's public quantisation."""
        ...

    def mask(self, x: np.ndarray, *, clip: bool = True) -> MaskedInput:
        """The masked, quantised (D,) vector."""
        ...


class PhoneSide(Protocol):
    """The phones of one SecAgg+ round, as the server talks to them."""

    def advertise(self) -> list[PublicKeys]:
        """Round 0: every phone's two public keys."""
        ...

    def share(
        self, neighbours: Mapping[str, list[PublicKeys]], sharing: Collection[str]
    ) -> list[EncryptedShare]:
        """Round 1: the sealed shares of the phones in `sharing`."""
        ...

    def receive(self, inbox: Mapping[str, list[EncryptedShare]]) -> None:
        """Round 2 begins: each phone keeps the shares relayed to it."""
        ...

    def masker(self, client_id: str) -> MaskerLike:
        """The phone's masker (on the rank that holds its update)."""
        ...

    def masking(self) -> frozenset[str]:
        """The phones ready to mask (those that received their shares)."""
        ...

    def respond(
        self, request: UnmaskRequest, answering: Sequence[str]
    ) -> list[UnmaskResponse]:
        """Round 3: the answers of the phones still online."""
        ...


# The phones of a round, built from its public parameters and the cohort.
PhonesFactory = Callable[[RoundParameters, Collection[str]], PhoneSide]
