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
leaves either the old or the new file, never half of one. A temporary file left by
a killed writer is removed by `remove_stale_temporaries`; a damaged file is never
deleted but moved aside (`move_aside`), and the caller says so.

config.json stores a JSONL corpus by its absolute path with a fingerprint of its
contents ("corpus_fingerprint"), so that a run resumes from any directory and
refuses a corpus that was edited since it started.
"""

from __future__ import annotations

import enum
import json
import os
import re
from pathlib import Path
from typing import Any

from corpora.corpus import CorpusConfig, corpus_fingerprint, resolve_source
from corpora.messages import CorpusError
from corpora.tokenizer import WordTokenizer
from models.checkpoint import CheckpointError, load_checkpoint
from models.files import (
    append_jsonl,
    atomic_write,
    atomic_write_text,
    json_line,
    write_json_atomic,
)
from models.model import NextWordModel

_STEP = re.compile(r"step_(\d+)\.safetensors$")
# `atomic_path`'s names: ".<file>.tmp<pid>".
_TEMPORARY = re.compile(r"^\..+\.tmp(\d+)$")


class RunDirError(ValueError):
    """A run directory is missing or unusable; the message says which file and why."""


class RunKind(enum.StrEnum):
    """What made a run: config.json's "kind"."""

    TRAIN = "train"  # fedtype train: pooled data, one process
    CENTRAL = "central"  # fedtype central: pooled data, DDP workers
    FEDERATED = "federated"  # fedtype simulate (and demo): a fleet of phones
    LOCAL_ONLY = "local-only"  # fedtype local-only: one model a user, none kept


# The central baseline's kinds: pooled data, one model, checkpoints as it trains.
POOLED_KINDS = frozenset({RunKind.TRAIN, RunKind.CENTRAL})


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (it may still be writing)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def move_aside(path: Path) -> Path:
    """Rename a damaged file to `<name>.damaged` (or `.damaged-2`, ...); its path."""
    for number in range(1, 10_000):
        suffix = ".damaged" if number == 1 else f".damaged-{number}"
        target = path.with_name(path.name + suffix)
        if not target.exists():
            os.replace(path, target)
            return target
    raise RunDirError(f"{path}: too many damaged copies beside it")


def corpus_section(corpus: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A config's corpus settings with the source made absolute, and its fingerprint.

    The fingerprint is None when the corpus cannot be read now (the run will say
    so when it loads the corpus).
    """
    section = dict(corpus)
    source = section.get("source")
    if not isinstance(source, str):
        return section, None
    section["source"] = resolve_source(source)
    try:
        return section, corpus_fingerprint(section["source"])
    except CorpusError:
        return section, None


class _Inside:
    """A run's file or folder at a fixed name, read as a path of the instance."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, run: RunDir, owner: type[RunDir] | None = None) -> Path:
        return run.path / self.name


class RunDir:
    """Paths and atomic reads and writes of one run directory."""

    config_path = _Inside("config.json")
    tokenizer_path = _Inside("tokenizer.json")
    metrics_path = _Inside("metrics.jsonl")
    state_path = _Inside("state.json")
    checkpoint_dir = _Inside("checkpoints")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoint_dir / f"step_{step:06d}.safetensors"

    def create(self, config: dict[str, Any], tokenizer: WordTokenizer) -> None:
        """Start a run: the directory, its config and its tokenizer.

        A "corpus" section's source is stored absolute, with the corpus's
        fingerprint beside it as "corpus_fingerprint".
        """
        config = dict(config)
        if isinstance(config.get("corpus"), dict):
            config["corpus"], fingerprint = corpus_section(config["corpus"])
            config["corpus_fingerprint"] = fingerprint
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.checkpoint_dir.mkdir(exist_ok=True)
            write_json_atomic(self.config_path, config)
            atomic_write(self.tokenizer_path, tokenizer.save)
        except OSError as error:
            where = error.filename or self.path
            raise RunDirError(
                f"{where}: cannot write the run there ({error.strerror})"
            ) from None

    def read_config(self) -> dict[str, Any]:
        """The run's config.json, or a `RunDirError` that says what is wrong."""
        if not self.path.is_dir():
            raise RunDirError(f"{self.path}: no such run directory")
        try:
            config = json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise RunDirError(
                f"{self.config_path}: missing; is this a run directory?"
            ) from None
        except (OSError, ValueError) as error:
            raise RunDirError(f"{self.config_path}: unreadable ({error})") from None
        if not isinstance(config, dict):
            raise RunDirError(f"{self.config_path}: not a JSON object")
        return config

    def read_kind(self) -> RunKind:
        """The run's kind, or a `RunDirError` naming config.json when unknown."""
        kind = self.read_config().get("kind")
        try:
            return RunKind(str(kind))
        except ValueError:
            known = ", ".join(k.value for k in RunKind)
            raise RunDirError(
                f"{self.config_path}: unknown run kind {kind!r} (one of {known})"
            ) from None

    def config_of(
        self, kinds: RunKind | frozenset[RunKind], *, why: str = ""
    ) -> dict[str, Any]:
        """config.json of a run whose kind is `kinds` or one of them.

        Raises:
            RunDirError: no run there, or one of another kind (the message names
                both kinds, then `why`).
        """
        if isinstance(kinds, RunKind):
            kinds = frozenset({kinds})
        kind = self.read_kind()
        if kind not in kinds:
            wanted = "central" if kinds == POOLED_KINDS else "/".join(sorted(kinds))
            raise RunDirError(
                f"{self.path}: a {kind.value!r} run, not a {wanted} one{why}"
            )
        return self.read_config()

    def corpus_config(self, *, check: bool = True) -> CorpusConfig:
        """The corpus settings the run trained and evaluated with.

        With `check`, a corpus whose contents changed since the run started (its
        fingerprint differs from config.json's) is refused.
        """
        config = self.read_config()
        try:
            corpus = CorpusConfig(**config["corpus"])
        except (KeyError, TypeError) as error:
            raise RunDirError(
                f"{self.config_path}: no valid 'corpus' section ({error})"
            ) from None
        expected = config.get("corpus_fingerprint")
        if check and isinstance(expected, str):
            found = corpus_fingerprint(corpus.source)
            if found != expected:
                raise RunDirError(
                    f"{corpus.source}: the corpus changed since the run in "
                    f"{self.path} started (fingerprint {expected[:19]}, now "
                    f"{found[:19]}); restore the file the run was trained on, or "
                    "start a new run"
                )
        return corpus

    def load_tokenizer(self) -> WordTokenizer:
        """The run's tokenizer."""
        if not self.tokenizer_path.exists():
            raise RunDirError(f"{self.tokenizer_path}: missing")
        return WordTokenizer.load(self.tokenizer_path)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl and flush it to disk."""
        append_jsonl(self.metrics_path, record)

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every complete line of metrics.jsonl (a torn last line is ignored)."""
        return self.scan_metrics()[0]

    def scan_metrics(self) -> tuple[list[dict[str, Any]], list[int]]:
        """The readable JSON objects of metrics.jsonl and the damaged lines' numbers.

        A last line without its newline is a write that a kill interrupted, not
        damage: it is left out of both lists.
        """
        if not self.metrics_path.exists():
            return [], []
        data = self.metrics_path.read_bytes()
        lines = data.split(b"\n")
        last = len(lines)  # lines[-1] is b"" after a final newline, else torn
        records: list[dict[str, Any]] = []
        damaged: list[int] = []
        for number, raw in enumerate(lines, start=1):
            if number == last or not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                damaged.append(number)
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                damaged.append(number)
        return records, damaged

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> Path | None:
        """Replace metrics.jsonl atomically (resume drops lines past the checkpoint).

        When the old file holds damaged lines, it is moved aside first and never
        lost; returns where it went (None when nothing was damaged).
        """
        _, damaged = self.scan_metrics()
        aside = None
        if damaged:
            aside = move_aside(self.metrics_path)
        atomic_write_text(self.metrics_path, "".join(json_line(r) for r in records))
        return aside

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporary files that killed writers left behind; their paths.

        A file whose writer (the process id in its name) still runs is kept.
        """
        removed = []
        for folder in (self.path, self.checkpoint_dir):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                match = _TEMPORARY.match(path.name)
                if match and path.is_file() and not _alive(int(match.group(1))):
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return sorted(removed)

    def checkpoint_steps(self) -> list[int]:
        """Steps that have a checkpoint, ascending."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = (_STEP.search(p.name) for p in self.checkpoint_dir.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def load_model(self, step: int | None = None) -> tuple[NextWordModel, int]:
        """The model at `step` (default: the latest) and that step."""
        if self.read_kind() is RunKind.LOCAL_ONLY:
            raise RunDirError(
                f"{self.path}: a local-only run trains one model per user and "
                "keeps none to load; its metrics are in metrics.jsonl (fedtype "
                "compare shows them)"
            )
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
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError) as error:
            raise RunDirError(f"{self.state_path}: unreadable ({error})") from None
        if not isinstance(state, dict):
            raise RunDirError(f"{self.state_path}: not a JSON object")
        return state
