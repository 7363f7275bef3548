"""Errors the CLI turns into a one-line message instead of a traceback."""

from __future__ import annotations


class UsageError(ValueError):
    """A command was given settings that cannot work; the message says which."""


def user_errors() -> tuple[type[Exception], ...]:
    """Every error class whose message is written for a user. Packages add theirs.

    Imported when an error is being matched, not when the CLI starts: by then the
    command has loaded these modules anyway, and `--help` stays free of torch.
    """
    from central.errors import (
        CentralConfigError,
        WorkerAbortedError,
        WorkerFailedError,
    )
    from coordinator.config import FederationConfigError
    from corpora.messages import CorpusError
    from device_sim.config import FleetConfigError
    from device_sim.phone import PhoneStoreError
    from models.checkpoint import CheckpointError
    from models.export_manifest import ExportError
    from models.files import StorageError
    from models.run_lock import RunLockError
    from models.rundir import RunDirError

    return (
        CorpusError,
        CheckpointError,
        ExportError,
        RunDirError,
        RunLockError,
        StorageError,
        UsageError,
        FederationConfigError,
        FleetConfigError,
        PhoneStoreError,
        CentralConfigError,
        WorkerFailedError,
        WorkerAbortedError,
    )
