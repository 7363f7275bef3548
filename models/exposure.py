"""Exposure: how much more likely a model finds a canary than phrases it never saw.

The Secret Sharer (Carlini et al. 2019, arXiv 1802.08232): rank the canary's
log-perplexity among N random candidates of the same shape, here the same number
of words drawn uniformly from the same vocabulary as the canary was (see
`corpora.canaries`). With rank r (1 = more likely than every candidate),

    exposure = log2(N + 1) − log2(r),

so a canary the model never saw (its rank uniform on 1..N+1) has exposure
log2(N + 1) − E[log2 r] ≈ log2 e ≈ 1.44 on average for large N, and one it
memorised reaches the ceiling log2(N + 1). The ceiling is lifted by the
extrapolated exposure: fit a skew-normal to the candidates' log-perplexities and
take −log2 of the fitted CDF at the canary's, the probability that a random
phrase would look at least as familiar (Carlini et al., section 4.2).

Log-perplexity is in bits, −Σ log2 p(w_i | <bos>, w_1..w_{i−1}) over the words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from corpora.canaries import Canary
from corpora.tokenizer import WordTokenizer
from models.model import NextWordModel
from models.seeding import numpy_rng


@dataclass(frozen=True)
class Exposure:
    """One canary's standing among its random candidates."""

    text: str
    repeats: int  # copies per user planted (0: a control)
    log_perplexity: float  # bits
    rank: int  # 1 + candidates with a strictly lower log-perplexity
    candidates: int  # N
    exposure: float  # log2(N + 1) - log2(rank)
    extrapolated: float  # -log2 of the skew-normal fit's CDF at log_perplexity


@torch.no_grad()
def log_perplexities(
    model: NextWordModel, ids: torch.Tensor, *, bos_id: int, batch_size: int = 256
) -> np.ndarray:
    """Each row's log-perplexity in bits, given <bos> as the only context.

    Args:
        ids: Word ids, shape (N, k).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores = []
    for start in range(0, ids.shape[0], batch_size):
        rows = ids[start : start + batch_size].to(device)  # (B, k)
        bos = torch.full((rows.shape[0], 1), bos_id, dtype=torch.long, device=device)
        logits, _ = model(torch.cat([bos, rows[:, :-1]], dim=1))  # (B, k, V)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        picked = log_probs.gather(-1, rows.unsqueeze(-1)).squeeze(-1)  # (B, k)
        scores.append(-picked.sum(dim=1).double().cpu() / math.log(2))
    model.train(was_training)
    return torch.cat(scores).numpy() if scores else np.zeros(0)


def rank_exposure(score: float, candidate_scores: np.ndarray) -> tuple[int, float]:
    """The canary's rank among candidates and its exposure log2(N+1) − log2(r)."""
    rank = 1 + int((candidate_scores < score).sum())
    return rank, math.log2(len(candidate_scores) + 1) - math.log2(rank)


def skewnorm_fit(candidate_scores: np.ndarray) -> tuple[float, float, float]:
    """(shape, loc, scale) of a skew-normal fitted to the candidates' scores."""
    from scipy.stats import skewnorm  # 58 MB: only where canaries are measured

    shape, loc, scale = skewnorm.fit(candidate_scores)
    return float(shape), float(loc), float(scale)


def extrapolated_exposure(
    score: float,
    candidate_scores: np.ndarray,
    *,
    fit: tuple[float, float, float] | None = None,
) -> float:
    """−log2 CDF(score) of a skew-normal fitted to the candidates' scores.

    Args:
        fit: `skewnorm_fit(candidate_scores)` when already computed (a fit costs
            tens of milliseconds; canaries ranked in one pool share it).
    """
    from scipy.stats import skewnorm

    shape, loc, scale = fit or skewnorm_fit(candidate_scores)
    log_cdf = float(skewnorm.logcdf(score, shape, loc, scale))
    return max(0.0, -log_cdf / math.log(2))


def canary_ids(text: str, tokenizer: WordTokenizer) -> list[int]:
    """The canary's word ids; every word must be one in-vocabulary token."""
    ids = tokenizer.encode(text)
    if len(ids) != len(text.split()) or tokenizer.unk_id in ids:
        raise ValueError(f"canary {text!r} is not one vocabulary word per word")
    return ids


def exposures(
    model: NextWordModel,
    canaries: Sequence[Canary],
    *,
    tokenizer: WordTokenizer,
    vocabulary_words: Sequence[str],
    candidates: int = 5000,
    seed: int = 0,
    batch_size: int = 256,
) -> list[Exposure]:
    """The exposure of each canary (planted or control), in order.

    Canaries of one length share one pool of `candidates` random phrases drawn
    from `vocabulary_words` (the list the canaries were drawn from), seeded by
    `(seed, "exposure", length)`.
    """
    vocabulary = np.array([canary_ids(w, tokenizer)[0] for w in vocabulary_words])
    encoded = [canary_ids(c.text, tokenizer) for c in canaries]

    def score_rows(rows: np.ndarray | list[list[int]]) -> np.ndarray:
        return log_perplexities(
            model,
            torch.as_tensor(np.asarray(rows), dtype=torch.long),
            bos_id=tokenizer.bos_id,
            batch_size=batch_size,
        )

    scores = np.zeros(len(canaries))
    pools: dict[int, tuple[np.ndarray, tuple[float, float, float]]] = {}
    for length in sorted({len(ids) for ids in encoded}):
        rng = numpy_rng(seed, "exposure", length)
        drawn = vocabulary[rng.integers(0, len(vocabulary), size=(candidates, length))]
        pool = score_rows(drawn)
        pools[length] = (pool, skewnorm_fit(pool))
        members = [k for k, ids in enumerate(encoded) if len(ids) == length]
        scores[members] = score_rows([encoded[k] for k in members])
    return [
        _exposure(canary, float(score), *pools[len(ids)])
        for canary, ids, score in zip(canaries, encoded, scores, strict=True)
    ]


def _exposure(
    canary: Canary, score: float, pool: np.ndarray, fit: tuple[float, float, float]
) -> Exposure:
    rank, exposure = rank_exposure(score, pool)
    return Exposure(
        text=canary.text,
        repeats=canary.repeats,
        log_perplexity=score,
        rank=rank,
        candidates=len(pool),
        exposure=exposure,
        extrapolated=extrapolated_exposure(score, pool, fit=fit),
    )


def exposure_summary(results: Sequence[Exposure]) -> dict[str, Any]:
    """The compact `exposure` field of a metrics line.

    Means over the canaries of each repeat count (keys are the counts as
    strings) and over the controls, of the rank exposure and, under
    "extrapolated", of the skew-normal exposure:

        {"candidates": N, "max_possible": log2(N + 1),
         "by_repeats": {"1": ..., "4": ..., "16": ...}, "controls": ...,
         "extrapolated": {"1": ..., "4": ..., "16": ..., "controls": ...}}

    A group with no canaries is left out; "controls" is None without controls.
    """
    groups: dict[str, list[Exposure]] = {}
    for result in results:
        key = "controls" if result.repeats == 0 else str(result.repeats)
        groups.setdefault(key, []).append(result)
    planted = sorted((k for k in groups if k != "controls"), key=int)
    candidates = results[0].candidates if results else 0

    def mean(key: str, field: str) -> float | None:
        if key not in groups:
            return None
        return round(float(np.mean([getattr(r, field) for r in groups[key]])), 4)

    return {
        "candidates": candidates,
        "max_possible": round(math.log2(candidates + 1), 4),
        "by_repeats": {k: mean(k, "exposure") for k in planted},
        "controls": mean("controls", "exposure"),
        "extrapolated": {
            k: mean(k, "extrapolated") for k in (*planted, "controls") if k in groups
        },
    }
