"""An empirical lower bound on epsilon from one training run.

Privacy auditing with one training run (Steinke, Nasr and Jagielski 2023, arXiv
2305.08846): plant m canaries, each included independently with probability ½
(S_i = +1 in, −1 out); train once; from what the adversary sees, guess T_i = +1
for the k+ canaries that look most included, −1 for the k− that look least, and
abstain (0) on the rest. If training is (epsilon, delta)-DP with respect to each
canary, the number of correct guesses W = #{i : T_i = S_i} among the r = k+ + k−
guesses satisfies (their Theorem 3.1, with delta)

    P[W >= v] <= f(v) + 2·m·delta · max_{i = 1..v} (f(v − i) − f(v)) / i,
    f(v) = P[Binomial(r, e^eps / (1 + e^eps)) >= v],

so a run with v correct guesses rejects "(eps, delta)-DP" at level beta whenever
that right-hand side, the p-value, is below beta. The audited lower bound is the
largest such eps. Pure functions only: the canaries and the run are in
`coordinator.measure.audit_run`.

Choosing (k+, k−) after seeing the scores would spend the confidence several
times over; `audit` tries a grid fixed in advance and shares beta between its
points (Bonferroni), so its bound holds at level beta whichever point wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
from scipy import stats

# Scores or coins: a sequence or a one-dimensional array.
Floats: TypeAlias = Sequence[float] | np.ndarray
Flags: TypeAlias = Sequence[bool] | np.ndarray

# The audit's default level: the bound holds with probability at least 95 %.
BETA = 0.05
# (k+ = k−) as shares of the canaries, the grid `audit` tries.
GUESS_SHARES: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.5)
# Bisection stops when the bound is known to this absolute width.
_TOLERANCE = 1e-6


class AuditError(ValueError):
    """Audit inputs that cannot be counted; the message says which."""


@dataclass(frozen=True, kw_only=True)
class AuditResult:
    """One audit: the guesses made, how many were right, and the bound they
    prove (`epsilon_lower_bound`, which follows from the other fields)."""

    canaries: int  # m
    k_plus: int  # guessed "in"
    k_minus: int  # guessed "out"
    correct: int  # v, of the r = k_plus + k_minus guesses
    delta: float
    beta: float  # the level the bound holds at (before any grid correction)
    epsilon_lower_bound: float = field(init=False)

    def __post_init__(self) -> None:
        bound = epsilon_lower_bound(
            self.canaries,
            self.guesses,
            self.correct,
            delta=self.delta,
            beta=self.beta,
        )
        object.__setattr__(self, "epsilon_lower_bound", bound)

    @property
    def guesses(self) -> int:
        """r: the guesses that did not abstain."""
        return self.k_plus + self.k_minus


def _check_counts(m: int, r: int, v: int, delta: float) -> None:
    if not 0 <= v <= r <= m:
        raise AuditError(f"need 0 <= correct <= guesses <= canaries: {v}, {r}, {m}")
    if not 0 <= delta <= 1:
        raise AuditError(f"delta must lie in [0, 1], not {delta}")


def p_value(m: int, r: int, v: int, *, epsilon: float, delta: float) -> float:
    """P[at least v of r guesses correct] bound for an (epsilon, delta)-DP run.

    Args:
        m: canaries, each included independently with probability ½.
        r: guesses made (abstentions excluded).
        v: correct guesses.
    """
    _check_counts(m, r, v, delta)
    if not epsilon >= 0:
        raise AuditError(f"epsilon must be >= 0, not {epsilon}")
    if v == 0:
        return 1.0
    q = 1.0 / (1.0 + math.exp(-epsilon))  # eps-DP randomized response's accuracy
    tail = float(stats.binom.sf(v - 1, r, q))  # f(v) = P[Binomial(r, q) >= v]
    # f(v − i) − f(v) = P[v − i <= W < v]: the pmf at v−1, v−2, ..., 0 summed.
    below = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))
    alpha = float(np.max(below / np.arange(1, v + 1)))
    return min(1.0, tail + 2 * m * delta * alpha)


def epsilon_lower_bound(
    m: int, r: int, v: int, *, delta: float, beta: float = BETA
) -> float:
    """The largest epsilon that v correct of r guesses rejects at level beta.

    0 when even epsilon = 0 is not rejected (for instance with no correct
    guess). Bisection keeps the returned value on the rejected side.
    """
    _check_counts(m, r, v, delta)
    if not 0 < beta < 1:
        raise AuditError(f"beta must lie in (0, 1), not {beta}")

    def rejected(epsilon: float) -> bool:
        return p_value(m, r, v, epsilon=epsilon, delta=delta) < beta

    if not rejected(0.0):
        return 0.0
    low, high = 0.0, 1.0
    while rejected(high):
        low, high = high, 2 * high
    while high - low > _TOLERANCE:
        middle = (low + high) / 2
        low, high = (middle, high) if rejected(middle) else (low, middle)
    return low


def guesses(scores: Floats, *, k_plus: int, k_minus: int) -> np.ndarray:
    """+1 for the k_plus highest scores, −1 for the k_minus lowest, else 0.

    Ties are broken by position, so the guesses are a function of the scores.
    """
    m = len(scores)
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > m:
        raise AuditError(f"k+ {k_plus} and k- {k_minus} must fit in {m} canaries")
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    made = np.zeros(m, dtype=int)
    made[order[:k_plus]] = 1
    made[order[m - k_minus :]] = -1
    return made


def audit_at(
    scores: Floats,
    included: Flags,
    *,
    k_plus: int,
    k_minus: int,
    delta: float,
    beta: float = BETA,
) -> AuditResult:
    """The audit at one (k+, k−): the guesses' count of correct ones and bound."""
    if len(scores) != len(included):
        raise AuditError(f"{len(scores)} scores for {len(included)} canaries")
    truth = np.where(np.asarray(included, dtype=bool), 1, -1)
    made = guesses(scores, k_plus=k_plus, k_minus=k_minus)
    correct = int(np.sum(made == truth))
    return AuditResult(
        canaries=len(scores),
        k_plus=k_plus,
        k_minus=k_minus,
        correct=correct,
        delta=delta,
        beta=beta,
    )


def guess_grid(m: int, shares: Sequence[float] = GUESS_SHARES) -> list[int]:
    """The distinct k (= k+ = k−) that `shares` of m canaries give, at least 1."""
    return sorted({min(m // 2, max(1, round(s * m))) for s in shares} - {0})


def audit(
    scores: Floats,
    included: Flags,
    *,
    delta: float,
    beta: float = BETA,
    shares: Sequence[float] = GUESS_SHARES,
) -> AuditResult:
    """The best audit over k+ = k− in `guess_grid`, each point at beta / points.

    The returned result's `beta` is the per-point level; its bound holds at
    level `beta` for the grid as a whole.
    """
    grid = guess_grid(len(scores), shares)
    if not grid:
        raise AuditError("an audit needs at least two canaries")
    level = beta / len(grid)
    results = [
        audit_at(scores, included, k_plus=k, k_minus=k, delta=delta, beta=level)
        for k in grid
    ]
    return max(results, key=lambda a: (a.epsilon_lower_bound, -a.guesses))
