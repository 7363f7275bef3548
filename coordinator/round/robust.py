"""Screening of client updates before aggregation.

A phone can report an update that would poison the global model: the wrong
structure, NaN or Inf after a diverged local run, a bogus example count, or an
update far larger than an honest phone could have made. The screen judges each
report from a few statistics (its norm, whether it is finite, its claimed
`num_examples`, a structural defect), computed on the rank that holds the update
(`device_sim.executor.summarise`), so that the updates themselves stay there.
`screen_stats` then applies, in order:

1. structure: the tensors' number, shapes and dtypes, and an integer
   `num_examples` >= 1 (`problem`);
2. finiteness: NaN or Inf anywhere rejects the update;
3. the example-count bound: a phone trains on at most
   `max(1, max_local_steps // local_epochs) * batch_size` sequences a round, so a
   larger claimed count is a lie that would buy a larger weight in the mean;
4. the absolute norm bound: a phone that runs S steps of plain SGD with step size
   lr on gradients clipped to `grad_clip_norm` cannot move further than
   S * lr * grad_clip_norm, whatever its data; S is what the claimed count allows,
   `min(max_local_steps, local_epochs * ceil(num_examples / batch_size))`;
5. the relative norm rule: an update that moved more than `norm_factor` times a
   robust reference is dropped. It judges the pace, the norm per claimed local
   step (the norm itself when the local settings are unknown), since an honest
   heavy typist's 16 steps move ten times further than a light typist's one: on
   raw norms the rule rejected 4 of 24 honest reports at 6 a round and 13 of
   300 at 20 (docs/robustness.md). The reference is the median of the paces
   accepted in the last rounds (`ScreenHistory`) pooled with this round's
   survivors, so that half a round of hostile reports cannot drag it up, in the
   spirit of the norm-bounding defences studied by Sun et al. 2019 ("Can You
   Really Backdoor Federated Learning?", arXiv 1911.07963);
6. the progress rule: an update whose norm per claimed local step is below
   1 / `norm_factor` of the median per-step norm (recent rounds' and this
   round's) is dropped. A phone that claims more examples than it trained on
   claims more steps than it took, so its update is too short for its count:
   the inflated count that rules 3 and 4 cannot see when the lie stays under
   the bound;
7. the direction rule: an update whose cosine with the coordinate-wise median
   of the round's surviving updates is below `min_cosine` (-0.2) is dropped. A
   sign-flipped update is as long as an honest one and passes every norm rule,
   but it points away from the others. The cosines come from each update's
   count sketch (`device_sim.sketch`), so the updates stay on their ranks; the
   coordinate-wise median is Yin et al.'s (2018, arXiv 1803.01498) robust
   reference, which half a round of hostile updates cannot move.

Rules 5 to 7 live in `coordinator.round.relative_rules`. A median of a few values
means little: rules 5 and 6 need `min_for_norm_check` values (history and this
round together), and rule 7, which has no history, that many survivors in the
round. Below that a round relies on the absolute bounds, and on the history
once it holds enough.

The bounds in 3 and 4 hold for honest phones exactly (FedAvg's ClientUpdate with
the shared training loop: plain SGD, one global clip per step, FedProx's term
inside the clip). Without the local settings (`ScreenConfig`'s defaults) the
screen applies rules 1, 2, 5 and 7 only. Rules 5 to 7 compare reports with each
other, so they need each report's norm and sketch: under secure aggregation,
which hides both, `relative` is off and only rules 1 to 4 apply. Under
differential privacy they are off too (`compares_users`), and no history is
kept: a rule that judges one phone against the others lets one user decide
whether another user's update is counted, in this round through the median and
in later ones through the history, so the sensitivity would no longer be the
clip bound C and amplification by sampling would no longer hold.

Everything here is pure: no I/O, no logging, inputs left unchanged.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np

from coordinator.errors import FederationConfigError
from coordinator.round.relative_rules import RULES, remember
from device_sim.config import LocalTrainingConfig
from models.settings import check_settings, setting

# The relative rule's default factor. On 120 phones, 10 reports a round (20
# rounds, docs/robustness.md) an honest update was at most 4.8 times the pooled
# median norm, while the sign-flipped x5 updates of heavy typists that stayed
# under the absolute bound reached 8 to 14 times it; 10 let those through.
NORM_FACTOR = 5.0
# The direction rule's default: an update pointing away from the round's
# coordinate-wise median, at a cosine below -0.2, is dropped. Late in a run some
# honest updates point slightly away (docs/robustness.md has the cosines), so the
# bound leaves them a margin.
MIN_COSINE = -0.2
# The fewest values a median is taken from (rules 5 to 7). In 20 clean rounds
# of 5 reports, an honest update's sketched cosine with the median of its round
# fell to -0.21; with 10 it stayed above 0.06 (docs/robustness.md).
MIN_FOR_MEDIAN = 6
# Rounding slack of the absolute bound: the clip scales a gradient to grad_clip_norm
# up to 1e-6, and float32 subtraction of the weights adds a little more.
BOUND_SLACK = 1.001


def compares_users(*, secure_aggregation: bool, differential_privacy: bool) -> bool:
    """Whether rules 5 to 7, which judge each phone against the others, may run.

    Not under secure aggregation (the server sees no single norm or sketch), and
    not under DP, where each phone's inclusion may depend on its own report only.
    """
    return not (secure_aggregation or differential_privacy)


@dataclass(frozen=True)
class Rejection:
    """A report left out of aggregation, and why."""

    client_id: str
    # Human-readable, e.g. "shape (4,) != (5,) in tensor 0".
    reason: str


@dataclass(frozen=True)
class UpdateStats:
    """What the screen needs of one report, computed where the update lives."""

    client_id: str
    # The claimed example count (0 when it was no integer: see `problem`).
    num_examples: int
    # L2 norm of the update in float64 (nan when it is not finite or malformed).
    norm: float
    # Whether every value of the update is finite.
    finite: bool
    # A structural defect found on the worker (shape, dtype, count...), or None.
    problem: str | None = None
    # The update's count sketch (`device_sim.sketch`), or None when not shown.
    sketch: np.ndarray | None = None


class StatsLike(Protocol):
    """What `screen_stats` reads: an `UpdateStats`, or any object with its fields
    (an executor's own per-report summary)."""

    @property
    def client_id(self) -> str: ...

    @property
    def num_examples(self) -> int: ...

    @property
    def norm(self) -> float: ...

    @property
    def finite(self) -> bool: ...

    @property
    def problem(self) -> str | None: ...

    @property
    def sketch(self) -> np.ndarray | None: ...


@dataclass(frozen=True)
class ScreenSettings:
    """The screen's rules as a run configures them (`FederationConfig.screen`)."""

    # Reject an update whose norm exceeds this times the robust reference norm:
    # the median of the norms accepted in recent rounds and this one (5 stops
    # the sign-flipped x5 attack that 10 let through).
    norm_factor: float = setting(NORM_FACTOR, above=0, finite=True)
    # Rules 5 and 6 apply only with at least this many values to take the
    # median of (history and this round together); rule 7 with this many
    # survivors in the round. Below it the screen relies on the history and
    # the absolute bounds.
    min_for_norm_check: int = setting(MIN_FOR_MEDIAN, at_least=1)
    # Accepted norms remembered across rounds for the reference (about ten
    # rounds of twenty reports).
    history_size: int = setting(200, at_least=0)
    # Reject an update whose cosine with the round's coordinate-wise median is
    # below this (rule 7, which stops sign-flipped updates); -1 turns the rule
    # off (docs/robustness.md has the cosines measured for honest and flipped
    # updates).
    min_cosine: float = setting(MIN_COSINE, at_least=-1.0, at_most=1.0)

    def __post_init__(self) -> None:
        check_settings(self, FederationConfigError)


@dataclass(frozen=True)
class ScreenConfig(ScreenSettings):
    """The screen of one round: the run's settings and what the server knows."""

    # The phones' local training behind the absolute bounds; None leaves those
    # bounds out (`for_training` takes the run's).
    local: LocalTrainingConfig | None = None
    # Whether the server sees each report's norm and sketch (rules 5 to 7):
    # not under secure aggregation.
    relative: bool = True

    @classmethod
    def of_run(
        cls, settings: ScreenSettings, local: LocalTrainingConfig, *, relative: bool
    ) -> ScreenConfig:
        """The screen of a round of a run with `settings` whose phones train with
        `local`, comparing users' updates if `relative`."""
        shared = {f.name: getattr(settings, f.name) for f in fields(ScreenSettings)}
        return cls(local=local, relative=relative, **shared)

    @classmethod
    def for_training(cls, local: LocalTrainingConfig, **settings: Any) -> ScreenConfig:
        """The screen of a run whose phones train with `local` (all bounds on)."""
        return cls(local=local, **settings)

    def max_examples(self) -> int | None:
        """Most sequences an honest phone trains on in a round (None: unknown)."""
        return None if self.local is None else self.local.sequence_budget()

    def steps(self, num_examples: int) -> int | None:
        """Local steps an honest phone with `num_examples` sequences takes."""
        local = self.local
        if local is None:
            return None
        steps = local.local_epochs * -(-num_examples // local.batch_size)
        if local.max_local_steps is not None:
            steps = min(steps, local.max_local_steps)
        return steps

    def max_norm(self, num_examples: int) -> float | None:
        """Furthest an honest phone with `num_examples` sequences can move."""
        local, steps = self.local, self.steps(num_examples)
        if local is None or steps is None or not local.client_lr:
            return None
        if not local.grad_clip_norm:
            return None  # no clip (grad_clip_norm 0) means no bound
        return steps * local.client_lr * local.grad_clip_norm


@dataclass(frozen=True)
class ScreenHistory:
    """What the screen remembers across rounds: norms it accepted, oldest first."""

    norms: tuple[float, ...] = ()
    # Accepted norms per claimed local step (rule 6), oldest first.
    step_norms: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready (state.json keeps it, so that a resume screens the same)."""
        return {"norms": list(self.norms), "step_norms": list(self.step_norms)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ScreenHistory:
        """The history `to_dict` wrote (None or {}: an empty one)."""
        data = data or {}
        return cls(
            norms=tuple(float(n) for n in data.get("norms", [])),
            step_norms=tuple(float(n) for n in data.get("step_norms", [])),
        )


def _count_problem(num_examples: object) -> str | None:
    if isinstance(num_examples, bool) or not isinstance(num_examples, numbers.Integral):
        return f"num_examples {num_examples!r} is not an integer"
    if num_examples <= 0:
        return f"num_examples {num_examples} <= 0"
    return None


def _bound_reason(s: StatsLike, config: ScreenConfig) -> str | None:
    """Why a finite, well-formed report breaks an absolute bound, if it does."""
    most = config.max_examples()
    if most is not None and s.num_examples > most:
        return (
            f"num_examples {s.num_examples} > {most}, the most a phone trains on "
            "in a round"
        )
    limit = config.max_norm(s.num_examples)
    if limit is not None and s.norm > limit * BOUND_SLACK:
        return (
            f"norm {s.norm:.4g} > {limit:.4g}, the furthest {s.num_examples} "
            "examples' clipped SGD steps can move"
        )
    return None


def screen_stats(
    stats: Sequence[StatsLike],
    *,
    config: ScreenConfig,
    history: ScreenHistory,
) -> tuple[list[str], list[Rejection], ScreenHistory]:
    """The accepted client_ids, rejections with reasons, and the new history.

    Both lists keep the order of `stats`; the history gains the accepted norms.
    """
    reasons: list[str | None] = []
    for s in stats:
        reason = s.problem or _count_problem(s.num_examples)
        if reason is None and not (s.finite and math.isfinite(s.norm)):
            reason = "non-finite values (NaN or Inf) in the update"
        if reason is None:
            reason = _bound_reason(s, config)
        reasons.append(reason)
    if config.relative:
        for rule in RULES:
            rule(stats, reasons, config, history)
    accepted = [s.client_id for s, why in zip(stats, reasons, strict=True) if not why]
    rejected = [
        Rejection(client_id=s.client_id, reason=why)
        for s, why in zip(stats, reasons, strict=True)
        if why is not None
    ]
    if not config.relative:
        return accepted, rejected, history  # it saw no norms to remember
    kept = [s for s, why in zip(stats, reasons, strict=True) if why is None]
    return accepted, rejected, ScreenHistory(*remember(history, kept, config))
