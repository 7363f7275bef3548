"""The server's side of a SecAgg+ round, and a driver for one simulated round.

Bonawitz et al. 2017 ("Practical Secure Aggregation for Privacy-Preserving
Machine Learning", CCS) with the sparse neighbour graph of SecAgg+ (Bell et al.
2020, ePrint 2020/704). The server holds the public keys and the graph, relays
sealed shares it cannot read, and, given the modular sum of the survivors'
masked inputs, asks the survivors for shares: of the self-mask seed b_u of each
survivor u, and of the mask private key of each phone that shared but never
uploaded (so that it can recompute and remove the pairwise masks its surviving
neighbours added). It needs t shares of every such secret, or it abandons the
round with `SecAggAbort` and unmasks nothing. No phone has both secrets asked
for: the request names the survivors once, and each phone answers once.

The caller sums the masked vectors (`modular_sum`, or an int64 all_reduce):
values lie in [0, 2^b), so up to 2^(63 - b) of them add exactly in int64.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from secagg.config import (
    RoundParameters,
    SecAggAbort,
    SecAggConfig,
    round_parameters,
)
from secagg.graph import Graph, neighbour_graph
from secagg.keys import KeyPair, mask_seed
from secagg.messages import (
    EncryptedShare,
    PublicKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.phones import MaskerLike, PhonesFactory, PhoneSide
from secagg.prg import apply_masks
from secagg.quantize import dequantize, lane_dtype
from secagg.shamir import Share, reconstruct_secret


def modular_sum(vectors: Iterable[np.ndarray], bits: int) -> np.ndarray:
    """The sum mod 2^bits of integer vectors, as int64 in [0, 2^bits).

    Exact for any number of vectors: the running sum wraps in uint64 lanes, and
    2^bits divides 2^64. Vectors may be consumed one at a time (a generator).
    """
    total: np.ndarray | None = None
    for vector in vectors:
        lanes = vector.astype(np.uint64, copy=False)
        if total is None:
            total = lanes.copy()
        elif lanes.shape != total.shape:
            raise ValueError(f"shape {lanes.shape} != {total.shape}")
        else:
            np.add(total, lanes, out=total)
    if total is None:
        raise ValueError("no vectors to sum")
    np.bitwise_and(total, np.uint64((1 << bits) - 1), out=total)
    return total.astype(np.int64)


class SecAggServer:
    """The coordinator in one round: keys, graph, relay, unmasking."""

    __slots__ = ("parameters", "graph", "recovered", "_keys", "_shared", "_done")

    def __init__(self, *, parameters: RoundParameters) -> None:
        self.parameters = parameters
        self.graph: Graph = {}
        # The phones that shared but never uploaded whose masks were removed.
        self.recovered: tuple[str, ...] = ()
        self._keys: dict[str, PublicKeys] = {}
        self._shared: frozenset[str] = frozenset()  # U2: phones that sent shares
        self._done = False

    def collect_keys(self, keys: Sequence[PublicKeys]) -> dict[str, list[PublicKeys]]:
        """Round 0: the graph over the advertisers, and each one's neighbours' keys."""
        self._keys = {k.client_id: k for k in keys}
        if len(self._keys) != self.parameters.num_clients:
            raise ValueError(
                f"{len(self._keys)} phones advertised keys, the round's parameters "
                f"were resolved for {self.parameters.num_clients}"
            )
        self.graph = neighbour_graph(
            self._keys,
            degree=self.parameters.degree,
            seed=self.parameters.seed,
            server_round=self.parameters.server_round,
        )
        return {u: [self._keys[v] for v in vs] for u, vs in self.graph.items()}

    def relay(
        self, shares: Sequence[EncryptedShare]
    ) -> dict[str, list[EncryptedShare]]:
        """Round 1: the senders form U2; each gets the sealed shares sent to it."""
        for message in shares:
            sender, recipient = message.sender, message.recipient
            if recipient not in self.graph.get(sender, ()):
                raise SecAggAbort(f"{sender} sent a share to non-neighbour {recipient}")
        self._shared = frozenset(m.sender for m in shares)
        self._require(len(self._shared), "phones shared their keys")
        inbox: dict[str, list[EncryptedShare]] = {u: [] for u in sorted(self._shared)}
        for message in sorted(shares, key=lambda m: (m.recipient, m.sender)):
            if message.recipient in inbox:
                inbox[message.recipient].append(message)
        return inbox

    def unmask_request(self, survivors: Collection[str]) -> UnmaskRequest:
        """Round 3: name the phones whose masked inputs are in the sum (U3)."""
        unknown = set(survivors) - self._shared
        if unknown:
            raise ValueError(f"survivors that never shared: {sorted(unknown)}")
        self._require(len(set(survivors)), "phones uploaded")
        return UnmaskRequest(frozenset(survivors))

    def unmask(
        self,
        total: np.ndarray,
        *,
        request: UnmaskRequest,
        responses: Sequence[UnmaskResponse],
    ) -> np.ndarray:
        """The float64 sum of the survivors' inputs from their masked sum.

        Args:
            total: the survivors' masked vectors summed, congruent mod 2^b to
                their sum (reduced or not), (D,) int64.
            request: this round's one request; `responses` answer it.
        Raises:
            SecAggAbort: some needed secret has fewer than t shares (nothing is
                reconstructed then), or a reconstructed key is wrong.
        """
        if self._done:
            raise SecAggAbort("this round was already unmasked")
        self._done = True
        survivors = request.survivors
        dropped = self._shared - survivors
        b_shares, key_shares = self._gather(responses, survivors, dropped)
        # A dropped phone with no surviving neighbour left no mask in the sum.
        recover = sorted(u for u in dropped if set(self.graph[u]) & survivors)
        self._check_counts(b_shares, sorted(survivors), "self-mask seed")
        self._check_counts(key_shares, recover, "mask key")
        masks = [
            (self._secret(b_shares[u], u, "self-mask seed"), -1) for u in survivors
        ]
        for u in recover:
            private = self._mask_key(u, key_shares[u])
            for v in self.graph[u]:
                if v in survivors:
                    # v added sign(v, u) * PRG(s_vu); take it away.
                    sign = -1 if v < u else 1
                    masks.append((mask_seed(private, self._keys[v].mask_key), sign))
        spec = self.parameters.spec
        total64 = np.asarray(total).astype(np.int64, copy=False)
        acc = np.bitwise_and(total64, spec.modulus_mask).astype(lane_dtype(spec.bits))
        apply_masks(acc, masks)
        self.recovered = tuple(recover)
        return dequantize(acc, spec)

    def _gather(
        self,
        responses: Sequence[UnmaskResponse],
        survivors: frozenset[str],
        dropped: frozenset[str],
    ) -> tuple[dict[str, list[Share]], dict[str, list[Share]]]:
        """Shares by owner, from survivors that are neighbours of the owner."""
        b_shares: dict[str, list[Share]] = {}
        key_shares: dict[str, list[Share]] = {}
        for response in responses:
            v = response.client_id
            if v not in survivors:
                raise SecAggAbort(f"{v} answered but is not a survivor")
            kinds: list[tuple[Mapping[str, Share], frozenset[str], dict]] = [
                (response.self_mask_shares, survivors, b_shares),
                (response.mask_key_shares, dropped, key_shares),
            ]
            for given, allowed, into in kinds:
                for owner, share in given.items():
                    if owner not in allowed or v not in self.graph[owner]:
                        raise SecAggAbort(f"{v} sent an unexpected share of {owner}")
                    into.setdefault(owner, []).append(share)
        return b_shares, key_shares

    def _check_counts(
        self, shares: Mapping[str, list[Share]], owners: Sequence[str], what: str
    ) -> None:
        threshold = self.parameters.threshold
        short = [u for u in owners if len(shares.get(u, ())) < threshold]
        if short:
            u = short[0]
            raise SecAggAbort(
                f"{len(shares.get(u, ()))} of the {threshold} shares needed for the "
                f"{what} of {u} ({len(short)} such secret(s) short)"
            )

    def _secret(self, shares: list[Share], owner: str, what: str) -> bytes:
        chosen = sorted(shares, key=lambda s: s.x)[: self.parameters.threshold]
        try:
            return reconstruct_secret(chosen)
        except ValueError as error:
            raise SecAggAbort(f"the {what} of {owner} did not reconstruct") from error

    def _mask_key(self, owner: str, shares: list[Share]) -> bytes:
        """The dropped phone's mask private key, checked against its public key."""
        private = self._secret(shares, owner, "mask key")
        if KeyPair.from_private(private).public != self._keys[owner].mask_key:
            raise SecAggAbort(f"the mask key of {owner} does not match its public key")
        return private

    def _require(self, count: int, what: str) -> None:
        minimum = max(self.parameters.min_survivors, self.parameters.threshold)
        if count < minimum:
            raise SecAggAbort(f"only {count} {what}, fewer than {minimum}")


@dataclass
class SecAggSession:
    """One round driven by the server against the round's phones (in memory).

    `setup` runs rounds 0 and 1 (keys and shares) for the cohort, the phones
    built by `phones` (a `secagg.PhonesFactory`: the simulation's
    `device_sim.secagg_phones.SecAggPhones.for_round`); `unmask` runs round 3
    against a sum the caller formed. Only messages cross between the two
    sides. Deterministic given `(seed, server_round)`, so every rank of a
    distributed simulation can build the same session.
    """

    parameters: RoundParameters
    server: SecAggServer
    phones: PhoneSide

    @classmethod
    def setup(
        cls,
        client_ids: Collection[str],
        *,
        phones: PhonesFactory,
        config: SecAggConfig,
        seed: int,
        server_round: int,
        max_abs: float,
        shared: Collection[str] | None = None,
    ) -> SecAggSession:
        """Key exchange and share distribution for the phones in `client_ids`.

        Args:
            client_ids: the phones that advertise keys (U1); one that dropped
                before the key exchange is simply left out.
            phones: builds the round's phones from its public parameters.
            max_abs: the public bound on |x_i| of every phone's input.
            shared: the phones that go on to send their shares (default all);
                the others drop after advertising.
        """
        parameters = round_parameters(
            config,
            num_clients=len(client_ids),
            max_abs=max_abs,
            seed=seed,
            server_round=server_round,
        )
        cohort = phones(parameters, client_ids)
        server = SecAggServer(parameters=parameters)
        neighbours = server.collect_keys(cohort.advertise())
        sharing = sorted(client_ids if shared is None else shared)
        inbox = server.relay(cohort.share(neighbours, sharing))
        cohort.receive(inbox)
        return cls(parameters, server, cohort)

    @property
    def bits(self) -> int:
        """b: masked values and sums are taken mod 2^b."""
        return self.parameters.spec.bits

    @property
    def maskers(self) -> dict[str, MaskerLike]:
        """The phones that shared (U2) and their maskers."""
        return {u: self.phones.masker(u) for u in sorted(self.phones.masking())}

    def unmask(
        self,
        total: np.ndarray,
        *,
        survivors: Collection[str],
        responders: Collection[str] | None = None,
    ) -> np.ndarray:
        """The float64 sum of the survivors' inputs, or `SecAggAbort`.

        Args:
            total: the survivors' masked vectors summed (mod 2^b or not).
            survivors: the phones whose masked inputs are in `total`.
            responders: the survivors still online to send shares (default all).
        """
        request = self.server.unmask_request(survivors)
        answering = survivors if responders is None else responders
        responses = self.phones.respond(request, sorted(answering))
        return self.server.unmask(total, request=request, responses=responses)
