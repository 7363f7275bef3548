"""`fedtype demo --engine onnx`: the strip from the exported model, as a phone runs it.

`OnnxFleet` wraps any `DemoFleet`: whenever a global model reaches the app (the
fleet opens, a round lands) it is exported with `models.export` into one folder
and handed on as `models.onnx_engine.OnnxNextWordModel`, so the joined phone's
global strip comes from onnxruntime on the graph a phone would download. Both
calls run in the app's training worker, never on the UI thread. The other
sources (this phone's fine-tune, earlier rounds, the central baseline) stay on
PyTorch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from models.export import export_model
from models.model import NextWordModel
from models.onnx_engine import load_exported
from tui.fleet import DemoFleet, PhoneFacts
from tui.live_central import CentralView


class OnnxFleet:
    """A `DemoFleet` whose global models arrive exported to ONNX."""

    def __init__(self, fleet: DemoFleet, *, out: Path) -> None:
        """Args:
        fleet: The fleet that trains.
        out: The export directory, replaced at each round (RUN/export).
        """
        self.fleet = fleet
        self.out = out
        self.name = fleet.name
        self.tokenizer = fleet.tokenizer

    def _exported(self, model: nn.Module) -> nn.Module:
        if not isinstance(model, NextWordModel):
            raise TypeError(f"cannot export a {type(model).__name__}")
        source = {"run": self.name, "server_round": self.fleet.server_round}
        export_model(model, self.tokenizer, self.out, source=source)
        return load_exported(self.out).model

    @property
    def server_round(self) -> int:
        return self.fleet.server_round

    def global_snapshot(self) -> nn.Module:
        return self._exported(self.fleet.global_snapshot())

    def train_round(self) -> tuple[dict[str, Any], nn.Module]:
        record, model = self.fleet.train_round()
        return record, self._exported(model)

    def records(self) -> list[dict[str, Any]]:
        return self.fleet.records()

    def central_view(self) -> CentralView | None:
        return self.fleet.central_view()

    def model_at(self, server_round: int) -> nn.Module:
        return self.fleet.model_at(server_round)

    def kept_rounds(self) -> list[int]:
        return self.fleet.kept_rounds()

    def my_messages(self) -> list[str]:
        return self.fleet.my_messages()

    def send(self, text: str) -> list[str]:
        return self.fleet.send(text)

    def personalize(self) -> tuple[nn.Module, int, int] | None:
        return self.fleet.personalize()

    def phone_ids(self) -> list[str]:
        return self.fleet.phone_ids()

    def phone_facts(self, client_id: str) -> PhoneFacts:
        return self.fleet.phone_facts(client_id)

    def close(self) -> None:
        self.fleet.close()
