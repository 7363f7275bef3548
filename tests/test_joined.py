"""Reading back the phones that joined a run: `coordinator.run.joined`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordinator.run.joined import joined_entries, joined_history
from models.rundir import RunDir, RunDirError


def write_joined(root: Path, index: object, files: dict[str, object]) -> RunDir:
    """A run directory whose phones/ holds `index` and the phone `files`."""
    phones = root / "phones"
    phones.mkdir(parents=True)
    (phones / "index.json").write_text(json.dumps(index), encoding="utf-8")
    for name, payload in files.items():
        (phones / name).write_text(json.dumps(payload), encoding="utf-8")
    return RunDir(root)


def test_joined_history_reads_the_named_phone(tmp_path: Path) -> None:
    # Prepare
    index = {
        "phones": [
            {"client_id": "other", "file": "phone_000.json", "pinned": False},
            {"client_id": "this-phone", "file": "phone_001.json", "pinned": True},
        ]
    }
    run = write_joined(
        tmp_path,
        index,
        {
            "phone_000.json": {"client_id": "other", "train": ["a"], "future": []},
            "phone_001.json": {
                "client_id": "this-phone",
                "train": ["hi there", "see you"],
                "future": [],
            },
        },
    )
    # Execute
    history = joined_history(run, "this-phone")
    missing = joined_history(run, "nobody")
    entries = joined_entries(run)
    # Assert
    assert history == ["hi there", "see you"]
    assert missing == []
    assert [e["client_id"] for e in entries] == ["other", "this-phone"]


def test_joined_history_of_a_run_nobody_joined_is_empty(tmp_path: Path) -> None:
    # Prepare
    run = RunDir(tmp_path)
    # Execute
    history = joined_history(run, "this-phone")
    # Assert
    assert history == []


@pytest.mark.parametrize(
    ("index", "named"),
    [
        ("{not json", "index.json"),
        ({"phones": [{"client_id": "this-phone"}]}, "index.json"),
        (
            {"phones": [{"client_id": "this-phone", "file": "x.json", "pinned": 1}]},
            "x.json",
        ),
    ],
)
def test_joined_history_damaged_store_names_the_file(
    tmp_path: Path, index: object, named: str
) -> None:
    # Prepare
    run = write_joined(tmp_path, {}, {})
    text = index if isinstance(index, str) else json.dumps(index)
    (tmp_path / "phones" / "index.json").write_text(text, encoding="utf-8")
    # Execute
    with pytest.raises(RunDirError) as caught:
        joined_history(run, "this-phone")
    # Assert
    assert named in str(caught.value)
