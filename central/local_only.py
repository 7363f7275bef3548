"""The third corner: every user trains alone on their own history, nothing merged.

Each trained user starts from the same initial model as the other baselines and
trains on their own train part only (plain SGD, as on the phones). Two numbers:

- future: each user's model on that user's own future text. The users are the
  fleet's future cohort (`models.future_cohort`: the same
  users and the same messages as the federated and central runs' future
  metric), so the three corners are measured on identical text; their counts
  are pooled by `models.metrics.combine`, as the fleet pools its phones'.
- held-out (generalisation): the models of a fixed sample of `heldout_models`
  of those users, each evaluated on a fixed sample of `heldout_messages_per_model`
  held-out messages, and the metrics averaged over the models (perplexity as a
  geometric mean).

Cost is bounded by training only the cohort's users (about 250 at the defaults),
since no other user's model is ever measured; `all_users` trains every training
user and pools every user's oldest `future_messages_per_user` future messages.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from central.config import LocalOnlyConfig as LocalOnlyConfig
from corpora.corpus import CorpusSplits
from corpora.samples import evenly_spaced, heldout_sample
from corpora.tokenizer import WordTokenizer
from models.batching import encode_messages
from models.config import ModelConfig, TrainingConfig
from models.evaluation_sets import (
    cohort_order,
    future_cohort,
    shares,
    user_future_sizes,
)
from models.metrics import EvalCounts, count_metrics, evaluate
from models.seeding import numpy_rng
from models.training import train_local
from models.weights import initial_model


@dataclass(frozen=True)
class UserResult:
    """One user's training and its additive evaluation counts."""

    user: str
    tokens: int  # targets trained on, all epochs
    seconds: float  # training time
    counts: EvalCounts  # on the user's own future text, pooled afterwards
    heldout: dict[str, Any] | None  # EvalMetrics.as_dict() on the held-out sample


def train_user(
    user: str,
    *,
    splits: CorpusSplits,
    tokenizer: WordTokenizer,
    model_config: ModelConfig,
    config: LocalOnlyConfig,
    keystroke_texts: int,
    heldout_texts: list[str] | None,
) -> UserResult:
    """Train `user`'s own model from the shared init and measure it."""
    history = splits.training_users[user]
    model = initial_model(model_config, config.seed, tokenizer)
    training = TrainingConfig(
        batch_size=config.batch_size,
        lr=config.lr,
        optimizer="sgd",
        epochs=config.local_epochs,
        grad_clip_norm=config.grad_clip_norm,
    )
    started = time.perf_counter()
    result = train_local(
        model,
        encode_messages(tokenizer, list(history.train), model_config.max_len),
        training,
        pad_id=tokenizer.pad_id,
        rng=numpy_rng(config.seed, "local-only", user),
    )
    seconds = time.perf_counter() - started
    future = list(history.future[: config.future_messages_per_user])
    counts = count_metrics(
        model,
        tokenizer,
        future,
        max_len=model_config.max_len,
        keystroke_texts=keystroke_texts,
    )
    heldout = None
    if heldout_texts:
        heldout = evaluate(
            model,
            tokenizer,
            heldout_texts,
            max_len=model_config.max_len,
            keystroke_texts=config.heldout_keystroke_texts,
        ).as_dict()
    return UserResult(user, result.num_tokens, seconds, counts, heldout)


def averaged_metrics(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean over models of each rate; perplexity as a geometric mean."""
    if not results:
        return None
    count = len(results)
    mean = {k: sum(r[k] for r in results) / count for k in ("top1", "top3")}
    mean["keystroke_savings"] = sum(r["keystroke_savings"] for r in results) / count
    log_ppl = sum(math.log(r["perplexity"]) for r in results) / count
    return {
        **mean,
        "perplexity": math.exp(log_ppl),
        "num_targets": results[0]["num_targets"],
        "num_messages": results[0]["num_messages"],
        "num_models": count,
    }


# Called after each user with (users done, users in all, that user's result).
UserCallback = Callable[[int, int, UserResult], None]


def heldout_model_users(users: list[str], config: LocalOnlyConfig) -> set[str]:
    """The fixed sample of users whose models are also measured on held-out text."""
    return set(evenly_spaced(users, config.heldout_models))


def local_only_sets(
    splits: CorpusSplits, config: LocalOnlyConfig
) -> tuple[list[str], list[int], list[str]]:
    """(users in order, each user's keystroke share, the held-out sample).

    The users are the fleet's future cohort (`models.evaluation_sets`), or with
    `all_users` every training user in the cohort's order.
    """
    sizes = user_future_sizes(splits, config.future_messages_per_user)
    if config.all_users:
        users = cohort_order(list(sizes), config.seed)
        keys = shares([sizes[u] for u in users], config.keystroke_texts)
    else:
        cohort = future_cohort(
            sizes,
            seed=config.seed,
            messages=config.future_messages,
            keystroke_texts=config.keystroke_texts,
        )
        users, keys = list(cohort.client_ids), list(cohort.keystroke_texts)
    return users, keys, heldout_sample(splits, config.heldout_messages_per_model)
