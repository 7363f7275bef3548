"""What the app shows first of a fleet and of a central run, read off the UI thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from corpora.tokenizer import WordTokenizer
from tui.fleet import DemoFleet
from tui.live_central import CentralView
from tui.sources import RoundHistory


@dataclass(frozen=True)
class CentralReference:
    """An existing central baseline (`--central RUN`): its model and held-out top-3."""

    model: nn.Module
    tokenizer: WordTokenizer
    top3: float | None


@dataclass(frozen=True)
class FleetView:
    """What the app shows first of a fleet, read off the UI thread."""

    fleet: DemoFleet
    global_model: nn.Module
    records: list[dict[str, Any]]
    messages: list[str]
    history: RoundHistory
    central: CentralView | None  # the live central baseline, if the fleet has one

    @classmethod
    def load(cls, fleet: DemoFleet) -> FleetView:
        """Read the fleet's current model, metrics lines and this phone's history."""
        history = RoundHistory(fleet.tokenizer, fleet.model_at, fleet.kept_rounds)
        history.prepare(fleet.server_round)
        return cls(
            fleet=fleet,
            global_model=fleet.global_snapshot(),
            records=fleet.records(),
            messages=fleet.my_messages(),
            history=history,
            central=fleet.central_view(),
        )
