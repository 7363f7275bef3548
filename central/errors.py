"""Errors of the central baseline whose messages are written for a user."""

from __future__ import annotations

from models.launch import WorkerFailedError
from models.settings import ConfigError

__all__ = ["CentralConfigError", "WorkerAbortedError", "WorkerFailedError"]


class CentralConfigError(ConfigError):
    """A central training setting cannot work; the message names it."""


class WorkerAbortedError(RuntimeError):
    """Another worker failed first; this one stops instead of waiting."""
