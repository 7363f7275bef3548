"""The frozen configuration of a federated run, saved resolved in config.json."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from coordinator.privacy.privacy_config import PrivacyConfig, PrivacyConfigError
from coordinator.round.robust import MIN_COSINE, MIN_FOR_MEDIAN, NORM_FACTOR
from coordinator.round.server_choices import (
    AGGREGATORS,
    STRATEGIES,
    StrategyConfig,
    default_server_lr,
)
from device_sim.config import (
    MASKED_ONLY_KINDS,
    FleetConfig,
    FleetConfigError,
    LocalTrainingConfig,
)
from models.config import check_choice
from models.evaluation_sets import (
    FUTURE_MESSAGES,
    FUTURE_MESSAGES_PER_PHONE,
    HELDOUT_MESSAGES,
    KEYSTROKE_TEXTS,
)

# The largest server_lr accepted: FedAvg's is 1.0 and the adaptive strategies'
# 0.01; a far larger step only throws the model to NaN.
MAX_SERVER_LR = 100.0


class FederationConfigError(ValueError):
    """A federation setting that cannot work; the message says which and why."""


@dataclass(frozen=True)
class FederationConfig:
    """Rounds, selection, the server strategy, evaluation and checkpoints."""

    # Seeds everything: model init, profiles, selection, dropouts, local shuffles.
    seed: int = 0
    # Rounds `fedtype simulate` runs in all (a resume continues up to this).
    rounds: int = 60
    # Reports the server aggregates per round (Bonawitz et al. 2019's goal count).
    clients_per_round: int = 20
    # Extra share of phones selected, since some drop out or come late (30 %).
    over_selection: float = 0.3
    # A round is aggregated once at least this share of clients_per_round valid
    # reports arrived; with fewer it is abandoned and the reason recorded.
    min_report_fraction: float = 0.5
    # Simulated seconds the server waits for reports after sending the weights.
    report_deadline_s: float = 120.0
    # Simulated seconds between round starts (a round lasting longer starts the next
    # late): 144 rounds a day, so the eligible share follows the clock.
    round_interval_s: float = 600.0
    # Server optimizer: fedavg | fedavgm | fedadam | fedyogi | fedadagrad. FedAvgM
    # (Hsu et al. 2019): in 40-round runs on the default fleet plain FedAvg stayed
    # at the unigram level while FedAvgM reached 15.9 % held-out top-3 (README).
    strategy: str = "fedavgm"
    # Server step size; None takes the strategy's default (`default_server_lr`).
    server_lr: float | None = None
    # FedAvgM momentum (Hsu et al. 2019).
    server_momentum: float = StrategyConfig.server_momentum
    # Server warm-up: the first this many aggregations step with a server_lr
    # rising linearly to its value (coordinator.round.strategies). 0 (none) stays the
    # default: docs/learning.md has the measurements.
    server_warmup_rounds: int = StrategyConfig.warmup_rounds
    # FedAvgM's momentum rises linearly from 0 to server_momentum over this many
    # aggregations (coordinator.round.strategies), which stops the first rounds'
    # overshoot on small cohorts: docs/learning.md has the measurements.
    server_momentum_warmup_rounds: int = 5
    # FedAdam/FedYogi/FedAdagrad first- and second-moment decays and adaptivity
    # (Reddi et al. 2021).
    beta1: float = StrategyConfig.beta1
    beta2: float = StrategyConfig.beta2
    tau: float = StrategyConfig.tau
    # An update whose norm exceeds this multiple of the median of the norms
    # accepted in recent rounds and this one is rejected (coordinator.round.robust: 5
    # stops the sign-flipped x5 attack that 10 let through).
    norm_factor: float = NORM_FACTOR
    # The screen's relative rules need at least this many values to have a
    # median to trust (coordinator.round.robust; below it they rely on the history
    # and the absolute bounds).
    min_for_norm_check: int = MIN_FOR_MEDIAN
    # An update whose cosine with the round's coordinate-wise median update is
    # below this is rejected (coordinator.round.robust's direction rule, which stops
    # sign-flipped updates); -1 turns the rule off.
    min_cosine: float = MIN_COSINE
    # How the screened updates are combined (coordinator.round.robust_aggregation):
    # "mean" (FedAvg's example-weighted mean), "median" or "trimmed-mean"
    # (coordinate-wise, Yin et al. 2018), "krum" or "multi-krum" (Blanchard et al.
    # 2017). The server optimizer (`strategy`) then applies the combined update.
    aggregator: str = "mean"
    # trimmed-mean: share of each coordinate's values dropped at each end (beta).
    trim_fraction: float = 0.1
    # krum / multi-krum: share of a round's reports assumed hostile (f = floor of
    # this times the reports, at most what Krum tolerates).
    byzantine_fraction: float = 0.3
    # How each phone trains (local_epochs, client_lr, batch_size, prox_mu, ...).
    local: LocalTrainingConfig = field(default_factory=LocalTrainingConfig)
    # Which phones exist and how devices behave (eligibility, dropouts, speed).
    fleet: FleetConfig = field(default_factory=FleetConfig)
    # Evaluate the global model every this many rounds (0: never), and after the
    # last round of a `fedtype simulate` call.
    eval_every: int = 5
    # Held-out users' messages evaluated: a fixed, evenly spaced sample.
    heldout_messages: int = HELDOUT_MESSAGES
    # Future messages evaluated on the phones themselves (federated evaluation): a
    # fixed cohort of phones, drawn once from the seed, holding about this many.
    future_messages: int = FUTURE_MESSAGES
    # A cohort phone contributes at most this many of its future messages, so a
    # few heavy typists do not make up the future metrics.
    future_messages_per_phone: int = FUTURE_MESSAGES_PER_PHONE
    # Messages on which keystroke savings are simulated, per evaluation set.
    keystroke_texts: int = KEYSTROKE_TEXTS
    # Keep every this many rounds' global model for good (0: none beyond the last).
    checkpoint_every: int = 10
    # Keep the global model of the last this many rounds (>= 1: resume needs it).
    keep_last: int = 3
    # Ranks the phones are spread over (torch.distributed, gloo on CPU): 1 trains
    # them in this process with no process group; W > 1 needs W processes, which
    # `fedtype simulate --workers W` or torchrun starts. Every W gives the same
    # metrics within float rounding (README, "Speed of the fleet").
    workers: int = 1
    # Secure aggregation, differential privacy and the curious-server probe
    # (coordinator.privacy.privacy_config); the default protects nothing.
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    def __post_init__(self) -> None:
        check_choice("strategy", self.strategy, STRATEGIES, FederationConfigError)
        positive = ("rounds", "clients_per_round", "keep_last")
        for name in positive:
            if getattr(self, name) < 1:
                raise FederationConfigError(f"{name} must be >= 1")
        non_negative = ("over_selection", "eval_every", "checkpoint_every")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise FederationConfigError(f"{name} must be >= 0")
        if not 0 < self.min_report_fraction <= 1:
            raise FederationConfigError("min_report_fraction must lie in (0, 1]")
        if self.report_deadline_s <= 0 or self.round_interval_s < 0:
            raise FederationConfigError(
                "report_deadline_s must be positive and round_interval_s >= 0"
            )
        if self.workers < 1:
            raise FederationConfigError(f"workers must be >= 1, got {self.workers}")
        self._check_finite_and_robust()
        self._check_privacy()
        self.strategy_config()

    def _check_privacy(self) -> None:
        """Protections that conflict with the aggregator or the cohort size."""
        privacy = self.privacy
        if privacy.dp is not None and self.aggregator != "mean":
            raise FederationConfigError(
                f"aggregator {self.aggregator!r} lets each user's update decide how "
                "the others' are counted, and its sensitivity under DP is not "
                "analysed: DP accepts only the mean"
            )
        if privacy.protected and self.aggregator != "mean":
            raise FederationConfigError(
                f"aggregator {self.aggregator!r} needs every plain update; secure "
                "aggregation and DP only release sums (use the mean)"
            )
        fleet = self.fleet
        masked_only = fleet.fault_kind in MASKED_ONLY_KINDS
        if masked_only and fleet.faulty_fraction > 0 and not privacy.secure_aggregation:
            raise FederationConfigError(
                f"fault_kind {fleet.fault_kind!r} lies inside a masked sum: it needs "
                "secure aggregation (without it the server weights each update)"
            )
        if privacy.secure_aggregation and privacy.dp is None:
            local = self.local
            if local.max_local_steps is None or local.clip_norm == 0:
                raise FederationConfigError(
                    "secure aggregation needs a bound on each update: a local step "
                    "cap and a local clip norm, or a DP clip norm"
                )
        compression = self.local.update_compression
        if compression != "none" and privacy.secure_aggregation:
            raise FederationConfigError(
                f"update_compression {compression} does not compose with secure "
                "aggregation: a masked update is dense in SecAgg's own fixed-point "
                "width, and top-k would show the server the indices"
            )
        if compression.startswith("topk") and self.workers > 1:
            raise FederationConfigError(
                "update_compression topk keeps each phone's error feedback in the "
                "process that trains it: use one worker"
            )
        dp = privacy.dp
        if dp is not None and dp.expected_clients != self.clients_per_round:
            raise FederationConfigError(
                f"DP's expected_clients {dp.expected_clients} must equal "
                f"clients_per_round {self.clients_per_round} (q = m / population)"
            )

    def _check_finite_and_robust(self) -> None:
        """NaN or Inf settings, and the screen's and aggregator's settings."""
        for name in ("over_selection", "report_deadline_s", "round_interval_s"):
            if not math.isfinite(getattr(self, name)):
                raise FederationConfigError(
                    f"{name} must be finite, got {getattr(self, name)}"
                )
        if self.server_lr is not None and not 0 < self.server_lr <= MAX_SERVER_LR:
            raise FederationConfigError(
                f"server_lr must lie in (0, {MAX_SERVER_LR:g}], got {self.server_lr}"
            )
        if not (self.norm_factor > 0 and math.isfinite(self.norm_factor)):
            raise FederationConfigError(
                f"norm_factor must be positive and finite, got {self.norm_factor}"
            )
        if self.min_for_norm_check < 1:
            raise FederationConfigError("min_for_norm_check must be >= 1")
        if not -1.0 <= self.min_cosine <= 1.0:
            raise FederationConfigError(
                f"min_cosine must lie in [-1, 1], got {self.min_cosine}"
            )
        check_choice("aggregator", self.aggregator, AGGREGATORS, FederationConfigError)
        for name in ("trim_fraction", "byzantine_fraction"):
            if not 0 <= getattr(self, name) < 0.5:
                raise FederationConfigError(
                    f"{name} must lie in [0, 0.5), got {getattr(self, name)}"
                )
        counts = ("heldout_messages", "future_messages", "future_messages_per_phone")
        for name in (*counts, "keystroke_texts"):
            if getattr(self, name) < 0:
                raise FederationConfigError(f"{name} must be >= 0")

    @property
    def min_reports(self) -> int:
        """Valid reports a round needs to be aggregated."""
        return max(1, math.ceil(self.min_report_fraction * self.clients_per_round))

    @property
    def selection_size(self) -> int:
        """Phones selected per round, over-selection included."""
        return math.ceil(self.clients_per_round * (1 + self.over_selection))

    def resolved(self) -> FederationConfig:
        """This config with the strategy's default server_lr filled in."""
        if self.server_lr is not None:
            return self
        return replace(self, server_lr=default_server_lr(self.strategy))

    def strategy_config(self) -> StrategyConfig:
        """The server strategy's settings."""
        server_lr = self.server_lr
        if server_lr is None:
            server_lr = default_server_lr(self.strategy)
        try:
            return StrategyConfig(
                name=self.strategy,
                server_lr=server_lr,
                server_momentum=self.server_momentum,
                beta1=self.beta1,
                beta2=self.beta2,
                tau=self.tau,
                warmup_rounds=self.server_warmup_rounds,
                momentum_warmup_rounds=self.server_momentum_warmup_rounds,
            )
        except ValueError as error:
            raise FederationConfigError(str(error)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (nested configs as dicts)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FederationConfig:
        """The config `to_dict` wrote; unknown keys are an error."""
        try:
            values = dict(data)
            # Runs made before the momentum warm-up stepped without one.
            values.setdefault("server_momentum_warmup_rounds", 0)
            # Runs made before the one engine named their executor instead.
            values.pop("executor", None)
            local = dict(values.get("local", {}))
            # Runs made before the probes moved to the first local batch.
            local.pop("loss_sequences", None)
            values["local"] = LocalTrainingConfig(**local)
            values["fleet"] = FleetConfig(**values.get("fleet", {}))
            # Runs made before the privacy settings protected nothing.
            values["privacy"] = PrivacyConfig.from_dict(values.get("privacy"))
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise FederationConfigError(f"unknown federation settings {unknown}")
            return cls(**values)
        except (FleetConfigError, PrivacyConfigError) as error:
            raise FederationConfigError(str(error)) from None
        except TypeError as error:
            raise FederationConfigError(f"bad federation settings ({error})") from None
