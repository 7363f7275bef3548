"""The frozen configuration of a federated run, saved resolved in config.json."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from coordinator.errors import FederationConfigError as FederationConfigError
from coordinator.privacy.privacy_config import PrivacyConfig
from coordinator.round.robust import ScreenSettings
from coordinator.round.server_choices import AggregationConfig, StrategyConfig
from device_sim.config import MASKED_ONLY_KINDS, FleetConfig, LocalTrainingConfig
from models.evaluation_sets import (
    FUTURE_MESSAGES,
    FUTURE_MESSAGES_PER_PHONE,
    HELDOUT_MESSAGES,
    KEYSTROKE_TEXTS,
)
from models.settings import (
    FLEET_RENAME,
    GRAD_CLIP_RENAME,
    ConfigError,
    check_settings,
    renamed,
    setting,
)

# The old flat keys of a config.json written before the strategy, the screen and
# the aggregator were nested: key -> (nested config, its field).
_FLAT_KEYS: dict[str, tuple[str, str]] = {
    "strategy": ("strategy", "name"),
    "server_lr": ("strategy", "server_lr"),
    "server_momentum": ("strategy", "server_momentum"),
    "server_warmup_rounds": ("strategy", "warmup_rounds"),
    "server_momentum_warmup_rounds": ("strategy", "momentum_warmup_rounds"),
    "beta1": ("strategy", "beta1"),
    "beta2": ("strategy", "beta2"),
    "tau": ("strategy", "tau"),
    "norm_factor": ("screen", "norm_factor"),
    "min_for_norm_check": ("screen", "min_for_norm_check"),
    "min_cosine": ("screen", "min_cosine"),
    "aggregator": ("aggregation", "name"),
    "trim_fraction": ("aggregation", "trim_fraction"),
    "byzantine_fraction": ("aggregation", "byzantine_fraction"),
}
# The nested configs, by field, that `from_dict` rebuilds.
_NESTED: dict[str, type] = {
    "strategy": StrategyConfig,
    "screen": ScreenSettings,
    "aggregation": AggregationConfig,
    "local": LocalTrainingConfig,
    "fleet": FleetConfig,
}


def _default_strategy() -> StrategyConfig:
    # FedAvgM (Hsu et al. 2019): in 40-round runs on the default fleet plain
    # FedAvg stayed at the unigram level while FedAvgM reached 15.9 % held-out
    # top-3 (README). Its momentum rises from 0 over the first 5 aggregations,
    # which stops the first rounds' overshoot on small cohorts (docs/learning.md
    # has the measurements); the server warm-up (0: none) stays off.
    return StrategyConfig(name="fedavgm", momentum_warmup_rounds=5)


@dataclass(frozen=True)
class FederationConfig:
    """Rounds, selection, the server strategy, evaluation and checkpoints."""

    # Seeds everything: model init, profiles, selection, dropouts, local shuffles.
    seed: int = setting(0, help="seed of everything random")
    # Rounds `fedtype simulate` runs in all (a resume continues up to this).
    rounds: int = setting(
        60,
        at_least=1,
        help="rounds in all (default: {default}; with --resume the run's own)",
    )
    # Reports the server aggregates per round (Bonawitz et al. 2019's goal count).
    clients_per_round: int = setting(
        20, at_least=1, help="reports aggregated per round"
    )
    # Extra share of phones selected, since some drop out or come late (30 %).
    over_selection: float = setting(0.3, at_least=0, finite=True)
    # A round is aggregated once at least this share of clients_per_round valid
    # reports arrived; with fewer it is abandoned and the reason recorded.
    min_report_fraction: float = setting(0.5, above=0, at_most=1)
    # Simulated seconds the server waits for reports after sending the weights.
    report_deadline_s: float = setting(120.0, above=0, finite=True)
    # Simulated seconds between round starts (a round lasting longer starts the next
    # late): 144 rounds a day, so the eligible share follows the clock.
    round_interval_s: float = setting(600.0, at_least=0, finite=True)
    # The server optimizer and its settings (coordinator.round.server_choices).
    strategy: StrategyConfig = setting(factory=_default_strategy)
    # The screen's rules (coordinator.round.robust): the norm, count and direction
    # checks every report passes before it is aggregated.
    screen: ScreenSettings = setting(factory=ScreenSettings)
    # How the screened updates are combined (coordinator.round.robust_aggregation);
    # the strategy then applies the combined update.
    aggregation: AggregationConfig = setting(factory=AggregationConfig)
    # How each phone trains (local_epochs, client_lr, batch_size, prox_mu, ...).
    local: LocalTrainingConfig = setting(factory=LocalTrainingConfig)
    # Which phones exist and how devices behave (eligibility, dropouts, speed).
    fleet: FleetConfig = setting(factory=FleetConfig)
    # Evaluate the global model every this many rounds (0: never), and after the
    # last round of a `fedtype simulate` call.
    eval_every: int = setting(5, at_least=0, help="evaluate every N rounds, 0 never")
    # Held-out users' messages evaluated: a fixed, evenly spaced sample.
    heldout_messages: int = setting(HELDOUT_MESSAGES, at_least=0)
    # Future messages evaluated on the phones themselves (federated evaluation): a
    # fixed cohort of phones, drawn once from the seed, holding about this many.
    future_messages: int = setting(FUTURE_MESSAGES, at_least=0)
    # A cohort phone contributes at most this many of its future messages, so a
    # few heavy typists do not make up the future metrics.
    future_messages_per_phone: int = setting(FUTURE_MESSAGES_PER_PHONE, at_least=0)
    # Messages on which keystroke savings are simulated, per evaluation set.
    keystroke_texts: int = setting(KEYSTROKE_TEXTS, at_least=0)
    # Keep every this many rounds' global model for good (0: none beyond the last).
    checkpoint_every: int = setting(10, at_least=0)
    # Keep the global model of the last this many rounds (>= 1: resume needs it).
    keep_last: int = setting(3, at_least=1)
    # Ranks the phones are spread over (torch.distributed, gloo on CPU): 1 trains
    # them in this process with no process group; W > 1 needs W processes, which
    # `fedtype simulate --workers W` or torchrun starts. Every W gives the same
    # metrics within float rounding (README, "Speed of the fleet").
    workers: int = setting(
        1,
        at_least=1,
        help="ranks the phones are spread over, one process each on loopback "
        "(gloo); under torchrun its --nproc-per-node decides (default: "
        "%(default)s)",
    )
    # Secure aggregation, differential privacy and the curious-server probe
    # (coordinator.privacy.privacy_config); the default protects nothing.
    privacy: PrivacyConfig = setting(factory=PrivacyConfig)

    def __post_init__(self) -> None:
        check_settings(self, FederationConfigError)
        self._check_privacy()

    def _check_privacy(self) -> None:
        """Protections that conflict with the aggregator or the cohort size."""
        privacy, aggregator = self.privacy, self.aggregation.name
        if privacy.dp is not None and aggregator != "mean":
            raise FederationConfigError(
                f"aggregator {aggregator!r} lets each user's update decide how "
                "the others' are counted, and its sensitivity under DP is not "
                "analysed: DP accepts only the mean"
            )
        if privacy.protected and aggregator != "mean":
            raise FederationConfigError(
                f"aggregator {aggregator!r} needs every plain update; secure "
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
            if local.max_local_steps is None or local.grad_clip_norm == 0:
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
        return replace(self, strategy=self.strategy.resolved())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (nested configs as dicts)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FederationConfig:
        """The config `to_dict` wrote, today or before the strategy, screen and
        aggregator were nested (flat keys); unknown keys are an error."""
        try:
            values = _nest_flat_keys(data)
            # Runs made before the one engine named their executor instead.
            values.pop("executor", None)
            # Runs made before the probes moved to the first local batch.
            values.get("local", {}).pop("loss_sequences", None)
            # Runs made before the gradient clip was named apart from DP's.
            values["local"] = renamed(values.get("local", {}), GRAD_CLIP_RENAME)
            values["fleet"] = renamed(values.get("fleet", {}), FLEET_RENAME)
            for name, kind in _NESTED.items():
                values[name] = kind(**values.get(name, {}))
            # Runs made before the privacy settings protected nothing.
            values["privacy"] = PrivacyConfig.from_dict(values.get("privacy"))
            unknown = sorted(set(values) - {f.name for f in fields(cls)})
            if unknown:
                raise FederationConfigError(f"unknown federation settings {unknown}")
            return cls(**values)
        except ConfigError as error:
            raise FederationConfigError(str(error)) from None
        except TypeError as error:
            raise FederationConfigError(f"bad federation settings ({error})") from None


def _nest_flat_keys(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of `data` whose old flat strategy, screen and aggregator keys are
    moved into their nested configs' dicts."""
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    if not isinstance(values.get("strategy", {}), str):
        return values
    # Runs made before the momentum warm-up stepped without one.
    values.setdefault("server_momentum_warmup_rounds", 0)
    for key, (nested, name) in _FLAT_KEYS.items():
        if key in values:
            values.setdefault(nested, {})[name] = values.pop(key)
    return values
