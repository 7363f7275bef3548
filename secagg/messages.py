"""What crosses between a phone and the server in a SecAgg round, as types.

The rounds of Bonawitz et al. 2017 (figure 4), less the consistency check and
the signatures that only the actively malicious model needs:

0. phone -> server `PublicKeys`; the server sends each phone its neighbours'.
1. phone -> server `EncryptedShare`s, one per neighbour; the server relays them.
2. phone -> server `MaskedInput`: the only message that depends on the update.
3. server -> phone `UnmaskRequest`; phone -> server `UnmaskResponse`.

No message carries a plaintext update, a count or a private key in the clear,
so a test can check at run time what reached the coordinator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from secagg.shamir import Share


@dataclass(frozen=True)
class PublicKeys:
    """A phone's two X25519 public keys for this round (raw 32 bytes each)."""

    client_id: str
    mask_key: bytes  # c: agreed with each neighbour into a pairwise mask seed
    share_key: bytes  # s: agreed with each neighbour into a share-sealing key


@dataclass(frozen=True)
class EncryptedShare:
    """`sender`'s two Shamir shares for `recipient`, sealed; the server relays it."""

    sender: str
    recipient: str
    ciphertext: bytes  # AES-GCM of (self-mask share, mask-key share)


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """A phone's quantised update plus its masks, mod 2^bits."""

    client_id: str
    vector: np.ndarray  # (D,) int64 in [0, 2^bits)


@dataclass(frozen=True)
class UnmaskRequest:
    """The phones whose masked inputs are in the sum (U3 of Bonawitz et al.)."""

    survivors: frozenset[str]


@dataclass(frozen=True)
class UnmaskResponse:
    """A surviving phone's shares of its neighbours' secrets, one kind per owner.

    Self-mask shares for owners that survived, mask-key shares for owners that
    shared but did not upload; never both for one owner.
    """

    client_id: str
    self_mask_shares: Mapping[str, Share]
    mask_key_shares: Mapping[str, Share]
