"""Errors of the central baseline whose messages are written for a user."""

from __future__ import annotations


class CentralConfigError(ValueError):
    """A central training setting cannot work; the message names it."""


class WorkerFailedError(RuntimeError):
    """A worker of a local multi-worker job died; the job was stopped."""


class WorkerAbortedError(RuntimeError):
    """Another worker failed first; this one stops instead of waiting."""
