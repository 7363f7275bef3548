"""The central baseline's evaluation sets, drawn exactly as the fleet draws them.

- held-out users: a fixed, evenly spaced sample of their messages
  (`corpora.samples.heldout_sample`), the sample the fleet and `fedtype evaluate`
  use.
- future text: the fleet's cohort rule (`models.evaluation_sets.future_cohort`):
  users ordered by a hash of `(seed, "future-cohort", user)`, each contributing
  its oldest `future_messages_per_user` future messages, until the cohort holds
  `future_messages`. With one phone per user (the fleet's default) a phone's
  client_id is its user, so top-1, top-3 and perplexity are measured on
  identical text. (Keystroke savings use `keystroke_texts` of them; the fleet
  spreads its sample over phones, so that one sample may differ slightly.)
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from corpora.corpus import CorpusSplits
from corpora.samples import heldout_sample
from corpora.tokenizer import WordTokenizer
from models.evaluation_sets import cohort_texts, user_future_cohort
from models.metrics import evaluate


def future_cohort_sample(
    splits: CorpusSplits, *, seed: int, messages: int, per_user: int
) -> list[str]:
    """Training users' oldest future messages, users in the fleet's cohort order."""
    cohort = user_future_cohort(splits, seed=seed, messages=messages, per_user=per_user)
    return cohort_texts(splits, cohort, per_user)


def evaluation_sets(
    splits: CorpusSplits,
    *,
    seed: int,
    heldout_messages: int,
    future_messages: int,
    future_messages_per_user: int,
) -> dict[str, list[str]]:
    """`{"heldout": texts, "future": texts}`, fixed for the whole run."""
    return {
        "heldout": heldout_sample(splits, heldout_messages),
        "future": future_cohort_sample(
            splits,
            seed=seed,
            messages=future_messages,
            per_user=future_messages_per_user,
        ),
    }


def evaluate_sets(
    model: nn.Module,
    tokenizer: WordTokenizer,
    sets: dict[str, list[str]],
    *,
    max_len: int,
    keystroke_texts: int,
) -> dict[str, Any]:
    """Each set's `EvalMetrics.as_dict()` (None for an empty set), on a CPU copy."""
    cpu_model = model
    if any(p.device.type != "cpu" for p in model.parameters()):
        cpu_model = copy.deepcopy(model).cpu()
    results: dict[str, Any] = {}
    for name, texts in sets.items():
        if not texts:
            results[name] = None
            continue
        metrics = evaluate(
            cpu_model,
            tokenizer,
            texts,
            max_len=max_len,
            keystroke_texts=keystroke_texts,
        )
        results[name] = metrics.as_dict()
    model.train()
    return results
