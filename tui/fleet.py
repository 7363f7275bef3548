"""What the demo needs from a federated run, as one small interface.

The app talks to a `DemoFleet` only; `tui.sim_fleet.SimulationFleet` implements it
over `coordinator.run.simulation.Simulation` (in this process or in a child process),
and tests may give any object with these methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

from corpora.tokenizer import WordTokenizer
from tui.live_central import CentralView

# The client_id under which this device takes part in rounds.
THIS_PHONE = "this-phone"


@dataclass(frozen=True)
class PhoneFacts:
    """What the demo may show of a fleet phone: never its text."""

    client_id: str
    profile: list[tuple[str, str]]  # (name, value) rows of its device profile
    future_messages: int  # messages of its future text the metrics cover
    metrics: list[tuple[str, str]] | None  # (name, value) rows; None without text
    server_round: int = 0  # the round of the global model the metrics measure


class DemoFleet(Protocol):
    """A federated run the demo can show, train and type into."""

    name: str  # shown in the title bar (the run directory)
    tokenizer: WordTokenizer

    @property
    def server_round(self) -> int:
        """Rounds completed so far."""
        ...

    def records(self) -> list[dict[str, Any]]:
        """The metrics.jsonl lines of the rounds so far, oldest first."""
        ...

    def global_snapshot(self) -> nn.Module:
        """A copy of the current global model that no round will change."""
        ...

    def train_round(self) -> tuple[dict[str, Any], nn.Module]:
        """Run one round; its metrics line and a copy of the new global model."""
        ...

    def central_view(self) -> CentralView | None:
        """The live central baseline's lines and model (files: off the UI
        thread); None when the fleet trains none."""
        ...

    def model_at(self, server_round: int) -> nn.Module:
        """The global model after `server_round` (raises when it was not kept)."""
        ...

    def kept_rounds(self) -> list[int]:
        """Rounds whose global model `model_at` can return, ascending."""
        ...

    def my_messages(self) -> list[str]:
        """This phone's stored messages, oldest first."""
        ...

    def send(self, text: str) -> list[str]:
        """Store `text` in this phone's history (on disk); returns the history."""
        ...

    def personalize(self) -> tuple[nn.Module, int, int] | None:
        """The global model fine-tuned on this phone's history, the round it
        started from and the number of messages; None without history."""
        ...

    def phone_ids(self) -> list[str]:
        """The fleet's client_ids, this phone's included."""
        ...

    def phone_facts(self, client_id: str) -> PhoneFacts:
        """A phone's profile and the global model's metrics on its future text."""
        ...

    def close(self) -> None:
        """Stop whatever trains (a child process) and release files."""
        ...
