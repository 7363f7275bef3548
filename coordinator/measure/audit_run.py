"""A federated run that audits its own epsilon with canary users.

The one-run audit of `coordinator.measure.audit` (Steinke, Nasr and Jagielski
2023, arXiv 2305.08846) at the unit fedtype's DP protects, the user. Each of m
canary users owns one secret phrase (`corpora.canaries.make_canaries`: random vocabulary
words) and a history that is nothing but that phrase, `repeats` times. A coin
from the stream `(seed, "audit-coins")` decides, independently for each, whether
the user joins the fleet at all: add-or-remove-one-user is exactly the
neighbouring relation the accountant's epsilon is stated for.

The adversary sees what every phone receives: the global model after each round
(round 0 included). It scores each canary by how much more likely a released
model finds the phrase than the model before it (log-perplexity in bits,
`models.exposure.log_perplexities`):

- "total-drop" (the default): round 0's log-perplexity minus the last
  model's, what the run learnt of the phrase in all.
- "max-drop": the largest one-round drop (a canary user is sampled in a few
  rounds only). On the 300-canary audit in docs/privacy_audit.md it proved
  less than "total-drop" in every row.

Only one score may be used per audit (the bound's level is spent once). The
coins are never read by the scoring; they are the truth the guesses are
counted against.

One caveat of the simulation, not of the audit: a DP round samples among the
eligible phones at q = clients_per_round / eligible, so adding a canary user
also moves q by about one part in the pool (under 1 % at a pool of 100 or
more). The accountant charges the q each round really used.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from coordinator.measure.audit import BETA, AuditError, AuditResult, audit
from coordinator.privacy.budget import PrivacyBudgetSpent
from coordinator.privacy.privacy_config import default_delta
from coordinator.run.simulation import Simulation
from corpora.canaries import Canary, CanaryConfig, make_canaries, vocabulary_words
from corpora.corpus import CorpusSplits, UserHistory
from corpora.tokenizer import WordTokenizer
from models.exposure import canary_ids, log_perplexities
from models.model import NextWordModel
from models.seeding import numpy_rng

# Canary users' client_ids start with this; no Chit-Chat user id does.
CANARY_PREFIX = "audit-canary-"
SCORES: tuple[str, ...] = ("total-drop", "max-drop")

RoundCallback = Callable[[int, dict[str, Any]], None]


@dataclass(frozen=True)
class CanaryUsers:
    """m canary users, one phrase each, and the coin that put each in or out."""

    canaries: tuple[Canary, ...]  # canary k's only client_id is its user
    included: tuple[bool, ...]  # the coins: True = the user is in the fleet

    @classmethod
    def make(
        cls,
        *,
        count: int,
        repeats: int,
        seed: int,
        tokenizer: WordTokenizer,
        words_per_canary: int = CanaryConfig.words_per_canary,
    ) -> CanaryUsers:
        """`count` users holding `repeats` copies of their phrase, coins drawn.

        Raises:
            CanaryConfigError: a count or length `CanaryConfig` refuses.
        """
        users = [f"{CANARY_PREFIX}{k:04d}" for k in range(count)]
        config = CanaryConfig(
            count=count,
            repeats=(repeats,),
            words_per_canary=words_per_canary,
            controls=0,
        )
        made = make_canaries(
            vocabulary_words(tokenizer), config, seed=seed, users=users
        )
        coins = numpy_rng(seed, "audit-coins").random(count) < 0.5
        return cls(tuple(made), tuple(bool(c) for c in coins))

    def add_to(self, splits: CorpusSplits) -> CorpusSplits:
        """`splits` with the included canary users appended as training users."""
        users = dict(splits.training_users)
        words = dict(splits.words_per_user)
        for canary, included in zip(self.canaries, self.included, strict=True):
            if not included:
                continue
            (user,) = canary.client_ids
            users[user] = UserHistory(user, (canary.text,) * canary.repeats, ())
            words[user] = len(canary.text.split()) * canary.repeats
        return dataclasses.replace(splits, training_users=users, words_per_user=words)


def first_users(splits: CorpusSplits, count: int | None) -> CorpusSplits:
    """`splits` with its first `count` training users only (None: all)."""
    if count is None:
        return splits
    kept = dict(list(splits.training_users.items())[:count])
    return dataclasses.replace(splits, training_users=kept)


class CanaryScores:
    """The adversary: each canary's score from the models it has seen."""

    def __init__(
        self, users: CanaryUsers, tokenizer: WordTokenizer, initial: NextWordModel
    ) -> None:
        self._ids = torch.tensor(
            [canary_ids(c.text, tokenizer) for c in users.canaries]
        )
        self._bos = tokenizer.bos_id
        self._initial = self._log_perplexities(initial)
        self._last = self._initial
        self._max_drop = np.full(len(users.canaries), -math.inf)

    def _log_perplexities(self, model: NextWordModel) -> np.ndarray:
        return log_perplexities(model, self._ids, bos_id=self._bos)

    def observe(self, model: NextWordModel) -> None:
        """Score the next released global model."""
        now = self._log_perplexities(model)
        self._max_drop = np.maximum(self._max_drop, self._last - now)
        self._last = now

    def scores(self, kind: str) -> np.ndarray:
        """Each canary's score: higher looks more included."""
        if kind == "max-drop":
            return self._max_drop.copy()
        if kind == "total-drop":
            return self._initial - self._last
        raise ValueError(f"unknown score {kind!r} (one of {', '.join(SCORES)})")


@dataclass(frozen=True)
class AuditReport:
    """A run's audit next to the epsilon it claims."""

    result: AuditResult
    epsilon: float  # accounted for the fleet's phones; inf without DP
    delta: float
    rounds: int  # rounds that ran
    score: str
    # The simulated deployment's epsilon (not a guarantee for these phones).
    simulated_epsilon: float | None = None

    @property
    def violated(self) -> bool:
        """Whether the audit proves more leakage than the accountant allowed."""
        return self.result.epsilon_lower_bound > self.epsilon


def audit_simulation(
    simulation: Simulation,
    users: CanaryUsers,
    *,
    score: str = "total-drop",
    beta: float = BETA,
    on_round: RoundCallback | None = None,
) -> AuditReport:
    """Run `simulation` (made with `users.add_to(...)`) to its last round; audit.

    A run whose target epsilon stops it early is audited at the round it
    stopped.

    Raises:
        AuditError: a DP run whose metrics lines hold no epsilon.
    """
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r} (one of {', '.join(SCORES)})")
    adversary = CanaryScores(users, simulation.tokenizer, simulation.global_model)
    while simulation.server_round < simulation.federation.rounds:
        try:
            record = simulation.run_round()
        except PrivacyBudgetSpent:
            break
        adversary.observe(simulation.global_model)
        if on_round is not None:
            on_round(simulation.server_round, record)
    privacy = simulation.federation.privacy
    history = simulation.history()
    delta = privacy.delta if privacy.dp else default_delta(len(simulation.fleet))
    assert delta is not None
    epsilon = _last(history, "epsilon")
    if privacy.dp is not None and epsilon is None:
        # Auditing against an infinite epsilon would pass whatever leaked.
        raise AuditError(f"{simulation.run.path}: a DP run with no epsilon logged")
    simulated = _last(history, "simulated_privacy")
    result = audit(adversary.scores(score), users.included, delta=delta, beta=beta)
    return AuditReport(
        result=result,
        epsilon=math.inf if epsilon is None else float(epsilon),
        delta=delta,
        rounds=simulation.server_round,
        score=score,
        simulated_epsilon=None if simulated is None else float(simulated["epsilon"]),
    )


def _last(history: list[dict[str, Any]], key: str) -> Any:
    """The value of `key` in the last metrics line that holds it, or None."""
    for record in reversed(history):
        if record.get(key) is not None:
            return record[key]
    return None
