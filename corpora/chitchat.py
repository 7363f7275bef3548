"""The Chit-Chat corpus (1,315 real people, MIT) read from the installed wheel.

The `chitchat-dataset` package ships `dataset.json` inside itself, so nothing is
downloaded: conversations hold rounds of messages, each with its `sender` and an
ISO-8601 `timestamp`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources

from corpora.messages import CorpusError, Message


def chitchat_path() -> str:
    """Path of `dataset.json` inside the installed `chitchat_dataset` package."""
    try:
        return str(resources.files("chitchat_dataset").joinpath("dataset.json"))
    except ModuleNotFoundError as error:
        raise CorpusError(
            "the package chitchat-dataset==0.9.0 is not installed", path="chitchat"
        ) from error


def parse_timestamp(value: str) -> float:
    """Seconds since the epoch of an ISO-8601 string; without a zone it is UTC.

    Reading zoneless times as UTC rather than local time keeps the order of a
    corpus, and so its splits, the same on every machine.
    """
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def load_chitchat(path: str | None = None) -> list[Message]:
    """Every message of the Chit-Chat corpus, in file order."""
    path = path or chitchat_path()
    try:
        with open(path, encoding="utf-8") as handle:
            conversations = json.load(handle)
    except (OSError, ValueError) as error:
        raise CorpusError(f"cannot be read ({error})", path=path) from None
    messages: list[Message] = []
    for conversation in conversations.values():
        for turn in conversation["messages"]:
            for utterance in turn:
                messages.append(
                    Message(
                        user=utterance["sender"],
                        text=utterance["text"],
                        timestamp=parse_timestamp(utterance["timestamp"]),
                    )
                )
    return messages
