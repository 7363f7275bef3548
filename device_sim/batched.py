"""Phones' local training on the stacked, hand-written model, in groups.

`models.training.train_local` trains one phone at a time under autograd. Here
groups of P phones train on stacked weights (`device_sim.stacked_lstm`), step k of
every phone of a group as one pass. Each takes exactly the SGD steps `train_local`
would take on a fresh copy of the global model: the same batches from its own rng,
its own gradient-norm clip and FedProx term (Li et al. 2020, arXiv 1812.06127),
plain SGD as in FedAvg's ClientUpdate (McMahan et al. 2017, arXiv 1602.05629).

Measured on 2 CPU cores (`benchmarks/fleet.py`), a group of one phone is the
fastest: the hand-written pass (no autograd, no padding in the output layer and
the weight gradients, loss probes on real tokens only) beats `train_local`, but
putting more phones in one pass does not pay, since after their first step every
phone has its own weights, so each still needs its own dense gradient of the
10,036 x 96 tied embedding, while the stack outgrows the caches and the recurrence
pads phones to the longest. `BatchedExecutor` therefore defaults to groups of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from corpora.tokenizer import WordTokenizer
from device_sim.config import LocalTrainingConfig
from device_sim.executor import ReportCallback, SerialExecutor
from device_sim.local_eval import EvalCounts
from device_sim.phone import (
    ClientMetrics,
    ClientReport,
    Parameters,
    Phone,
    corrupt,
    load_parameters,
)
from device_sim.stacked_lstm import (
    PARAMETER_NAMES,
    Stacked,
    probe_losses,
    stack_parameters,
    step_gradients,
)
from models.batching import count_targets, make_batches
from models.config import ModelConfig, TrainingConfig
from models.model import NextWordModel
from models.training import TrainResult


@dataclass(frozen=True, eq=False)
class PhoneUpdate:
    """What local training did on one phone."""

    update: list[torch.Tensor]  # local - global weights, `model.parameters()` order
    result: TrainResult
    probe_loss: float = float("nan")  # `evaluate_loss` of the trained weights


def phone_batches(
    sequences: list[list[int]],
    config: TrainingConfig,
    *,
    pad_id: int,
    rng: np.random.Generator,
) -> list[torch.Tensor]:
    """The batches `train_local` steps through, drawing from `rng` as it does."""
    batches: list[torch.Tensor] = []
    for _ in range(config.epochs):
        for batch in make_batches(sequences, config.batch_size, pad_id=pad_id, rng=rng):
            if config.max_steps is not None and len(batches) >= config.max_steps:
                break
            batches.append(batch)
    return batches


def sgd_step(
    weights: Stacked,
    grads: Stacked,
    config: TrainingConfig,
    anchor: Stacked | None = None,
) -> None:
    """Per-phone FedProx term, gradient-norm clip and SGD step, as `train_step`."""
    p = next(iter(weights.values())).shape[0]
    if anchor is not None and config.prox_mu > 0:
        for name, g in grads.items():
            g.add_(weights[name] - anchor[name], alpha=config.prox_mu)
    if config.clip_norm > 0:
        norms = torch.stack(
            [torch.linalg.vector_norm(g.reshape(p, -1), dim=1) for g in grads.values()]
        )
        total = torch.linalg.vector_norm(norms, dim=0)  # (P,)
        scale = (config.clip_norm / (total + 1e-6)).clamp(max=1.0)
        for name, w in weights.items():
            shape = (p, *([1] * (w.dim() - 1)))
            w.addcmul_(grads[name], scale.view(shape), value=-config.lr)
        return
    for name, w in weights.items():
        w.add_(grads[name], alpha=-config.lr)


def _train_group(
    model: NextWordModel,
    batches: Sequence[list[torch.Tensor]],
    config: TrainingConfig,
    pad_id: int,
    probes: Sequence[list[list[int]]],
) -> list[PhoneUpdate]:
    """Train phones whose batch counts do not increase along `batches`."""
    count = len(batches)
    weights = stack_parameters(model, count)
    grads = {name: torch.empty_like(w) for name, w in weights.items()}
    anchor = None
    if config.prox_mu > 0:
        anchor = {name: p.detach().unsqueeze(0) for name, p in model.named_parameters()}
    losses = [0.0] * count
    tokens = [0] * count
    for step in range(len(batches[0])):
        active = sum(1 for b in batches if len(b) > step)  # a prefix of the group
        step_batches = [b[step] for b in batches[:active]]
        live = {name: w[:active] for name, w in weights.items()}
        live_grads = {name: g[:active] for name, g in grads.items()}
        step_losses = step_gradients(live, live_grads, step_batches, pad_id)
        sgd_step(live, live_grads, config, anchor)
        for k, (loss, batch) in enumerate(zip(step_losses, step_batches, strict=True)):
            losses[k] += loss
            tokens[k] += count_targets(batch, pad_id)
    del grads
    after = probe_losses(weights, probes, pad_id=pad_id)
    for name, p in model.named_parameters():
        weights[name].sub_(p)  # the updates, as views of one stacked tensor
    out = []
    for k, phone in enumerate(batches):
        steps = len(phone)
        mean = losses[k] / steps if steps else float("nan")
        update = [weights[name][k] for name in PARAMETER_NAMES]
        result = TrainResult(0, tokens[k], steps, mean)
        out.append(PhoneUpdate(update, result, after[k][0]))
    return out


def train_phones(
    model: NextWordModel,
    phone_sequences: Sequence[list[list[int]]],
    config: TrainingConfig,
    *,
    pad_id: int,
    rngs: Sequence[np.random.Generator],
    probes: Sequence[list[list[int]]] | None = None,
    group_size: int = 1,
) -> list[PhoneUpdate]:
    """Train each phone from `model`'s weights, as `train_local` on a fresh copy.

    `model` is left unchanged. Phones are grouped by their number of steps, at
    most `group_size` a group (memory grows by about 11 MB a phone of a group).

    Args:
        model: The global model.
        phone_sequences: Each phone's training sequences.
        config: Local training settings; the optimizer must be "sgd".
        pad_id: The padding token.
        rngs: Each phone's generator, drawn from exactly as `train_local` would.
        probes: Sequences on which each phone measures its trained weights' loss
            (`PhoneUpdate.probe_loss`); none when not given.

    Returns:
        Each phone's update and counts, in the order given.
    """
    if config.optimizer != "sgd":
        raise ValueError(f"batched training runs SGD only, not {config.optimizer!r}")
    batches = [
        phone_batches(s, config, pad_id=pad_id, rng=r)
        for s, r in zip(phone_sequences, rngs, strict=True)
    ]
    probes = probes if probes is not None else [[] for _ in batches]
    order = sorted(range(len(batches)), key=lambda k: -len(batches[k]))
    results: dict[int, PhoneUpdate] = {}
    with torch.no_grad():
        for start in range(0, len(order), group_size):
            group = order[start : start + group_size]
            trained = _train_group(
                model,
                [batches[k] for k in group],
                config,
                pad_id,
                [probes[k] for k in group],
            )
            for k, phone in zip(group, trained, strict=True):
                examples = len(phone_sequences[k])
                result = replace(phone.result, num_examples=examples)
                results[k] = replace(phone, result=result)
    return [results[k] for k in range(len(batches))]


class BatchedExecutor:
    """A round's phones trained together in this process (`train_phones`).

    Reports equal `SerialExecutor`'s within float rounding; evaluation runs phone
    by phone as there.
    """

    def __init__(
        self,
        *,
        model_config: ModelConfig,
        tokenizer: WordTokenizer,
        local: LocalTrainingConfig,
        fault_kind: str = "nan",
        group_size: int = 1,
    ) -> None:
        self.tokenizer = tokenizer
        self.local = local
        self.fault_kind = fault_kind
        self.group_size = group_size
        self._serial = SerialExecutor(
            model_config=model_config,
            tokenizer=tokenizer,
            local=local,
            fault_kind=fault_kind,
        )
        self._model = NextWordModel(model_config)

    def train(
        self,
        phones: Sequence[Phone],
        global_parameters: Parameters,
        *,
        server_round: int,
        on_report: ReportCallback | None = None,
    ) -> list[ClientReport]:
        """Each phone's report after training from `global_parameters`, in order."""
        load_parameters(self._model, global_parameters)
        pad_id = self.tokenizer.pad_id
        data = [
            p.local_data(
                tokenizer=self.tokenizer,
                config=self.local,
                max_len=self._model.config.max_len,
                server_round=server_round,
            )
            for p in phones
        ]
        probes = [d.probe for d in data]
        weights = stack_parameters(self._model, 1)
        before = probe_losses(weights, probes, pad_id=pad_id, phones=[0] * len(data))
        trained = train_phones(
            self._model,
            [d.sequences for d in data],
            self.local.training_config(),
            pad_id=pad_id,
            rngs=[d.rng for d in data],
            probes=probes,
            group_size=self.group_size,
        )
        reports = []
        for phone, (loss_before, _), done in zip(phones, before, trained, strict=True):
            metrics = ClientMetrics(
                loss_before=loss_before,
                loss_after=done.probe_loss,
                train_loss=done.result.mean_loss,
                steps=done.result.steps,
                num_tokens=done.result.num_tokens,
            )
            update = done.update
            if phone.profile.faulty:
                update = corrupt(update, self.fault_kind)
            report = ClientReport(
                phone.client_id, update, done.result.num_examples, metrics
            )
            reports.append(report)
            if on_report is not None:
                on_report(report)
        return reports

    def evaluate(
        self,
        phones: Sequence[Phone],
        global_parameters: Parameters,
        *,
        max_messages: int,
        keystroke_texts: Sequence[int],
    ) -> list[tuple[str, EvalCounts]]:
        """`(client_id, counts)` of each phone with future text, as serially."""
        return self._serial.evaluate(
            phones,
            global_parameters,
            max_messages=max_messages,
            keystroke_texts=keystroke_texts,
        )

    def close(self) -> None:
        """Nothing to release in-process."""
