"""Frozen settings of a phone's local training and of the simulated fleet."""

from __future__ import annotations

from dataclasses import dataclass

from models.config import (
    DEFAULT_PRECISION,
    PRECISIONS,
    TRAIN_SOFTMAXES,
    TrainingConfig,
)
from models.settings import ConfigError, check_settings, setting

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


class FleetConfigError(ConfigError):
    """A fleet or local-training setting that cannot work; the message says which."""


@dataclass(frozen=True)
class LocalTrainingConfig:
    """How a phone trains in one round (the client side of FedAvg / FedProx)."""

    # Passes over the phone's (sampled) training sequences per round.
    local_epochs: int = setting(1, at_least=1, help="local passes per round")
    # Cap on optimizer steps per round: a heavy typist (4,000 words, about 27
    # batches) would otherwise take many times a median phone's work. The phone
    # samples at most max_local_steps // local_epochs batches of sequences.
    max_local_steps: int | None = setting(
        16, at_least=1, help="local step cap per round"
    )
    # Sequences (messages) per local batch.
    batch_size: int = setting(16, at_least=1)
    # Plain SGD step size on the phone (McMahan et al. 2017 use SGD). With the
    # clip below a step moves the weights by at most client_lr. After 20 FedAvg
    # rounds on the default fleet 1.0 gave the lowest held-out perplexity (377,
    # against 404 at 0.5 and 386 at 2.0).
    client_lr: float = setting(
        1.0, above=0, at_most=MAX_CLIENT_LR, help="phones' SGD step size"
    )
    # FedProx proximal weight mu (Li et al. 2020); 0 is FedAvg's local objective.
    prox_mu: float = setting(
        0.0, at_least=0, finite=True, help="FedProx proximal weight, 0 for none"
    )
    # Global gradient-norm clip of each local step; LSTMs diverge without one.
    grad_clip_norm: float = setting(
        1.0,
        at_least=0,
        finite=True,
        help="phones' gradient-norm clip per local step, 0 for none",
        aliases=("clip-norm",),
    )
    # Arithmetic of local training and the loss probes: "bf16" runs the model's
    # matmuls under `torch.autocast` (fp32 weights, fp32 loss), "fp32" does not.
    # `benchmarks/fleet.py` measures both (README, "Speed of the fleet"). The
    # default is bf16 on a CPU with native bf16 and fp32 elsewhere.
    precision: str = setting(
        DEFAULT_PRECISION,
        choices=PRECISIONS,
        help="arithmetic of the phones' training: bf16 matmuls under autocast "
        "(fp32 weights and loss) or plain fp32 (default: %(default)s)",
    )
    # How a local step scores the output layer: "full" (every word) or "sampled"
    # (each target and `softmax_samples` words drawn from the public unigram
    # distribution, with the log-Q correction: `models.sampled_softmax`).
    # Evaluation always uses the full softmax. Full stays the default:
    # docs/time_to_accuracy.md has the measurements.
    train_softmax: str = setting(
        "full",
        choices=TRAIN_SOFTMAXES,
        help="phones' output layer in training: every word, or each target and "
        "--softmax-samples words from the public unigram distribution with the "
        "log-Q correction (evaluation always uses every word) (default: "
        "%(default)s)",
    )
    # Words drawn per sampled step, shared by the batch (1,024: 2.9x faster steps
    # than the full softmax over 10,036 words in issue 29's probe).
    softmax_samples: int = setting(
        1024, at_least=1, help="words drawn per sampled step"
    )
    # With "sampled", each phone's last this many local steps use the full
    # softmax, which keeps the normalisation of unsampled words learnt (0: none).
    softmax_full_steps: int = setting(
        0,
        at_least=0,
        help="with sampled, each phone's last N local steps use the full softmax",
    )
    # With "sampled", rounds after this one train with the full softmax: a
    # schedule from sampled to full over the run (None: every round samples).
    softmax_sampled_rounds: int | None = setting(
        None,
        at_least=0,
        help="with sampled, rounds after this one train with the full softmax "
        "(default: every round samples)",
    )
    # What a phone sends up (device_sim.compression): "none" (float32), "int8"
    # (QSGD 8-bit, a scale per tensor) or "topk:F" (the fraction F of each
    # tensor's largest values, with error feedback on the phone).
    update_compression: str = setting(
        "none",
        help="what a phone sends up: none (float32), int8 (QSGD 8-bit, "
        "stochastic rounding) or topk:F (each tensor's largest fraction F, error "
        "feedback on the phone) (default: %(default)s)",
    )

    def __post_init__(self) -> None:
        check_settings(self, FleetConfigError)
        from device_sim.compression_spec import parse_compression

        parse_compression(self.update_compression)

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
            grad_clip_norm=self.grad_clip_norm,
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
    max_users: int | None = setting(None, at_least=1)
    # Split each user's history into phones of this many messages (None: one phone
    # a user). Conversation-sized shards turn 966 users into ~10,000 phones for
    # scale tests; a shard's future text is the user's future part, shared out.
    messages_per_phone: int | None = setting(
        None,
        at_least=1,
        help="one phone per this many messages of a user (default: one phone a user)",
        aliases=("shard-messages",),
    )
    # Keyboard eligibility (idle, charging, unmetered network; Bonawitz et al.
    # 2019). False: every phone is eligible at every moment.
    eligibility: bool = setting(
        True,
        flag="always-eligible",
        help="ignore the phones' idle/charging/Wi-Fi pattern",
    )
    # Mean length in hours of a phone's nightly charge, its local evening onward.
    charge_hours: float = setting(8.0, above=0, at_most=24)
    # Mean chance that a phone is on an unmetered network (Wi-Fi) on a given night.
    unmetered_prob: float = setting(0.8, at_least=0, at_most=1)
    # Chance that a charging, unmetered phone is idle when the server checks in.
    idle_prob: float = setting(0.9, at_least=0, at_most=1)
    # Chance that a selected phone drops out during a round (0: never).
    dropout_rate: float = setting(
        0.05, at_least=0, at_most=1, help="chance a selected phone drops out"
    )
    # Log-normal spread of the per-phone speed factor (0: every phone alike).
    speed_sigma: float = setting(0.5, at_least=0, finite=True)
    # Simulated seconds of one local step on a median phone.
    step_seconds: float = setting(0.5, above=0, finite=True)
    # Median download/upload rate in megabits a second (log-normal across phones).
    bandwidth_mbps: float = setting(20.0, above=0, finite=True)
    # Share of phones whose updates are corrupted (buggy or hostile devices).
    faulty_fraction: float = setting(
        0.0,
        at_least=0,
        at_most=1,
        help="share of phones that send a corrupted or hostile report",
    )
    # How a faulty phone corrupts its report: one of FAULT_KINDS (device_sim.faults).
    fault_kind: str = setting(
        "nan",
        choices=FAULT_KINDS,
        help="what a faulty phone sends: a NaN or Inf value, its update scaled "
        "(scale) or flipped and scaled (sign), an inflated example count (count), "
        "a wrong shape or dtype; under --secure-aggregation the hostile kinds skip "
        "the clip and the range, and two more lie inside the mask: every "
        "coordinate at the top of the range (range) or a weight of --fault-scale "
        "behind an honest count (weight) (default: %(default)s)",
    )
    # The factor of the kinds scale (update x f), sign (update x -f) and count
    # (num_examples x f); None takes the kind's default, `default_fault_scale`:
    # 1000 for scale, 5 for sign, 100 for count.
    fault_scale: float | None = setting(
        None,
        above=0,
        finite=True,
        help="factor of scale, sign, count and weight faults (default: 1000 for "
        "scale, 5 for sign, 100 for count, 4096 for weight)",
    )
    # Hour (UTC) of simulated day 0 at which round 1 starts.
    start_hour_utc: float = setting(20.0, at_least=0, below=24)

    def __post_init__(self) -> None:
        check_settings(self, FleetConfigError)
