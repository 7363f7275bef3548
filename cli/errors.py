"""Errors the CLI turns into a one-line message instead of a traceback."""

from __future__ import annotations


class UsageError(ValueError):
    """A command was given settings that cannot work; the message says which."""


def user_errors() -> tuple[type[Exception], ...]:
    """Every error class whose message is written for a user. Packages add theirs.

    Imported when an error is being matched, not when the CLI starts: by then the
    command has loaded these modules anyway, and `--help` stays free of torch.
    """
    from central.errors import WorkerAbortedError, WorkerFailedError
    from corpora.messages import CorpusError
    from device_sim.phone import PhoneStoreError
    from models.checkpoint import CheckpointError
    from models.export_manifest import ExportError
    from models.files import StorageError
    from models.run_lock import RunLockError
    from models.rundir import RunDirError
    from models.settings import ConfigError

    return (
        CorpusError,
        CheckpointError,
        ExportError,
        RunDirError,
        RunLockError,
        StorageError,
        UsageError,
        # Every layer's settings: FleetConfigError, FederationConfigError, ...
        ConfigError,
        PhoneStoreError,
        WorkerFailedError,
        WorkerAbortedError,
    )
