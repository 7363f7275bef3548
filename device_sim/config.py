"""Frozen settings of a phone's local training and of the simulated fleet."""

from __future__ import annotations

import math
from dataclasses import dataclass

from models.config import (
    DEFAULT_PRECISION,
    PRECISIONS,
    TRAIN_SOFTMAXES,
    TrainingConfig,
    check_choice,
)

__all__ = [
    "FAULT_KINDS",
    "HOSTILE_KINDS",
    "MASKED_ONLY_KINDS",
    "FleetConfig",
    "FleetConfigError",
    "LocalTrainingConfig",
]

# Every kind of fault, as `FleetConfig.fault_kind` accepts them (what each sends
# instead of the honest report, `device_sim.faults.corrupt_report`):
#   nan, inf  one value of the first tensor is NaN or +Inf
#   scale     the update times `scale` (a blown-up update)
#   sign      the update times -`scale` (pushing the model backwards)
#   count     num_examples times `scale`, the update unchanged (a bought weight)
#   shape     the first tensor one value short
#   dtype     every tensor in float64
#   range     under secure aggregation, every coordinate at the top of the range
#   weight    under secure aggregation, the honest count reported but the update
#             weighted by `scale` inside the masked vector
FAULT_KINDS: tuple[str, ...] = (
    "nan",
    "inf",
    "scale",
    "sign",
    "count",
    "shape",
    "dtype",
    "range",
    "weight",
)
# The kinds that only a phone inside a masked sum can carry out.
MASKED_ONLY_KINDS: tuple[str, ...] = ("range", "weight")
# The hostile kinds: under secure aggregation they skip the honest pipeline
# (the others are buggy phones, caught by their own finite and shape flags).
HOSTILE_KINDS: tuple[str, ...] = ("scale", "sign", "count", *MASKED_ONLY_KINDS)

# The largest client_lr accepted: the tuned value is 1.0 (0.5 to 2 measured), and
# far larger steps only turn the model to NaN while staying under the screen's
# absolute bound, which grows with client_lr.
MAX_CLIENT_LR = 100.0


class FleetConfigError(ValueError):
    """A fleet or local-training setting that cannot work; the message says which."""


@dataclass(frozen=True)
class LocalTrainingConfig:
    """How a phone trains in one round (the client side of FedAvg / FedProx)."""

    # Passes over the phone's (sampled) training sequences per round.
    local_epochs: int = 1
    # Cap on optimizer steps per round: a heavy typist (4,000 words, about 27
    # batches) would otherwise take many times a median phone's work. The phone
    # samples at most max_local_steps // local_epochs batches of sequences.
    max_local_steps: int | None = 16
    # Sequences (messages) per local batch.
    batch_size: int = 16
    # Plain SGD step size on the phone (McMahan et al. 2017 use SGD). With the
    # clip below a step moves the weights by at most client_lr. After 20 FedAvg
    # rounds on the default fleet 1.0 gave the lowest held-out perplexity (377,
    # against 404 at 0.5 and 386 at 2.0).
    client_lr: float = 1.0
    # FedProx proximal weight mu (Li et al. 2020); 0 is FedAvg's local objective.
    prox_mu: float = 0.0
    # Global gradient-norm clip of each local step; LSTMs diverge without one.
    clip_norm: float = 1.0
    # Arithmetic of local training and the loss probes: "bf16" runs the model's
    # matmuls under `torch.autocast` (fp32 weights, fp32 loss), "fp32" does not.
    # `benchmarks/fleet.py` measures both (README, "Speed of the fleet"). The
    # default is bf16 on a CPU with native bf16 and fp32 elsewhere.
    precision: str = DEFAULT_PRECISION
    # How a local step scores the output layer: "full" (every word) or "sampled"
    # (each target and `softmax_samples` words drawn from the public unigram
    # distribution, with the log-Q correction: `models.sampled_softmax`).
    # Evaluation always uses the full softmax. Full stays the default:
    # docs/time_to_accuracy.md has the measurements.
    train_softmax: str = "full"
    # Words drawn per sampled step, shared by the batch (1,024: 2.9x faster steps
    # than the full softmax over 10,036 words in issue 29's probe).
    softmax_samples: int = 1024
    # With "sampled", each phone's last this many local steps use the full
    # softmax, which keeps the normalisation of unsampled words learnt (0: none).
    softmax_full_steps: int = 0
    # With "sampled", rounds after this one train with the full softmax: a
    # schedule from sampled to full over the run (None: every round samples).
    softmax_sampled_rounds: int | None = None
    # What a phone sends up (device_sim.compression): "none" (float32), "int8"
    # (QSGD 8-bit, a scale per tensor) or "topk:F" (the fraction F of each
    # tensor's largest values, with error feedback on the phone).
    update_compression: str = "none"

    def __post_init__(self) -> None:
        check_choice("precision", self.precision, PRECISIONS, FleetConfigError)
        from device_sim.compression_spec import parse_compression

        parse_compression(self.update_compression)
        check_choice(
            "train_softmax", self.train_softmax, TRAIN_SOFTMAXES, FleetConfigError
        )
        if self.softmax_samples < 1:
            raise FleetConfigError(
                f"softmax_samples must be >= 1, got {self.softmax_samples}"
            )
        if self.softmax_full_steps < 0:
            raise FleetConfigError(
                f"softmax_full_steps must be >= 0, got {self.softmax_full_steps}"
            )
        if self.softmax_sampled_rounds is not None and self.softmax_sampled_rounds < 0:
            raise FleetConfigError(
                "softmax_sampled_rounds must be >= 0 or None, got "
                f"{self.softmax_sampled_rounds}"
            )
        if self.local_epochs < 1:
            raise FleetConfigError(
                f"local_epochs must be >= 1, got {self.local_epochs}"
            )
        if self.max_local_steps is not None and self.max_local_steps < 1:
            raise FleetConfigError(
                f"max_local_steps must be >= 1 or None, got {self.max_local_steps}"
            )
        if self.batch_size < 1:
            raise FleetConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 < self.client_lr <= MAX_CLIENT_LR:
            raise FleetConfigError(
                f"client_lr must lie in (0, {MAX_CLIENT_LR:g}], got {self.client_lr}"
            )
        if not (self.prox_mu >= 0 and math.isfinite(self.prox_mu)):
            raise FleetConfigError(
                f"prox_mu must be >= 0 and finite, got {self.prox_mu}"
            )
        if not (self.clip_norm >= 0 and math.isfinite(self.clip_norm)):
            raise FleetConfigError(
                f"clip_norm must be >= 0 and finite (0: no clip), got {self.clip_norm}"
            )

    def training_config(self, server_round: int | None = None) -> TrainingConfig:
        """The shared training loop's settings for one round on a phone.

        Args:
            server_round: the round, for the softmax schedule; None for any
                round the schedule samples in.
        """
        sampled_rounds = self.softmax_sampled_rounds
        late = (
            server_round is not None
            and sampled_rounds is not None
            and server_round > sampled_rounds
        )
        return TrainingConfig(
            batch_size=self.batch_size,
            lr=self.client_lr,
            optimizer="sgd",
            epochs=self.local_epochs,
            max_steps=self.max_local_steps,
            clip_norm=self.clip_norm,
            prox_mu=self.prox_mu,
            precision=self.precision,
            train_softmax="full" if late else self.train_softmax,
            softmax_samples=self.softmax_samples,
            softmax_full_steps=self.softmax_full_steps,
        )

    def sequence_budget(self) -> int | None:
        """Most sequences a phone trains on in a round (None: all it has)."""
        if self.max_local_steps is None:
            return None
        return max(1, self.max_local_steps // self.local_epochs) * self.batch_size


@dataclass(frozen=True)
class FleetConfig:
    """Which phones exist and how real devices behave; each realism switch offable."""

    # Phones built from at most this many training users (None: all). Tests use
    # a few dozen; the order is the corpus's sorted user order.
    max_users: int | None = None
    # Split each user's history into phones of this many messages (None: one phone
    # a user). Conversation-sized shards turn 966 users into ~10,000 phones for
    # scale tests; a shard's future text is the user's future part, shared out.
    shard_messages: int | None = None
    # Keyboard eligibility (idle, charging, unmetered network; Bonawitz et al.
    # 2019). False: every phone is eligible at every moment.
    eligibility: bool = True
    # Mean length in hours of a phone's nightly charge, its local evening onward.
    charge_hours: float = 8.0
    # Mean chance that a phone is on an unmetered network (Wi-Fi) on a given night.
    unmetered_prob: float = 0.8
    # Chance that a charging, unmetered phone is idle when the server checks in.
    idle_prob: float = 0.9
    # Chance that a selected phone drops out during a round (0: never).
    dropout_rate: float = 0.05
    # Log-normal spread of the per-phone speed factor (0: every phone alike).
    speed_sigma: float = 0.5
    # Simulated seconds of one local step on a median phone.
    step_seconds: float = 0.5
    # Median download/upload rate in megabits a second (log-normal across phones).
    bandwidth_mbps: float = 20.0
    # Share of phones whose updates are corrupted (buggy or hostile devices).
    faulty_fraction: float = 0.0
    # How a faulty phone corrupts its report: one of FAULT_KINDS (device_sim.faults).
    fault_kind: str = "nan"
    # The factor of the kinds scale (update x f), sign (update x -f) and count
    # (num_examples x f); None takes the kind's default, `default_fault_scale`:
    # 1000 for scale, 5 for sign, 100 for count.
    fault_scale: float | None = None
    # Hour (UTC) of simulated day 0 at which round 1 starts.
    start_hour_utc: float = 20.0

    def __post_init__(self) -> None:
        for name in ("unmetered_prob", "idle_prob", "dropout_rate", "faulty_fraction"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise FleetConfigError(f"{name} must lie in [0, 1], got {value}")
        if self.fault_kind not in FAULT_KINDS:
            raise FleetConfigError(
                f"unknown fault_kind {self.fault_kind!r} (one of {FAULT_KINDS})"
            )
        if self.fault_scale is not None and not (
            self.fault_scale > 0 and math.isfinite(self.fault_scale)
        ):
            raise FleetConfigError(
                f"fault_scale must be positive and finite, got {self.fault_scale}"
            )
        if self.shard_messages is not None and self.shard_messages < 1:
            raise FleetConfigError(
                f"shard_messages must be >= 1 or None, got {self.shard_messages}"
            )
        if self.max_users is not None and self.max_users < 1:
            raise FleetConfigError(f"max_users must be >= 1, got {self.max_users}")
        if not 0 < self.charge_hours <= 24:
            raise FleetConfigError(
                f"charge_hours must lie in (0, 24], got {self.charge_hours}"
            )
        if self.step_seconds <= 0 or self.bandwidth_mbps <= 0 or self.speed_sigma < 0:
            raise FleetConfigError(
                "step_seconds and bandwidth_mbps must be positive, speed_sigma >= 0"
            )
        for name in ("step_seconds", "bandwidth_mbps", "speed_sigma"):
            if not math.isfinite(getattr(self, name)):
                raise FleetConfigError(
                    f"{name} must be finite, got {getattr(self, name)}"
                )
        if not 0 <= self.start_hour_utc < 24:
            raise FleetConfigError(
                f"start_hour_utc must lie in [0, 24), got {self.start_hour_utc}"
            )
