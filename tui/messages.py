"""Messages the training side posts to the app: small dataclasses, nothing else.

Training runs off the UI thread (a worker thread or a child process); whatever runs
it reports only through these, so the app cannot tell which it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message
from torch import nn

from tui.live_central import CentralView


@dataclass
class RoundTrained(Message):
    """A round finished: its metrics.jsonl line, a copy of the new global model
    and the live central baseline after its catch-up (None without one)."""

    server_round: int
    record: dict[str, Any]
    model: nn.Module
    central: CentralView | None = None


@dataclass
class TrainingStatus(Message):
    """What the trainer is doing now, in a few words ("training round 3")."""

    text: str


@dataclass
class TrainingEnded(Message):
    """The last round (`--rounds N`) is trained: nothing is left to pause."""

    text: str


@dataclass
class TrainingFailed(Message):
    """A round raised; training stops and the app says why."""

    error: str


@dataclass
class PersonalModelReady(Message):
    """The global model fine-tuned on this phone's history is ready."""

    model: nn.Module
    server_round: int
    num_messages: int


@dataclass
class MessageStored(Message):
    """A sent message is on this phone's storage; `messages` is its history."""

    messages: list[str]


@dataclass
class Notice(Message):
    """Something the user should know that is not an error of training."""

    text: str
