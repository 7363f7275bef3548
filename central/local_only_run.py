"""`fedtype local-only` runs: a run directory, resumable user by user.

    RUN_DIR/config.json    {"kind": "local-only", "corpus", "model", "local_only"}
    RUN_DIR/users.jsonl    one line per finished user: tokens, seconds, counts
    RUN_DIR/metrics.jsonl  one line once every user is done, as the other runs'

No model is kept: there is one per user and nothing reads them afterwards. A
killed run resumes after its last finished user.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from central.local_only import (
    LocalOnlyConfig,
    UserCallback,
    averaged_metrics,
    heldout_model_users,
    local_only_sets,
    train_user,
)
from corpora.corpus import CorpusConfig, load_corpus
from corpora.tokenizer import WordTokenizer
from models.config import ModelConfig
from models.files import append_jsonl
from models.metrics import EvalCounts, combine
from models.rundir import RunDir, RunDirError, RunKind
from models.settings import LOCAL_ONLY_RENAME, renamed


def create_local_only_run(
    path: str | Path,
    *,
    corpus: CorpusConfig,
    model: ModelConfig,
    config: LocalOnlyConfig,
) -> RunDir:
    """A new local-only run directory (RunDirError if one is there)."""
    run = RunDir(path)
    if run.config_path.exists():
        raise RunDirError(f"{run.path}: already a run directory; resume it instead")
    payload = {
        "kind": RunKind.LOCAL_ONLY.value,
        "corpus": asdict(corpus),
        "model": asdict(model),
        "local_only": asdict(config),
    }
    run.create(payload, WordTokenizer.public())
    return run


def users_path(run: RunDir) -> Path:
    return run.path / "users.jsonl"


def read_done(run: RunDir) -> dict[str, dict[str, Any]]:
    """Finished users' lines by user.

    A torn last line is ignored, and so is a line whose counts are not an
    `EvalCounts` (that user trains again, to the same result).
    """
    path = users_path(run)
    if not path.exists():
        return {}
    done = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            EvalCounts(**record["counts"])
            done[record["user"]] = record
        except (ValueError, KeyError, TypeError):
            continue
    return done


def _append(run: RunDir, record: dict[str, Any]) -> None:
    append_jsonl(users_path(run), record)


def _read_settings(run: RunDir) -> tuple[CorpusConfig, ModelConfig, LocalOnlyConfig]:
    config = run.config_of(RunKind.LOCAL_ONLY)
    try:
        return (
            CorpusConfig(**config["corpus"]),
            ModelConfig(**config["model"]),
            LocalOnlyConfig(**renamed(config["local_only"], LOCAL_ONLY_RENAME)),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise RunDirError(f"{run.config_path}: invalid ({error})") from None


def run_local_only(
    path: str | Path, *, on_user: UserCallback | None = None
) -> dict[str, Any]:
    """Train and measure every remaining user; returns the metrics.jsonl line."""
    run = RunDir(path)
    corpus, model_config, config = _read_settings(run)
    tokenizer = run.load_tokenizer()
    splits = load_corpus(corpus)
    users, shares, heldout_texts = local_only_sets(splits, config)
    heldout_users = heldout_model_users(users, config)
    done = read_done(run)
    for index, (user, share) in enumerate(zip(users, shares, strict=True)):
        if user in done:
            continue
        result = train_user(
            user,
            splits=splits,
            tokenizer=tokenizer,
            model_config=model_config,
            config=config,
            keystroke_texts=share,
            heldout_texts=heldout_texts if user in heldout_users else None,
        )
        done[user] = asdict(result)
        _append(run, done[user])
        if on_user is not None:
            on_user(index + 1, len(users), result)
    record = summarise([done[u] for u in users])
    run.rewrite_metrics([record])
    run.write_state({"users_done": len(users), "complete": True})
    return record


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's one metrics.jsonl line from its users' lines."""
    heldout = [r["heldout"] for r in results if r.get("heldout")]
    return {
        "step": len(results),
        "users_trained": len(results),
        "tokens_total": sum(int(r["tokens"]) for r in results),
        # Users train one after another here; on phones they would run in parallel.
        "wall_seconds_total": round(sum(float(r["seconds"]) for r in results), 3),
        "bytes_total": 0,
        "heldout": averaged_metrics(heldout),
        "future": (
            combine([EvalCounts(**r["counts"]) for r in results]).as_dict()
            if results
            else None
        ),
    }
