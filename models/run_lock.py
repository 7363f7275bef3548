"""One writer per run directory: an exclusive advisory lock held for a run's life.

Every command that writes a run (simulate, central's rank 0, local-only,
personalize, the demo's trainer) holds `RunLock` on RUN_DIR/.writer.lock while it
works; readers (evaluate, suggest, compare, the demo on a finished run) take none.
The lock is `flock(2)` on an open file: the operating system releases it when the
holder exits, a crash and `kill -9` included, so a stale lock never blocks a
resume. The holder writes its process id into the file, so that a second writer
is told who holds the run.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from models.files import StorageError, check_writable, storage_error

LOCK_FILE = ".writer.lock"
# Seconds a refused writer waits for the holder to have written its process id.
_PID_WAIT_S = 1.0


class RunLockError(ValueError):
    """The run directory cannot be locked for writing; the message says why."""


class RunLockedError(RunLockError):
    """Another process writes this run directory; the message names it."""


class RunLock:
    """The exclusive write lock on one run directory (a context manager).

    With `create`, a missing directory is made first; if the holder leaves it
    holding nothing but the lock file (a new run that failed before writing), it
    is removed again on release.
    """

    def __init__(self, run_dir: str | Path, *, create: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._create = create
        self._made_dir = False
        self._descriptor: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise `RunLockedError` at once if another holds it.

        Raises:
            RunLockedError: another process holds it (the message gives its pid).
            RunLockError: no such run directory (without `create`).
            StorageError: the directory cannot be written (read-only, full).
        """
        if not self._create and not (self.run_dir / "config.json").is_file():
            if not self.run_dir.is_dir():
                raise RunLockError(f"{self.run_dir}: no such run directory")
            raise RunLockError(
                f"{self.run_dir / 'config.json'}: missing; is this a run directory?"
            )
        if not self.run_dir.is_dir():
            try:
                self.run_dir.mkdir(parents=True)
            except FileExistsError:
                pass
            except OSError as error:
                raise StorageError(
                    error.errno or errno.EIO, error.strerror, str(self.run_dir)
                ) from None
            else:
                self._made_dir = True
        while self._descriptor is None:
            descriptor = self._open()
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                raise self._refusal() from None
            if self._still_linked(descriptor):
                self._descriptor = descriptor
            else:  # the file was removed by a holder releasing it: lock the new one
                os.close(descriptor)
        try:
            os.ftruncate(self._descriptor, 0)
            os.write(self._descriptor, f"{os.getpid()}\n".encode())
            check_writable(self.run_dir)  # a full disk is refused before any work
        except OSError as error:
            self.release()
            if isinstance(error, StorageError):
                raise
            raise storage_error(self.run_dir, error) from None
        return self

    def release(self) -> None:
        """Let the lock go (closing the file releases it)."""
        if self._descriptor is None:
            return
        if _only_lock_file(self.run_dir):  # nothing was written: leave no trace
            try:
                self.path.unlink(missing_ok=True)
                if self._made_dir:
                    self.run_dir.rmdir()
            except OSError:
                pass  # read-only, or something was written meanwhile: keep it
        os.close(self._descriptor)
        self._descriptor = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise StorageError(
                error.errno or errno.EIO, error.strerror, str(self.run_dir)
            ) from None

    def _still_linked(self, descriptor: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            return False

    def _refusal(self) -> RunLockedError:
        holder = _holder(self.path)
        who = f"process {holder}" if holder else "another process"
        return RunLockedError(
            f"{self.run_dir}: {who} is writing this run (it holds {LOCK_FILE}); "
            "wait for it to finish or stop it, then try again"
        )


def _holder(path: Path) -> int | None:
    """The process id the lock's holder wrote (it may still be writing it)."""
    deadline = time.monotonic() + _PID_WAIT_S
    while True:
        try:
            text = path.read_text().strip()
        except OSError:
            text = ""
        if text.isdigit():
            return int(text)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def _only_lock_file(folder: Path) -> bool:
    try:
        return [p.name for p in folder.iterdir()] == [LOCK_FILE]
    except OSError:
        return False


def lock_run(run_dir: str | Path, *, create: bool = False) -> RunLock:
    """`RunLock(run_dir, create=create)`, acquired."""
    return RunLock(run_dir, create=create).acquire()
