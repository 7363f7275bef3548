"""The sparse neighbour graph of SecAgg+ (Bell et al. 2020, ePrint 2020/704).

Bell et al. prove their bounds for random graphs of degree k = O(log n); like
their implementation notes and Flower's SecAgg+, fedtype takes a Harary graph
H(k, n) (the phones on a ring, each linked to the k/2 nearest on either side,
k-connected by construction) over a random order of the phones. The order is
drawn from `(seed, server_round)`, so the server and every phone (or every rank
of a simulation) derive the same graph from the same cohort.
"""

from __future__ import annotations

from collections.abc import Collection

from models.seeding import numpy_rng

# Client id -> its neighbours, sorted.
Graph = dict[str, tuple[str, ...]]


def neighbour_graph(
    client_ids: Collection[str], *, degree: int, seed: int, server_round: int
) -> Graph:
    """Each phone's `degree` neighbours on a randomly ordered Harary ring.

    Args:
        client_ids: the cohort (order does not matter; ids must be distinct).
        degree: even, or n - 1 for the complete graph.
    """
    ids = sorted(client_ids)
    n = len(ids)
    if len(set(ids)) != n:
        raise ValueError("client ids must be distinct")
    if not 1 <= degree <= n - 1:
        raise ValueError(f"degree must be in [1, {n - 1}], got {degree}")
    if degree == n - 1:
        return {u: tuple(v for v in ids if v != u) for u in ids}
    if degree % 2:
        raise ValueError(f"a ring graph needs an even degree below n - 1, got {degree}")
    order = numpy_rng(seed, server_round, "secagg-graph").permutation(n)
    ring = [ids[i] for i in order]
    graph: Graph = {}
    for position, u in enumerate(ring):
        near = (
            ring[(position + step) % n] for step in range(-degree // 2, degree // 2 + 1)
        )
        graph[u] = tuple(sorted(v for v in near if v != u))
    return graph
