"""The phone's side of a SecAgg+ round (Bonawitz et al. 2017; Bell et al. 2020).

A `SecAggClient` walks one phone through the rounds of `messages`: it advertises
two public keys, Shamir-shares its self-mask seed b_u and its mask private key
among its neighbours (sealed so that the server relays what it cannot read),
keeps the shares it receives, and answers the server's one unmask request. The
masking itself is a small frozen `Masker` (seeds and signs, a few hundred
bytes) that pickles cheaply to whichever worker trains the phone:

    y_u = q(x_u) + PRG(b_u) + sum_{v in N(u)} sign(u, v) * PRG(s_uv)  mod 2^b,

with sign(u, v) = +1 when u < v and -1 otherwise, so that each pair's two masks
cancel in the sum; s_uv is the X25519 agreement of u's and v's mask keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag

from secagg.config import RoundParameters, SecAggAbort
from secagg.keys import (
    KeyPair,
    mask_seed,
    seal,
    share_key,
    simulated_random_bytes,
    simulated_secret,
    unseal,
)
from secagg.messages import (
    EncryptedShare,
    MaskedInput,
    PublicKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.prg import apply_masks
from secagg.quantize import QuantizationSpec, quantize
from secagg.shamir import Share, split_secret

# Bytes of one serialised share of a 32-byte secret (x, then 3 field values).
_SHARE_BYTES = 4 + 3 * 16


@dataclass(frozen=True)
class Masker:
    """What a phone needs to mask its update, and nothing it needs afterwards."""

    client_id: str
    spec: QuantizationSpec
    self_seed: bytes  # b_u
    pairwise: tuple[tuple[bytes, int], ...]  # (s_uv, sign(u, v)) per neighbour

    def mask(self, x: np.ndarray, *, clip: bool = True) -> MaskedInput:
        """The masked, quantised update of the float64 vector `x`, (D,); a
        hostile phone masks without `clip`ping to the range."""
        acc = quantize(x, self.spec, clip=clip)
        apply_masks(acc, [(self.self_seed, 1), *self.pairwise])
        if self.spec.bits < 8 * acc.itemsize:
            np.bitwise_and(acc, self.spec.modulus_mask, out=acc)
        return MaskedInput(self.client_id, acc.astype(np.int64))


class SecAggClient:
    """One phone in one round; its secrets never leave it unsealed."""

    __slots__ = (
        "client_id",
        "_parameters",
        "_mask_keys",
        "_share_keys",
        "_self_seed",
        "_neighbours",
        "_held",
        "_answered",
    )

    def __init__(self, *, client_id: str, parameters: RoundParameters) -> None:
        self.client_id = client_id
        self._parameters = parameters
        secret = _simulated(parameters, client_id)
        self._mask_keys = KeyPair.from_private(secret("mask-key"))
        self._share_keys = KeyPair.from_private(secret("share-key"))
        self._self_seed = secret("self-mask")
        self._neighbours: dict[str, PublicKeys] = {}
        # owner -> (share of its b, share of its mask private key)
        self._held: dict[str, tuple[Share, Share]] = {}
        self._answered = False

    def __repr__(self) -> str:
        return f"SecAggClient({self.client_id!r})"

    def advertise(self) -> PublicKeys:
        """Round 0: this round's two public keys."""
        return PublicKeys(
            self.client_id, self._mask_keys.public, self._share_keys.public
        )

    def share(self, neighbours: Sequence[PublicKeys]) -> list[EncryptedShare]:
        """Round 1: b_u and the mask private key, shared among `neighbours`, sealed."""
        self._neighbours = {keys.client_id: keys for keys in neighbours}
        if self.client_id in self._neighbours:
            raise SecAggAbort(f"{self.client_id} was given itself as a neighbour")
        ids = sorted(self._neighbours)
        xs = list(range(1, len(ids) + 1))
        secret = _simulated(self._parameters, self.client_id)
        threshold = self._parameters.threshold
        b_shares = split_secret(
            self._self_seed,
            threshold=threshold,
            xs=xs,
            random_bytes=simulated_random_bytes(secret("shamir"), "self-mask"),
        )
        key_shares = split_secret(
            self._mask_keys.private,
            threshold=threshold,
            xs=xs,
            random_bytes=simulated_random_bytes(secret("shamir"), "mask-key"),
        )
        sealed = []
        for v, b_share, key_share in zip(ids, b_shares, key_shares, strict=True):
            key = share_key(
                self._share_keys.private,
                self._neighbours[v].share_key,
                sender=self.client_id,
                recipient=v,
            )
            plaintext = b_share.to_bytes() + key_share.to_bytes()
            ciphertext = seal(key, plaintext, _associated(self.client_id, v))
            sealed.append(EncryptedShare(self.client_id, v, ciphertext))
        return sealed

    def receive(self, shares: Sequence[EncryptedShare]) -> Masker:
        """Round 2 begins: keep the neighbours' shares; mask with those who sent."""
        for message in shares:
            owner = message.sender
            if message.recipient != self.client_id or owner not in self._neighbours:
                raise SecAggAbort(f"{self.client_id} got a share from {owner}")
            key = share_key(
                self._share_keys.private,
                self._neighbours[owner].share_key,
                sender=owner,
                recipient=self.client_id,
            )
            associated = _associated(owner, self.client_id)
            try:
                plaintext = unseal(key, message.ciphertext, associated)
            except InvalidTag as error:
                raise SecAggAbort(f"the share from {owner} failed to open") from error
            self._held[owner] = (
                Share.from_bytes(plaintext[:_SHARE_BYTES]),
                Share.from_bytes(plaintext[_SHARE_BYTES:]),
            )
        pairwise = tuple(
            (
                mask_seed(self._mask_keys.private, self._neighbours[v].mask_key),
                1 if self.client_id < v else -1,
            )
            for v in sorted(self._held)
        )
        return Masker(self.client_id, self._parameters.spec, self._self_seed, pairwise)

    def respond(self, request: UnmaskRequest) -> UnmaskResponse:
        """Round 3: one kind of share per neighbour, and only once per round."""
        if self._answered:
            raise SecAggAbort(f"{self.client_id} already answered an unmask request")
        minimum = self._parameters.min_survivors
        if len(request.survivors) < minimum:
            raise SecAggAbort(
                f"{len(request.survivors)} survivors < the minimum {minimum}"
            )
        if self.client_id not in request.survivors:
            raise SecAggAbort(f"{self.client_id} is not among the survivors")
        self._answered = True
        self_mask, mask_key = {}, {}
        for owner, (b_share, key_share) in self._held.items():
            if owner in request.survivors:
                self_mask[owner] = b_share
            else:
                mask_key[owner] = key_share
        return UnmaskResponse(self.client_id, self_mask, mask_key)


def _simulated(parameters: RoundParameters, client_id: str) -> Callable[[str], bytes]:
    """The phone's replayable stand-in for os.urandom(32), by purpose."""

    def secret(purpose: str) -> bytes:
        return simulated_secret(
            parameters.seed, parameters.server_round, client_id, purpose
        )

    return secret


def _associated(sender: str, recipient: str) -> bytes:
    """AES-GCM associated data: a ciphertext moved to another pair fails to open."""
    return f"{sender}->{recipient}".encode()
