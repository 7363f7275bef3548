"""Frozen configurations of the model and of one training run over token batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.settings import ConfigError, check_settings, setting

# The arithmetic a training step can use (`TrainingConfig.precision`).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX).

    Without it, oneDNN has no bf16 LSTM and emulates bf16 matmuls at several
    times the cost of fp32 (7.5x for the output layer on an AVX2 EPYC). On Linux
    the CPU's flags answer without importing torch (so `fedtype --help` stays
    instant); elsewhere torch's oneDNN check does.
    """
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = set(cpuinfo.read_text(errors="replace").split())
        if "flags" in flags:  # an x86 CPU, which lists its extensions
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    import torch  # only where the flags cannot answer

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# The phones' default arithmetic: bf16 where the CPU has it, else fp32.
DEFAULT_PRECISION = "bf16" if native_bf16() else "fp32"
# How local training scores the output layer (`TrainingConfig.train_softmax`):
# every word, or each row's target and shared samples (`models.sampled_softmax`).
TRAIN_SOFTMAXES: tuple[str, ...] = ("full", "sampled")
# How the round-0 output bias is set (`ModelConfig.output_bias_init`).
OUTPUT_BIAS_INITS: tuple[str, ...] = ("zeros", "unigram")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the next-word model (Gboard-style LSTM, Hard et al. 2018)."""

    # Size of the tokenizer's vocabulary, specials and punctuation included.
    vocab_size: int = 10_036
    # Embedding width, shared by the input embedding and the tied output layer.
    embed_dim: int = setting(96, help="embedding width")
    # LSTM state width: 256 keeps the model near 1.36 M parameters, which trains at
    # several thousand tokens a second on 2 CPU cores.
    hidden_dim: int = setting(256, help="LSTM width")
    # Longest token sequence trained on; longer messages are cut into windows.
    max_len: int = 32
    # The round-0 output bias: "unigram", the public vocabulary's log-frequencies
    # (`models.baseline.public_unigram_log_probs`, from wordfreq, no phone's
    # text; perplexity 1,210 on the held-out sample), or "zeros" (every token
    # equally likely, perplexity about vocab_size). Applied where a run creates
    # its first model (`models.weights.initial_model`); a checkpoint carries its
    # own bias. With the momentum warm-up, the unigram start keeps the first
    # federated rounds from overshooting (docs/learning.md).
    output_bias_init: str = setting(
        "unigram",
        choices=OUTPUT_BIAS_INITS,
        help="round-0 output bias: the public vocabulary's unigram "
        "log-frequencies (wordfreq, no phone's text) or zeros (default: "
        "%(default)s)",
    )

    def __post_init__(self) -> None:
        check_settings(self, ConfigError)


@dataclass(frozen=True)
class TrainingConfig:
    """How one call of the shared training loop runs (a phone's or the server's)."""

    # Sequences (messages) per batch.
    batch_size: int = 16
    # Learning rate of the optimizer below.
    lr: float = 0.5
    # "sgd" (phones, as in FedAvg) or "adam" (the central baseline's usual choice).
    optimizer: str = "sgd"
    # Passes over the data; `max_steps` stops earlier when set.
    epochs: int = 1
    # Upper bound on optimizer steps, or None for whole epochs.
    max_steps: int | None = None
    # Global gradient-norm clip; LSTMs diverge without one.
    grad_clip_norm: float = 1.0
    # FedProx proximal weight mu (Li et al. 2020); 0 disables it.
    prox_mu: float = 0.0
    # Arithmetic of the forward and backward passes: "fp32", or "bf16" (the
    # model's matmuls under `torch.autocast`, fp32 master weights and fp32 loss).
    # `benchmarks/model.py` and `benchmarks/fleet.py` measure the difference.
    precision: str = setting("fp32", choices=PRECISIONS)
    # How a step scores the output layer: "full" (all V words) or "sampled" (each
    # target and `softmax_samples` words drawn from a public proposal, with the
    # log-Q correction: `models.sampled_softmax`). Training only: evaluation
    # always uses the full softmax.
    train_softmax: str = setting("full", choices=TRAIN_SOFTMAXES)
    # Words drawn per sampled step, shared by the batch's rows (Jean et al. 2015).
    softmax_samples: int = setting(1024, at_least=1)
    # With "sampled", the last this many steps of each call use the full softmax,
    # so the unsampled words' normalisation is still learnt (0: none).
    softmax_full_steps: int = setting(0, at_least=0)

    def __post_init__(self) -> None:
        check_settings(self, ConfigError)
