"""A run directory's kind: read and checked in one place (`models.rundir`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.rundir import POOLED_KINDS, RunDir, RunDirError, RunKind


def run_of_kind(root: Path, kind: object) -> RunDir:
    """A directory whose config.json names `kind`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"kind": kind}), encoding="utf-8")
    return RunDir(root)


@pytest.mark.parametrize("kind", list(RunKind))
def test_read_kind_each_known_kind(tmp_path: Path, kind: RunKind) -> None:
    # Prepare
    run = run_of_kind(tmp_path, kind.value)
    # Execute
    read = run.read_kind()
    # Assert
    assert read is kind


@pytest.mark.parametrize("kind", ["mystery", None, 5])
def test_read_kind_unknown_names_config_and_kinds(tmp_path: Path, kind: object) -> None:
    # Prepare
    run = run_of_kind(tmp_path, kind)
    # Execute
    with pytest.raises(RunDirError) as caught:
        run.read_kind()
    # Assert
    message = str(caught.value)
    assert "config.json" in message and f"unknown run kind {kind!r}" in message
    assert "federated, local-only" in message


def test_config_of_accepts_a_pooled_run_as_central(tmp_path: Path) -> None:
    # Prepare
    run = run_of_kind(tmp_path, "train")
    # Execute
    config = run.config_of(POOLED_KINDS)
    # Assert
    assert config == {"kind": "train"}


@pytest.mark.parametrize(
    ("kind", "wanted", "expected"),
    [
        ("federated", POOLED_KINDS, "a 'federated' run, not a central one"),
        ("central", RunKind.FEDERATED, "a 'central' run, not a federated one"),
        ("train", RunKind.LOCAL_ONLY, "a 'train' run, not a local-only one"),
    ],
)
def test_config_of_another_kind_names_both(
    tmp_path: Path, kind: str, wanted: RunKind | frozenset[RunKind], expected: str
) -> None:
    # Prepare
    run = run_of_kind(tmp_path, kind)
    # Execute
    with pytest.raises(RunDirError) as caught:
        run.config_of(wanted, why=": see the docs")
    # Assert
    assert str(caught.value) == f"{tmp_path}: {expected}: see the docs"
