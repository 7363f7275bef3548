"""Selection of phones and the timeline of a round in simulated time.

Bonawitz et al. 2019 (arXiv 1902.01046): the server selects somewhat more eligible
devices than it needs (over-selection), sends them the model, and closes the round
once `clients_per_round` reports arrived or the reporting deadline passed; devices
that drop out never report and stragglers are not waited for. Which phones arrive
in time follows from their profiles alone, so the simulation trains only the
phones whose reports the server will use: the outcome is the same as training every
selected phone and discarding the late ones, at a fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.seeding import numpy_rng


@dataclass(frozen=True)
class Arrival:
    """When a selected phone's report would reach the server, if ever."""

    client_id: str
    seconds: float  # simulated seconds after the round started
    dropped: bool  # drops out and never reports


@dataclass(frozen=True)
class RoundPlan:
    """Who reports in time, who drops out or comes late, and when the round ends."""

    on_time: list[str]  # in arrival order; at most clients_per_round
    dropped: list[str]
    late: list[str]  # past the deadline, or after the round already closed
    closes_after: float  # simulated seconds from round start to its end


def select_clients(
    eligible: Sequence[str],
    *,
    count: int,
    seed: int,
    server_round: int,
    pinned: Sequence[str] = (),
) -> list[str]:
    """Up to `count` eligible phones, drawn from the stream `(seed, server_round)`.

    Eligible `pinned` phones (the demo's own phone) are always among them.
    """
    always = [c for c in pinned if c in set(eligible)][:count]
    rest = sorted(set(eligible) - set(always))
    draw = min(count - len(always), len(rest))
    rng = numpy_rng(seed, server_round, "selection")
    chosen: list[int] = (
        rng.choice(len(rest), size=draw, replace=False).tolist() if draw else []
    )
    return always + [rest[i] for i in sorted(chosen)]


def poisson_select(
    population: Sequence[str],
    eligible: Sequence[str],
    *,
    sampling_probability: float,
    seed: int,
    server_round: int,
) -> list[str]:
    """DP's sampling: each ELIGIBLE phone in, independently, with probability q.

    q is the round's q_t = clients_per_round / eligible_t, which the accountant
    charges the round at. One uniform draw per phone of the sorted population
    from the stream `(seed, server_round, "poisson")` (so that a phone's draw
    does not shift with who else is eligible); only eligible phones' draws
    count, and a phone's inclusion depends on no other phone's, as the
    accountant assumes. Eligibility comes from profiles and the clock, never
    from the text.
    """
    rng = numpy_rng(seed, server_round, "poisson")
    everyone = sorted(population)
    draws = rng.random(len(everyone))
    usable = set(eligible)
    return [
        c
        for c, u in zip(everyone, draws, strict=True)
        if u < sampling_probability and c in usable
    ]


def plan_round(arrivals: Sequence[Arrival], *, goal: int, deadline: float) -> RoundPlan:
    """Which reports the server uses: the first `goal` that beat the deadline."""
    dropped = [a.client_id for a in arrivals if a.dropped]
    reporting = sorted(
        (a for a in arrivals if not a.dropped), key=lambda a: (a.seconds, a.client_id)
    )
    in_time = [a for a in reporting if a.seconds <= deadline]
    on_time = in_time[:goal]
    late = [a.client_id for a in reporting if a not in on_time]
    if on_time and (len(on_time) == goal or len(in_time) == len(arrivals)):
        # The goal was met, or every selected phone reported: no need to wait.
        closes_after = on_time[-1].seconds
    elif not arrivals:
        closes_after = 0.0  # nobody was selected (DP's Poisson draw may be empty)
    else:
        closes_after = deadline
    return RoundPlan([a.client_id for a in on_time], dropped, late, closes_after)
