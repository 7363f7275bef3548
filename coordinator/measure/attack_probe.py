"""MEASUREMENT HARNESS: the curious-server attack, scored each round.

The attack (`coordinator.measure.attack.recover_tokens`) sees only what the server
holds: a phone's plain update (without secure aggregation), the round's sum
(the unmasked sum under SecAgg, the plain sum otherwise) and, with DP, the
noisy mean it releases. The truth it is scored against, the words in the
batches those phones trained on this round, comes from `device_sim.truth`,
computed from the phones' own data for this measurement alone: nothing here
feeds back into selection, screening or aggregation.

Beside the scores it records the server's own view: the top recovered words
(`TOP_WORDS`, largest output-bias rise first) of each attacked phone's update
and of the sum, for the TUI's "what the server saw" panel. The truth (the
phones' words) is never recorded, only the precision and recall against it.

Every rank computes the same figures (the attacked phones' output-bias deltas
are gathered, a few vectors of V floats); rank 0 writes them.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from coordinator.config import FederationConfig
from coordinator.measure.attack import bias_tokens, recover_tokens, score, update_parts
from coordinator.round.rounds import HeldRound
from corpora.tokenizer import WordTokenizer
from device_sim.executor import TrainedRound
from device_sim.fleet import Fleet
from device_sim.phone import Parameters
from device_sim.truth import trained_tokens

# How many recovered words a round records per attacked input.
TOP_WORDS = 12


@dataclass(frozen=True)
class AttackProbe:
    """The curious server, observing each aggregated round (measurement only).

    `Simulation` adds it to `RoundEnvironment.observers` when the run asks for
    `attack_phones`; it scores what the server held (`HeldRound`) against the
    truth of what the phones trained on (`device_sim.truth`).
    """

    config: FederationConfig
    fleet: Fleet
    tokenizer: WordTokenizer
    max_len: int

    def __call__(self, held: HeldRound) -> dict[str, Any]:
        """The line's `attack` figures of one round."""
        release = held.release
        return {
            "attack": probe_round(
                held.trained,
                release.included,
                config=self.config,
                fleet=self.fleet,
                tokenizer=self.tokenizer,
                max_len=self.max_len,
                server_round=held.server_round,
                aggregate=release.exact_sum,
                noisy=release.noisy_mean,
            )
        }


def probe_round(
    trained: TrainedRound,
    accepted: Collection[str],
    *,
    config: FederationConfig,
    fleet: Fleet,
    tokenizer: WordTokenizer,
    max_len: int,
    server_round: int,
    aggregate: Parameters | None,
    noisy: Parameters | None,
) -> dict[str, dict[str, Any]]:
    """`{"update": ..., "sum": ..., "noisy": ...}`, each {"precision", "recall"}.

    "update" also holds "words": {client_id: top recovered words}, "sum" and
    "noisy" a "words" list: what the server recovered, not what was typed.

    Args:
        aggregate: the sum (or any positive multiple of it, such as the weighted
            mean) the server holds; None skips "sum".
        noisy: DP's released mean; None skips "noisy".
    """
    vocab = tokenizer.vocab_size
    ids = [s.client_id for s in trained.summaries if s.client_id in accepted]

    def truth(client_id: str) -> set[int]:
        return trained_tokens(
            fleet.phone(client_id),
            tokenizer=tokenizer,
            config=config.local,
            max_len=max_len,
            server_round=server_round,
        )

    result: dict[str, dict[str, Any]] = {}
    attacked = ids[: config.privacy.attack_phones]
    if attacked and not config.privacy.secure_aggregation:
        biases = _gather_biases(trained, attacked, vocab)
        scores = [
            score(bias_tokens(biases[c]), truth(c), word_ids=tokenizer.word_ids)
            for c in attacked
        ]
        result["update"] = _mean_score(
            [s.precision for s in scores], [s.recall for s in scores]
        )
        result["update"]["phones"] = float(len(scores))
        result["update"]["words"] = {
            c: top_words(biases[c], bias_tokens(biases[c]), tokenizer) for c in attacked
        }
    union: set[int] = set().union(*(truth(c) for c in ids)) if ids else set()
    for name, released in (("sum", aggregate), ("noisy", noisy)):
        if released is None:
            continue
        recovered = recover_tokens(released, vocab_size=vocab)
        s = score(recovered, union, word_ids=tokenizer.word_ids)
        result[name] = _mean_score([s.precision], [s.recall])
        bias = update_parts(released, vocab_size=vocab)[0]
        result[name]["words"] = top_words(bias, recovered, tokenizer)
    return result


def top_words(
    bias_delta: torch.Tensor,
    recovered: Collection[int],
    tokenizer: WordTokenizer,
    *,
    count: int = TOP_WORDS,
) -> list[str]:
    """The `count` recovered word tokens with the largest bias rise, as words."""
    words = set(tokenizer.word_ids)
    ids = [i for i in recovered if i in words]
    ids.sort(key=lambda i: (-float(bias_delta[i]), i))
    return [tokenizer.decode([i]) for i in ids[:count]]


def _gather_biases(
    trained: TrainedRound, attacked: Sequence[str], vocab: int
) -> dict[str, torch.Tensor]:
    """The attacked phones' output-bias deltas (V,), from whichever rank holds them."""
    mine = {
        c: update_parts(trained.local[c].update, vocab_size=vocab)[0].clone()
        for c in attacked
        if c in trained.local
    }
    merged: dict[str, torch.Tensor] = {}
    for part in trained.ranks.all_gather_objects(mine):
        merged.update(part)  # type: ignore[call-overload]
    return merged


def _mean_score(precisions: list[float], recalls: list[float]) -> dict[str, Any]:
    def mean(values: list[float]) -> float | None:
        finite = [v for v in values if not math.isnan(v)]
        return sum(finite) / len(finite) if finite else None

    return {"precision": mean(precisions), "recall": mean(recalls)}
