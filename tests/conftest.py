"""Shared fixtures: small slices of the real Chit-Chat corpus and small models.

Session-scoped fixtures are built once per test run and shared by every test that
asks for them, so tests must treat them as read-only: copy before changing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import NewSimulation

from coordinator.config import FederationConfig
from coordinator.run.simulation import Simulation
from corpora.corpus import CorpusConfig, CorpusSplits, load_messages, split_corpus
from corpora.messages import Message
from corpora.tokenizer import WordTokenizer
from models.config import ModelConfig, TrainingConfig

# Users in the small slice: the first ones by identifier. With the default corpus
# settings 40 users give 30 training users, 3 held-out users and 7 dropped ones.
SMALL_SLICE_USERS = 40


def first_users(messages: list[Message], count: int) -> list[Message]:
    """The messages of the `count` users whose identifiers sort first."""
    chosen = set(sorted({m.user for m in messages})[:count])
    return [m for m in messages if m.user in chosen]


@pytest.fixture(scope="session")
def chitchat_messages() -> list[Message]:
    """Every non-empty message of the Chit-Chat corpus (about 258,000)."""
    messages, _ = load_messages("chitchat")
    return messages


@pytest.fixture(scope="session")
def chitchat_slice(
    chitchat_messages: list[Message],
) -> Callable[[int], list[Message]]:
    """A function giving the messages of the first `count` Chit-Chat users.

    The first users by identifier, so a larger slice holds every smaller one.
    """

    def slice_of(count: int) -> list[Message]:
        return first_users(chitchat_messages, count)

    return slice_of


@pytest.fixture(scope="session")
def small_messages(
    chitchat_slice: Callable[[int], list[Message]],
) -> list[Message]:
    """The messages of the first `SMALL_SLICE_USERS` Chit-Chat users."""
    return chitchat_slice(SMALL_SLICE_USERS)


@pytest.fixture(scope="session")
def corpus_file(
    tmp_path_factory: pytest.TempPathFactory, small_messages: list[Message]
) -> str:
    """The small slice as a JSONL corpus file (read-only: copy before changing)."""
    path = tmp_path_factory.mktemp("corpus") / "small.jsonl"
    lines = (
        json.dumps({"user": m.user, "text": m.text, "timestamp": m.timestamp})
        for m in small_messages
    )
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def small_config() -> CorpusConfig:
    """The default corpus settings (seed 0) used by `small_splits`."""
    return CorpusConfig()


@pytest.fixture(scope="session")
def small_splits(
    small_messages: list[Message], small_config: CorpusConfig
) -> CorpusSplits:
    """The small slice split with the default settings: 30 training, 3 held-out."""
    return split_corpus(small_messages, small_config)


@pytest.fixture(scope="session")
def tokenizer() -> WordTokenizer:
    """The default public tokenizer: wordfreq's top 10,000 English words."""
    return WordTokenizer.public(10_000)


@pytest.fixture(scope="session")
def tiny_model_config(tokenizer: WordTokenizer) -> ModelConfig:
    """A model small enough to train in a second, over the public vocabulary."""
    return ModelConfig(
        vocab_size=tokenizer.vocab_size, embed_dim=16, hidden_dim=32, max_len=16
    )


@pytest.fixture(scope="session")
def new_simulation(
    small_splits: CorpusSplits,
    small_config: CorpusConfig,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
) -> NewSimulation:
    """A function starting a run in `path` on the small slice and the tiny model.

    Keyword arguments go to `Simulation.create` (`on_event`, `executor`, or other
    `splits` than `small_splits`).
    """

    def create(path: Path, federation: FederationConfig, **kwargs: Any) -> Simulation:
        kwargs.setdefault("splits", small_splits)
        return Simulation.create(
            path,
            federation=federation,
            corpus=small_config,
            model=tiny_model_config,
            tokenizer=tokenizer,
            **kwargs,
        )

    return create


@pytest.fixture
def tiny_training_config() -> TrainingConfig:
    """Plain SGD settings that visibly lower the loss of the tiny model."""
    return TrainingConfig(batch_size=16, lr=0.5, epochs=1, max_steps=None)


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[[str | bytes], str]:
    """Write a JSONL corpus (text or raw bytes) to a fresh file; returns its path."""
    counter = iter(range(1_000_000))

    def write(content: str | bytes) -> str:
        path = tmp_path / f"corpus_{next(counter)}.jsonl"
        data = content.encode("utf-8") if isinstance(content, str) else content
        path.write_bytes(data)
        return str(path)

    return write


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread, as the demo's child process trains: on a busy two-core
    machine a second thread waits for a core at every LSTM step (a test of two
    small rounds took 35 s instead of 2 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
