"""The one training loop, shared by phones, the single-process trainer and DDP."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.batching import count_targets, make_batches
from models.config import TrainingConfig
from models.model import NextWordModel
from models.sampled_softmax import WordSampler, sampled_cross_entropy

# Rows of the packed output layer are a multiple of this: bf16 matmul kernels are
# generated and kept for each row count they meet, so rounding the count bounds how
# many there are, and the memory they hold, for under 16 wasted rows a batch.
_ROW_MULTIPLE = 16
# The target id of those extra rows, which the loss ignores.
_IGNORED = -100
# Batches reach the LSTM padded to a multiple of this many positions and to a
# power-of-two number of rows: oneDNN builds and caches kernels for each input
# shape it meets, and with every (rows, length) of a phone's batches (16 x 32 of
# them) its cache churned and grew without bound under bf16. Padding changes no
# real position's output (the LSTM runs left to right) and no loss term.
_LENGTH_MULTIPLE = 8

# Called after each optimizer step with (step, loss of that step's batch).
StepCallback = Callable[[int, float], None]


@dataclass(frozen=True)
class TrainResult:
    """What a call of `train_local` did."""

    num_examples: int  # sequences in the local data set (the FedAvg weight)
    num_tokens: int  # targets processed, all epochs counted
    steps: int  # optimizer steps taken
    mean_loss: float  # mean of the step losses (nan when no step ran)
    first_loss: float = float("nan")  # the first step's loss: the starting weights'
    first_batch: torch.Tensor | None = None  # the batch of that first step


def make_optimizer(model: nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    """The optimizer `config.optimizer` names."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr)
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    raise ValueError(f"unknown optimizer {config.optimizer!r} (sgd or adam)")


def autocast(precision: str) -> contextlib.AbstractContextManager[object]:
    """The autocast region of `precision`: bf16 matmuls on the CPU, or nothing."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bucketed(batch: torch.Tensor, pad_id: int) -> torch.Tensor:
    """A (B, L+1) batch right-padded with `pad_id` to a bounded set of shapes.

    L grows to a multiple of `_LENGTH_MULTIPLE` and B to a power of two; the new
    rows and positions are padding only, so every loss is unchanged.
    """
    rows, width = batch.shape
    length = -(-(width - 1) // _LENGTH_MULTIPLE) * _LENGTH_MULTIPLE
    target_rows = 1 << max(0, rows - 1).bit_length()
    if (target_rows, length + 1) == (rows, width):
        return batch
    padded = batch.new_full((target_rows, length + 1), pad_id)
    padded[:rows, :width] = batch
    return padded


def batch_loss(
    model: nn.Module,
    batch: torch.Tensor,
    pad_id: int,
    precision: str = "fp32",
    *,
    reduction: str = "mean",
    sampler: WordSampler | None = None,
) -> torch.Tensor:
    """Next-token cross-entropy over a (B, L+1) batch, padding ignored.

    The output layer and the loss see only the real (non-padding) targets, packed
    into one (N, E) matrix; the loss itself is computed in fp32 whatever the
    precision of the matmuls. `model` may be a `NextWordModel` or its DDP wrapper.

    Args:
        reduction: "mean" over the real targets, or "sum".
        sampler: training only: the sampled softmax's shared words are drawn
            from it (`models.sampled_softmax`); None scores every word.
    """
    batch = bucketed(batch, pad_id)
    targets = batch[:, 1:]  # (B, L)
    real = targets != pad_id
    if sampler is not None:
        return _sampled_loss(model, batch, real, sampler, precision, reduction)
    with autocast(precision):
        # (N', V): N real targets, then zero rows up to a multiple of 16.
        logits, _ = model(batch[:, :-1], at=real, row_multiple=_ROW_MULTIPLE)
    wanted = torch.full((logits.shape[0],), _IGNORED, dtype=targets.dtype)
    wanted[: int(real.sum())] = targets[real]
    return F.cross_entropy(
        logits.float(), wanted, reduction=reduction, ignore_index=_IGNORED
    )


def _sampled_loss(
    model: nn.Module,
    batch: torch.Tensor,
    real: torch.Tensor,
    sampler: WordSampler,
    precision: str,
    reduction: str,
) -> torch.Tensor:
    """`batch_loss` with the sampled softmax over a bucketed batch."""
    samples, log_expected = sampler.draw()  # (S,), (S,)
    wanted = batch[:, 1:][real]  # (N,)
    count = wanted.shape[0]
    # The zero rows up to a multiple of 16 score word 0; their losses are dropped.
    padded = wanted.new_zeros(count + -count % _ROW_MULTIPLE)
    padded[:count] = wanted
    with autocast(precision):
        logits, _ = model(  # (N', 1 + S)
            batch[:, :-1],
            at=real,
            row_multiple=_ROW_MULTIPLE,
            candidates=(padded, samples),
        )
    losses = sampled_cross_entropy(logits[:count], wanted, samples, log_expected)
    return losses.mean() if reduction == "mean" else losses.sum()


def proximal_term(model: nn.Module, anchor: Sequence[torch.Tensor]) -> torch.Tensor:
    """FedProx's ||w - w_global||^2 (Li et al. 2020, arXiv 1812.06127)."""
    return sum(
        ((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True)
    )  # type: ignore[return-value]


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: torch.Tensor,
    config: TrainingConfig,
    *,
    pad_id: int,
    anchor: Sequence[torch.Tensor] | None = None,
    sampler: WordSampler | None = None,
) -> float:
    """One optimizer step on one batch; returns the batch's loss.

    With `sampler` the step uses the sampled softmax, and the loss returned is
    its estimate of the cross-entropy.
    """
    optimizer.zero_grad(set_to_none=True)
    loss = batch_loss(model, batch, pad_id, config.precision, sampler=sampler)
    objective = loss
    if anchor is not None and config.prox_mu > 0:
        objective = loss + 0.5 * config.prox_mu * proximal_term(model, anchor)
    objective.backward()
    if config.grad_clip_norm > 0:
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
    optimizer.step()
    return float(loss.detach())


def local_batches(
    sequences: list[list[int]],
    config: TrainingConfig,
    *,
    pad_id: int,
    rng: np.random.Generator,
) -> Iterator[torch.Tensor]:
    """The batches `train_local` steps through: `epochs` reshuffles, `max_steps` cap.

    An epoch's batches are drawn from `rng` only when the cap leaves room for
    one, so a benchmark that replays them draws exactly what training drew.
    """
    limit = config.max_steps if config.max_steps is not None else float("inf")
    steps = 0
    for _ in range(config.epochs):
        if steps >= limit:
            return
        for batch in make_batches(sequences, config.batch_size, pad_id=pad_id, rng=rng):
            if steps >= limit:
                return
            steps += 1
            yield batch


def step_samplers(
    config: TrainingConfig,
    steps: int,
    *,
    rng: np.random.Generator,
    proposal: torch.Tensor | None,
) -> list[WordSampler | None]:
    """Each step's sampler: None for a full-softmax step.

    Under "sampled" every step but the last `softmax_full_steps` samples.
    """
    if config.train_softmax == "full":
        return [None] * steps
    if proposal is None:
        raise ValueError("train_softmax 'sampled' needs a proposal distribution")
    sampler = WordSampler(proposal, samples=config.softmax_samples, rng=rng.spawn(1)[0])
    sampled = max(0, steps - config.softmax_full_steps)
    return [sampler] * sampled + [None] * (steps - sampled)


def train_local(
    model: NextWordModel,
    sequences: list[list[int]],
    config: TrainingConfig,
    *,
    pad_id: int,
    rng: np.random.Generator,
    on_step: StepCallback | None = None,
    proposal: torch.Tensor | None = None,
) -> TrainResult:
    """Train `model` in place on `sequences` for `config.epochs` (or `max_steps`).

    With `config.prox_mu > 0` the starting weights are the FedProx anchor.

    Args:
        rng: the batches' stream; a sampled softmax draws its words from a
            child stream spawned from it, which leaves the batches unchanged.
        proposal: with `config.train_softmax == "sampled"`, the log-probabilities
            (V,) the shared words are drawn from (`models.sampled_softmax`).
    """
    model.train()
    optimizer = make_optimizer(model, config)
    anchor = None
    if config.prox_mu > 0:
        anchor = [p.detach().clone() for p in model.parameters()]
    steps, tokens, total, first_loss = 0, 0, 0.0, float("nan")
    first_batch = None
    batches = list(local_batches(sequences, config, pad_id=pad_id, rng=rng))
    samplers = step_samplers(config, len(batches), rng=rng, proposal=proposal)
    for batch, sampler in zip(batches, samplers, strict=True):
        loss = train_step(
            model,
            optimizer,
            batch,
            config,
            pad_id=pad_id,
            anchor=anchor,
            sampler=sampler,
        )
        if steps == 0:
            first_loss, first_batch = loss, batch
        steps += 1
        tokens += count_targets(batch, pad_id)
        total += loss
        if on_step is not None:
            on_step(steps, loss)
    mean = total / steps if steps else float("nan")
    return TrainResult(len(sequences), tokens, steps, mean, first_loss, first_batch)


@torch.no_grad()
def batch_mean_loss(
    model: NextWordModel, batch: torch.Tensor, *, pad_id: int, precision: str = "fp32"
) -> float:
    """The mean loss of `model` on one batch, in eval mode and without gradients."""
    model.eval()
    return float(batch_loss(model, batch, pad_id, precision))
