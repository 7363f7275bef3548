"""The sampled softmax of local training (Jean et al. 2015, arXiv 1412.2007).

The full softmax scores every row against all V words, and the tied output layer
is most of a token's arithmetic. A sampled step scores each row against its own
target and a set of S words shared by the whole batch, drawn with replacement from
a public proposal q (wordfreq's unigram frequencies, `public_unigram_log_probs`:
no phone's text). The normaliser Z = sum_w exp(s_w) is estimated by importance
sampling (Bengio & Senecal 2008):

    Z ~ exp(s_t) + sum_{j in samples, j != t} exp(s_j - log(S * q_j)),

the target's own term exact, every other word stood for by the draws, each
corrected by the log of its expected count S * q_j (the log-Q correction); a draw
of the row's target is dropped since the exact term already counts it. The loss
-s_t + log Z is the full cross-entropy when the draws are the whole vocabulary
once each with S * q = 1 (a uniform q and S = V), which the tests check.

Training only: evaluation, suggestions and the central baseline's reported
figures always score the full vocabulary.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from corpora.tokenizer import WordTokenizer
from models.baseline import public_unigram_log_probs

# Proposals by tokenizer fingerprint: wordfreq's dictionary takes a while to load.
_PROPOSALS: dict[str, torch.Tensor] = {}


def public_proposal(tokenizer: WordTokenizer) -> torch.Tensor:
    """The sampled softmax's proposal: public unigram log-probabilities, (V,)."""
    key = tokenizer.fingerprint()
    if key not in _PROPOSALS:
        _PROPOSALS[key] = public_unigram_log_probs(tokenizer)
    return _PROPOSALS[key]


class WordSampler:
    """Draws a step's shared words from a proposal q, with their log expected counts.

    Args:
        log_probs: log q, shape (V,); its exponentials sum to 1.
        samples: S, the draws a step makes (with replacement).
        rng: the stream the draws come from.
    """

    def __init__(
        self, log_probs: torch.Tensor, *, samples: int, rng: np.random.Generator
    ) -> None:
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        probs = torch.exp(log_probs.double()).numpy()
        self._cdf = np.cumsum(probs / probs.sum())
        self._log_expected = log_probs.float() + math.log(samples)  # (V,)
        self._samples = samples
        self._rng = rng

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """S word ids, (S,), and log(S * q) of each, (S,)."""
        uniform = self._rng.random(self._samples)
        ids = np.searchsorted(self._cdf, uniform, side="right")
        ids = np.minimum(ids, len(self._cdf) - 1)  # a cdf rounded just below 1
        words = torch.from_numpy(ids.astype(np.int64))
        return words, self._log_expected[words]


def sampled_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    samples: torch.Tensor,
    log_expected: torch.Tensor,
) -> torch.Tensor:
    """Per-row sampled-softmax loss -s_t + log Z_hat (see the module docstring).

    Args:
        logits: (N, 1 + S): column 0 each row's target's logit, then the
            logits of the shared samples.
        targets: (N,) target ids.
        samples: (S,) sampled ids.
        log_expected: (S,) log(S * q) of each sample.

    Returns:
        (N,) losses, in fp32.
    """
    logits = logits.float()
    target = logits[:, 0]  # (N,)
    others = logits[:, 1:] - log_expected  # (N, S)
    hits = samples[None, :] == targets[:, None]  # (N, S)
    others = others.masked_fill(hits, float("-inf"))
    return torch.logsumexp(torch.cat([target[:, None], others], dim=1), 1) - target
