"""The run directory every command writes and reads.

    RUN_DIR/
      config.json          resolved configuration, with "kind": train | federated |
                           central | local-only
      tokenizer.json       the tokenizer the model was trained with
      metrics.jsonl        one JSON object a line (a round, an evaluation, ...)
      checkpoints/
        step_000042.safetensors   the model after round / epoch / step 42
      state.json           what resuming needs (written last, atomically)

Every file is written to a temporary sibling and renamed, so a kill at any moment
leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from corpora.corpus import CorpusConfig
from corpora.tokenizer import WordTokenizer
from models.checkpoint import CheckpointError, atomic_path, load_checkpoint
from models.model import NextWordModel

_STEP = re.compile(r"step_(\d+)\.safetensors$")


class RunDirError(ValueError):
    """A run directory is missing or unusable; the message says which file and why."""


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to `path` through a temporary file and a rename."""
    temporary = atomic_path(path)
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


class RunDir:
    """Paths and atomic reads and writes of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoint_dir / f"step_{step:06d}.safetensors"

    def create(self, config: dict[str, Any], tokenizer: WordTokenizer) -> None:
        """Start a run: the directory, its config and its tokenizer."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoint_dir.mkdir(exist_ok=True)
        write_json_atomic(self.config_path, config)
        temporary = atomic_path(self.tokenizer_path)
        tokenizer.save(temporary)
        os.replace(temporary, self.tokenizer_path)

    def read_config(self) -> dict[str, Any]:
        """The run's config.json, or a `RunDirError` that says what is wrong."""
        if not self.path.is_dir():
            raise RunDirError(f"{self.path}: no such run directory")
        try:
            return json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise RunDirError(
                f"{self.config_path}: missing; is this a run directory?"
            ) from None
        except (OSError, ValueError) as error:
            raise RunDirError(f"{self.config_path}: unreadable ({error})") from None

    def corpus_config(self) -> CorpusConfig:
        """The corpus settings the run trained and evaluated with."""
        config = self.read_config()
        try:
            return CorpusConfig(**config["corpus"])
        except (KeyError, TypeError) as error:
            raise RunDirError(
                f"{self.config_path}: no valid 'corpus' section ({error})"
            ) from None

    def load_tokenizer(self) -> WordTokenizer:
        """The run's tokenizer."""
        if not self.tokenizer_path.exists():
            raise RunDirError(f"{self.tokenizer_path}: missing")
        return WordTokenizer.load(self.tokenizer_path)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl and flush it to disk."""
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every complete line of metrics.jsonl (a torn last line is ignored)."""
        if not self.metrics_path.exists():
            return []
        records = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace metrics.jsonl atomically (resume drops lines past the checkpoint)."""
        temporary = atomic_path(self.metrics_path)
        temporary.write_text(
            "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        )
        os.replace(temporary, self.metrics_path)

    def checkpoint_steps(self) -> list[int]:
        """Steps that have a checkpoint, ascending."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = (_STEP.search(p.name) for p in self.checkpoint_dir.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def load_model(self, step: int | None = None) -> tuple[NextWordModel, int]:
        """The model at `step` (default: the latest) and that step."""
        self.read_config()  # a clear error when this is no run directory
        steps = self.checkpoint_steps()
        if not steps:
            raise RunDirError(f"{self.checkpoint_dir}: no checkpoint yet")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise RunDirError(
                f"{self.path}: no checkpoint for step {step} (have {steps})"
            )
        tokenizer = self.load_tokenizer()
        try:
            model, _, _ = load_checkpoint(
                self.checkpoint_path(step), vocab_fingerprint=tokenizer.fingerprint()
            )
        except CheckpointError as error:
            raise RunDirError(str(error)) from None
        return model, step

    def prune_checkpoints(self, *, keep_last: int, keep_every: int) -> None:
        """Delete checkpoints but the last `keep_last` and every `keep_every`-th."""
        steps = self.checkpoint_steps()
        for step in steps[:-keep_last] if keep_last else steps:
            if keep_every and step % keep_every == 0:
                continue
            self.checkpoint_path(step).unlink(missing_ok=True)

    def write_state(self, state: dict[str, Any]) -> None:
        """Write state.json atomically."""
        write_json_atomic(self.state_path, state)

    def read_state(self) -> dict[str, Any] | None:
        """state.json, or None when the run has not completed a step yet."""
        if not self.state_path.exists():
            return None
        try:
            return json.loads(self.state_path.read_text())
        except ValueError as error:
            raise RunDirError(f"{self.state_path}: unreadable ({error})") from None
