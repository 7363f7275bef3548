"""Snapshot tests of the demo's layout (pytest-textual-snapshot), deterministic:
a fixed fleet (seeded models, made-up metrics lines, no training), paused, no
clock, so that only a change of the layout changes them.

Update after an intended change with `pytest tests/test_tui_snapshots.py
--snapshot-update`, then look at the SVGs under tests/__snapshots__/.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from textual.pilot import Pilot
from textual.widgets import Input
from torch import nn

from corpora.tokenizer import WordTokenizer
from models.config import ModelConfig
from models.model import NextWordModel
from models.rundir import RunDirError
from tui.app import FedtypeApp
from tui.fleet import PhoneFacts
from tui.live_central import CentralView


def seeded_model(tokenizer: WordTokenizer, seed: int) -> NextWordModel:
    """A tiny untrained model whose weights depend on `seed` only."""
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size, embed_dim=16, hidden_dim=16, max_len=16
    )
    return NextWordModel(config).eval()


def record(server_round: int) -> dict[str, Any]:
    """A made-up metrics line of a round."""
    return {
        "server_round": server_round,
        "selected": 13,
        "reported": 10 + server_round % 3,
        "dropped": 3 - server_round % 3,
        "rejected": 0,
        "bytes_down": 70_800_000,
        "bytes_up": 54_400_000,
        "bytes_total": 125_200_000 * server_round,
        "heldout": {
            "top1": 0.03 + 0.004 * server_round,
            "top3": 0.08 + 0.006 * server_round,
            "keystroke_savings": 0.25 + 0.005 * server_round,
            "perplexity": 1200.0 - 20 * server_round,
        },
    }


def central_record(server_round: int) -> dict[str, Any]:
    """A made-up metrics line of the live central baseline after a round."""
    return {
        "server_round": server_round,
        "epoch": 0.05 * server_round,
        "bytes_total": 0,
        "heldout": {"top3": 0.1 + 0.009 * server_round, "perplexity": 900.0},
    }


class StaticFleet:
    """A `DemoFleet` frozen after 12 rounds: nothing trains, nothing changes."""

    name = "runs/demo"

    def __init__(self, tokenizer: WordTokenizer) -> None:
        self.tokenizer = tokenizer
        self.server_round = 12
        self._messages: list[str] = []

    def records(self) -> list[dict[str, Any]]:
        return [record(r) for r in range(1, self.server_round + 1)]

    def global_snapshot(self) -> nn.Module:
        return seeded_model(self.tokenizer, self.server_round)

    def train_round(self) -> tuple[dict[str, Any], nn.Module]:
        raise AssertionError("a snapshot test never trains")

    def model_at(self, server_round: int) -> nn.Module:
        return seeded_model(self.tokenizer, server_round)

    def central_view(self) -> CentralView:
        return CentralView(
            records=[central_record(r) for r in range(1, self.server_round + 1)],
            model=seeded_model(self.tokenizer, 1000 + self.server_round),
            unigram={"top3": 0.09, "top1": 0.04, "keystroke_savings": 0.2},
            users=5000,
            text_bytes=38_000_000,
        )

    def kept_rounds(self) -> list[int]:
        return [1, 5, 10, 11, 12]

    def my_messages(self) -> list[str]:
        return list(self._messages)

    def send(self, text: str) -> list[str]:
        self._messages.append(text)
        return self.my_messages()

    def personalize(self) -> tuple[nn.Module, int, int] | None:
        if not self._messages:
            return None
        return seeded_model(self.tokenizer, 99), self.server_round, len(self._messages)

    def phone_ids(self) -> list[str]:
        return ["this-phone", "00948b84-ded4-45f2", "01281d46-4a17-4981"]

    def phone_facts(self, client_id: str) -> PhoneFacts:
        return PhoneFacts(client_id, [("time zone", "UTC+9")], 10, [("top-3", "9%")])

    def close(self) -> None:
        pass


@pytest.fixture
def static_fleet(tokenizer: WordTokenizer) -> StaticFleet:
    return StaticFleet(tokenizer)


async def settle(pilot: Pilot) -> None:
    """Let the panels that follow a typing pause catch up, with the text field's
    cursor held steady: a blinking cursor would be caught on or off at random."""
    for field in pilot.app.query(Input):
        field.cursor_blink = False
    await pilot.pause(0.3)
    await pilot.pause()


def test_snapshot_demo_80x24_typing(snap_compare, static_fleet):
    # Prepare
    app = FedtypeApp(static_fleet, autostart=False)

    # Execute / Assert
    assert snap_compare(
        app, press=[*"how are y"], terminal_size=(80, 24), run_before=settle
    )


def test_snapshot_demo_100x40_this_phone_shown(snap_compare, static_fleet):
    # Prepare
    static_fleet.send("see you at the lake tonight")
    app = FedtypeApp(static_fleet, autostart=False)

    async def personal_ready(pilot: Pilot) -> None:
        while "personal" not in app.sources.available():
            await pilot.pause(0.05)
        await pilot.press("f7", *"see you ")
        await settle(pilot)

    # Execute / Assert
    assert snap_compare(app, terminal_size=(100, 40), run_before=personal_ready)


def test_snapshot_unusable_run_offers_fresh_fleet(snap_compare, static_fleet):
    # Prepare
    def broken() -> StaticFleet:
        raise RunDirError("runs/demo/config.json: unreadable (Expecting value)")

    app = FedtypeApp(
        broken, fresh_factory=lambda: static_fleet, fresh_where="runs/demo-2"
    )

    async def problem_shown(pilot: Pilot) -> None:
        await pilot.pause(0.3)

    # Execute / Assert
    assert snap_compare(app, terminal_size=(80, 24), run_before=problem_shown)
