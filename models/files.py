"""Writing files that survive a kill and a full disk: the one atomic write.

Every file a command saves goes through `atomic_write`: the contents go to a
temporary sibling (`.<name>.tmp<pid>`), are flushed to disk, and the sibling is
renamed over the file, so a kill at any moment leaves the old file or the new one,
never half of one. JSONL lines are appended by `append_line` (`append_jsonl` for a
record), flushed the same way.

A write that fails for want of space or on a read-only disk raises `StorageError`
(an `OSError` whose message is one line naming the file) and removes its temporary
file: the file it was to replace is untouched. safetensors reports such a failure
as a `SafetensorError`, not an `OSError`; it is translated here too.
`check_writable` refuses such a destination before a command does its work.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

# errno values that mean "this disk cannot take the write", with their words.
_DISK_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large",
}
# safetensors' wording of an I/O failure: "... (os error 28)".
_OS_ERROR = re.compile(r"os error (\d+)")


class StorageError(OSError):
    """A file could not be written; the message names it and says why, in a line."""

    def __str__(self) -> str:
        reason = _DISK_ERRNOS.get(self.errno or 0, self.strerror or "write failed")
        return (
            f"{self.filename}: cannot write ({reason}); files already saved are "
            "unchanged"
        )


def atomic_path(path: Path) -> Path:
    """A temporary sibling of `path` to write and then rename over it."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def sync_file(path: Path) -> None:
    """Flush a written file to disk, so that a rename publishes whole contents."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _sync_directory(folder: Path) -> None:
    """Flush a directory's entries (a rename in it) to disk, where possible."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename still holds
    finally:
        os.close(descriptor)


def storage_error(path: Path, error: BaseException) -> StorageError:
    """`error` (an OSError or a SafetensorError) as a `StorageError` naming `path`."""
    if isinstance(error, OSError):
        return StorageError(error.errno or errno.EIO, error.strerror, str(path))
    found = _OS_ERROR.search(str(error))
    code = int(found.group(1)) if found else errno.EIO
    return StorageError(code, str(error), str(path))


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Replace `path` with what `write(temporary_path)` writes, atomically.

    Raises:
        StorageError: the disk refused the write (full, read-only, ...); `path`
            is as it was and no temporary file is left.
    """
    path = Path(path)
    temporary = atomic_path(path)
    try:
        write(temporary)
        sync_file(temporary)
        os.replace(temporary, path)
    except (OSError, SafetensorError) as error:
        temporary.unlink(missing_ok=True)
        raise storage_error(path, error) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8), atomically."""
    atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write `payload` as indented JSON to `path`, atomically."""
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def json_line(record: dict[str, Any]) -> str:
    """One JSONL line, strict JSON: a non-finite number (an infinite epsilon, a
    NaN loss) is written as null, never as a bare `Infinity`."""
    return json.dumps(_finite_or_null(record), sort_keys=True, allow_nan=False) + "\n"


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(v) for v in value]
    return value


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append `record` as one JSON line to `path` and flush it to disk.

    A kill can tear only this last line, which the readers skip.
    """
    append_line(path, json_line(record))


def append_line(path: str | Path, line: str) -> None:
    """Append `line` (ending in its newline) to `path` and flush it to disk; the
    one append of every JSONL file, `append_jsonl`'s and the privacy ledger's.

    Raises:
        StorageError: the disk refused the write; the line may be torn.
    """
    path = Path(path)
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise storage_error(path, error) from None


def check_writable(folder: str | Path) -> None:
    """Refuse a directory this process cannot write in, before any work is done.

    `os.access` alone passes a read-only directory for root; a probe file is
    created, flushed and removed, which a read-only or full disk refuses to
    anyone.

    Raises:
        StorageError: the directory (or, when missing, its nearest existing
            parent) cannot be written.
    """
    target = Path(folder)
    while not target.exists() and target != target.parent:
        target = target.parent
    if not os.access(target, os.W_OK | os.X_OK):
        code = errno.EROFS if _read_only_mount(target) else errno.EACCES
        raise StorageError(code, os.strerror(code), str(target))
    probe = target / f".write-probe.tmp{os.getpid()}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise storage_error(target, error) from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass  # never created: the disk refused it


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
