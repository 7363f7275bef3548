"""A full or read-only disk is an ordinary error: one line, exit status 2, the last
good round intact, and a read-only destination refused before the work.

A full disk is made by a small tmpfs, or by making the one atomic write's writer
fail as safetensors does (its error is not an OSError). Tests run as root here,
for whom chmod does not make a directory read-only: a read-only bind mount does;
as another user, chmod does. Where neither is possible the test is skipped.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli, tiny_run_options
from safetensors import SafetensorError

import models.checkpoint
from cli.main import main
from models.files import (
    StorageError,
    append_jsonl,
    atomic_write,
    atomic_write_text,
    check_writable,
)
from models.rundir import RunDir

TINY = tiny_run_options(eval_every=0)
SAFETENSORS_ENOSPC = (
    "Error while serializing: I/O error: No space left on device (os error 28)"
)


def _mount(*args: str) -> bool:
    done = subprocess.run(["mount", *args], capture_output=True)
    return done.returncode == 0


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` read-only for this process for a while (bind mount, or chmod)."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for path in modes:
            path.chmod(modes[path] & ~0o222)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    if not _mount("--bind", str(folder), str(folder)):
        pytest.skip("root without mount rights: no way to make a read-only folder")
    try:
        if not _mount("-o", "remount,ro,bind", str(folder)):
            pytest.skip("cannot remount a bind mount read-only here")
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs filled to the last byte (skipped where mount is refused)."""
    where = tmp_path / "full"
    where.mkdir()
    options = ("-t", "tmpfs", "-o", "size=64k", "x", str(where))
    mounted = os.geteuid() == 0 and _mount(*options)
    if not mounted:
        pytest.skip("needs root with mount rights for a small tmpfs")
    try:
        with open(where / "filler", "wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(b"\0" * 4096)
            except OSError:
                pass
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.fixture(scope="module")
def finished(
    tmp_path_factory: pytest.TempPathFactory, corpus_file: str
) -> tuple[Path, Path]:
    """(corpus, run): a JSONL of the small slice and a 1-round run on 12 users."""
    folder = tmp_path_factory.mktemp("disk")
    corpus = Path(corpus_file)
    run = folder / "run"
    argv = ["simulate", "--out", str(run), "--corpus", str(corpus), "--rounds", "1"]
    assert main([*argv, *TINY]) == 0
    return corpus, run


def test_atomic_write_safetensors_no_space_keeps_old_file(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "step_000001.safetensors"
    path.write_bytes(b"the last good round")

    def write(temporary: Path) -> None:
        temporary.write_bytes(b"half of a round")
        raise SafetensorError(SAFETENSORS_ENOSPC)

    # Execute
    with pytest.raises(StorageError) as raised:
        atomic_write(path, write)

    # Assert
    assert raised.value.errno == errno.ENOSPC
    assert str(raised.value) == (
        f"{path}: cannot write (no space left on the device); files already "
        "saved are unchanged"
    )
    assert path.read_bytes() == b"the last good round"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_writes_on_a_full_tmpfs_raise_storage_error(full_disk: Path) -> None:
    # Prepare
    metrics = full_disk / "metrics.jsonl"

    # Execute
    failures: list[StorageError] = []
    writes: list[Callable[[], Any]] = [
        lambda: atomic_write_text(full_disk / "state.json", "x" * 8192),
        lambda: append_jsonl(metrics, {"text": "x" * 8192}),
        lambda: check_writable(full_disk),
    ]
    for write in writes:
        with pytest.raises(StorageError) as raised:
            write()
        failures.append(raised.value)

    # Assert
    assert [f.errno for f in failures] == [errno.ENOSPC] * 3
    assert not (full_disk / "state.json").exists()
    assert sorted(p.name for p in full_disk.iterdir() if p.stat().st_size) == ["filler"]


def test_simulate_on_a_full_disk_one_line_and_the_last_round_intact(
    finished: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Prepare: the disk fills while round 2's model is written
    run = RunDir(shutil.copytree(finished[1], tmp_path / "run"))
    real_save = models.checkpoint.save_file

    def no_space(*args: Any, **kwargs: Any) -> None:
        raise SafetensorError(SAFETENSORS_ENOSPC)

    monkeypatch.setattr(models.checkpoint, "save_file", no_space)

    # Execute
    argv = ["simulate", "--resume", str(run.path), "--rounds", "2"]
    status, err = run_cli(argv, capsys)
    state_after_failure = json.loads(run.state_path.read_text())["server_round"]
    monkeypatch.setattr(models.checkpoint, "save_file", real_save)  # space freed
    resumed, _ = run_cli(argv, capsys)

    # Assert
    assert status == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "step_000002.safetensors: cannot write (no space left on the device)" in err
    assert state_after_failure == 1
    assert not list(run.path.rglob("*.tmp*"))
    assert resumed == 0
    assert [r["server_round"] for r in run.read_metrics()] == [1, 2]


@pytest.mark.parametrize(
    "command",
    [
        ["personalize", "--run", "{run}", "--phones", "2"],
        ["simulate", "--resume", "{run}", "--rounds", "2"],
        ["compare", "{run}", "--out", "{run}/report"],
    ],
)
def test_read_only_destination_refused_before_the_work(
    command: list[str],
    finished: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Prepare
    run = shutil.copytree(finished[1], tmp_path / "run")
    before = sorted(p.name for p in run.rglob("*"))

    # Execute
    with read_only(run):
        status, err = run_cli([part.format(run=run) for part in command], capsys)

    # Assert: one line, before any phone trained or any report was written
    assert status == 2
    assert err.count("\n") == 1
    assert "read-only file system" in err or "permission denied" in err
    assert sorted(p.name for p in run.rglob("*")) == before
