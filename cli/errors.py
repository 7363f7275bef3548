"""Errors the CLI turns into a one-line message instead of a traceback."""

from __future__ import annotations

from central.errors import CentralConfigError, WorkerAbortedError, WorkerFailedError
from coordinator.config import FederationConfigError
from corpora.messages import CorpusError
from device_sim.config import FleetConfigError
from device_sim.phone import PhoneStoreError
from models.checkpoint import CheckpointError
from models.export_manifest import ExportError
from models.rundir import RunDirError


class UsageError(ValueError):
    """A command was given settings that cannot work; the message says which."""


# Every error class whose message is written for a user. Packages add theirs here.
USER_ERRORS: tuple[type[Exception], ...] = (
    CorpusError,
    CheckpointError,
    ExportError,
    RunDirError,
    UsageError,
    FederationConfigError,
    FleetConfigError,
    PhoneStoreError,
    CentralConfigError,
    WorkerFailedError,
    WorkerAbortedError,
)
