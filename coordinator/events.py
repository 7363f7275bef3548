"""Progress events of a federated run, for callbacks (CLI progress bar, TUI, tests).

Library code never prints: `run_round` and `Simulation` call an optional
`on_event(event)` with one of these small records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RoundStarted:
    """Phones were selected; `training` of them will report in time and train."""

    server_round: int
    eligible: int
    selected: int
    training: int


@dataclass(frozen=True)
class ClientDone:
    """One phone finished its local training (`done` of `total` this round).

    Its count and loss are None under secure aggregation: the server learns
    them only inside the round's masked sum.
    """

    server_round: int
    client_id: str
    done: int
    total: int
    num_examples: int | None
    train_loss: float | None


@dataclass(frozen=True)
class EvaluationStarted:
    """The global model after `server_round` is being evaluated; `tokens_total`
    targets the fleet has trained on, this round's included (what a baseline
    paced by the fleet, the demo's live central, can catch up to meanwhile)."""

    server_round: int
    tokens_total: int


@dataclass(frozen=True)
class RoundFinished:
    """A round is complete and saved; `metrics` is its metrics.jsonl line."""

    server_round: int
    metrics: dict[str, Any]


@dataclass(frozen=True)
class BudgetSpent:
    """The privacy budget stops the run after `server_round`; `reason` says why."""

    server_round: int
    reason: str


Event = RoundStarted | ClientDone | EvaluationStarted | RoundFinished | BudgetSpent
EventCallback = Callable[[Event], None]


def emit(on_event: EventCallback | None, event: Event) -> None:
    """Call `on_event` with `event` when there is a callback."""
    if on_event is not None:
        on_event(event)
