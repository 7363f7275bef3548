"""An export directory's files and manifest: names, checksums, the vocabulary.

No torch here: a phone-side reader (`models.onnx_engine`) and the CLI's error
handling need the manifest without the exporter.

    model.onnx or model.int8.onnx   the graph (`models.export`)
    tokenizer.json                  the HF `tokenizers` file the run trained with
    vocab.json                      id -> token, the special ids, the word rule
    manifest.json                   run, round, model shape, opset, sha256 of each
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from corpora.tokenizer import WORD_BODY, WordTokenizer

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.json"
MANIFEST_FILE = "manifest.json"
# Every file an export writes: an export directory holds nothing else of ours.
EXPORT_FILES = (FP32_FILE, INT8_FILE, TOKENIZER_FILE, VOCAB_FILE, MANIFEST_FILE)
# Version of manifest.json's layout; a reader refuses any other.
MANIFEST_FORMAT = 1


class ExportError(ValueError):
    """An export directory is missing, damaged or not ours; the message says which."""


def vocabulary(tokenizer: WordTokenizer) -> dict[str, Any]:
    """vocab.json: what a phone app needs to map ids to words and back."""
    return {
        "tokens": tokenizer.id_to_token,
        "pad_id": tokenizer.pad_id,
        "unk_id": tokenizer.unk_id,
        "bos_id": tokenizer.bos_id,
        "eos_id": tokenizer.eos_id,
        # A suggestible word: a token matching this (not a mark, not a special).
        "word_pattern": WORD_BODY,
    }


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entries(directory: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """manifest.json's "files": the sha256 and size of each named file."""
    return {
        name: {
            "sha256": sha256_of(directory / name),
            "bytes": (directory / name).stat().st_size,
        }
        for name in names
    }


def is_export_file(name: str) -> bool:
    """An export's file, or the temporary sibling (`models.files.atomic_path`) of
    one that a kill left behind mid-write."""
    return name in EXPORT_FILES or any(
        name.startswith(f".{file}.tmp") for file in EXPORT_FILES
    )


def check_out_dir(out: Path) -> None:
    """Refuse an export target that holds anything but an earlier export's files.

    Raises:
        ExportError: `out` is a file, or a folder with other files (a run
            directory, say), which an export must never overwrite.
    """
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: is a file, not a directory")
    if not out.is_dir():
        return
    others = sorted(p.name for p in out.iterdir() if not is_export_file(p.name))
    if others:
        raise ExportError(
            f"--out {out}: holds other files ({', '.join(others[:3])}); "
            "export into a new or earlier export's directory"
        )


def read_manifest(directory: Path) -> dict[str, Any]:
    """manifest.json of an export directory, every file's checksum verified.

    Raises:
        ExportError: no manifest, an unreadable one, a missing file or one whose
            sha256 differs from the manifest's (the message names the file).
    """
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise ExportError(f"{directory}: no such export directory")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{path}: missing; is this a fedtype export?") from None
    except (OSError, ValueError) as error:
        raise ExportError(f"{path}: unreadable ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ExportError(f"{path}: not a format-{MANIFEST_FORMAT} fedtype manifest")
    files = manifest.get("files")
    if not isinstance(files, dict) or manifest.get("model_file") not in files:
        raise ExportError(f"{path}: lists no model file")
    for name, entry in files.items():
        if Path(str(name)).name != name:
            raise ExportError(f"{path}: file name {name!r} is not a plain name")
        file = directory / name
        if not file.is_file():
            raise ExportError(f"{file}: missing (listed in {path})")
        if not isinstance(entry, dict) or sha256_of(file) != entry.get("sha256"):
            raise ExportError(f"{file}: sha256 differs from {path}'s; file damaged")
    return manifest
