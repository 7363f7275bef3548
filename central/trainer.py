"""The central baseline's training run: one code path for 1 and for W workers.

With one worker (`fedtype train`) there is no process group and the model is
trained as is; with W > 1 (`fedtype central`, torchrun) it is wrapped in
`DistributedDataParallel`, each worker takes `batch_size / W` sequences of a
`DistributedSampler` split, and every step is normalised by the global target
count (`central.step`). Rank 0 alone evaluates, saves and reports; the others
wait at a barrier meanwhile. Each save point writes the checkpoint, the optimizer
state, a metrics.jsonl line and, last, state.json, so a run resumes from its last
save point with the same data order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from central.config import CentralConfig
from central.data import PooledStream
from central.evaluation import evaluate_sets, evaluation_sets
from central.events import (
    Evaluated,
    EvaluationStarted,
    Event,
    EventCallback,
    StepDone,
    TrainingStarted,
)
from central.runspec import RunSpec
from central.state import Progress, restore_optimizer, save_optimizer
from central.step import data_parallel_step
from corpora.corpus import CorpusSplits, load_corpus
from models.checkpoint import load_weights, save_checkpoint
from models.config import TrainingConfig
from models.distributed import ByteCounter, WorkerContext, all_reduce_sum, barrier
from models.model import NextWordModel
from models.run_canaries import RunCanaries, run_canaries
from models.rundir import RunDir, RunDirError
from models.seeding import derive_seed
from models.training import make_optimizer
from models.weights import initial_model

# Checkpoints kept besides every `checkpoint_every`-th: the last few save points.
_KEEP_LAST = 2


class CentralTrainer:
    """Trains one worker's share of a central run (rank 0 also saves)."""

    def __init__(
        self,
        *,
        run: RunDir,
        spec: RunSpec,
        context: WorkerContext,
        on_event: EventCallback | None = None,
        splits: CorpusSplits | None = None,
    ) -> None:
        """Args:
        splits: The corpus already loaded with `spec.corpus()` (the demo's
            child process has it); None loads it.
        """
        self.run = run
        self.context = context
        self.on_event = on_event
        self.config: CentralConfig = spec.training()
        self.config.check_workers(context.world_size)
        self.tokenizer = spec.tokenizer()
        self.model_config = spec.model()
        self.splits, self.canaries = self._planted_splits(spec, splits)
        self.progress = spec.progress or Progress()
        self.model = self._build_model(spec)
        self.optimizer = self._build_optimizer(spec)
        self.bytes = ByteCounter(context.world_size)
        self.network: nn.Module = self._wrap(self.model)
        self.stream = self._build_stream()
        self.eval_sets = self._build_eval_sets() if context.is_main else {}
        self._loss_sum = 0.0  # this worker's summed loss since the last save point
        self._loss_targets = 0
        self._extra: dict[str, Any] = {}  # joins the next metrics line
        self._batches: Iterator[torch.Tensor] | None = None  # `train_until`'s epoch

    def _planted_splits(
        self, spec: RunSpec, splits: CorpusSplits | None
    ) -> tuple[CorpusSplits, RunCanaries | None]:
        """The corpus, with the run's canaries planted into the pooled train text
        on every load, as the fleet does."""
        splits = splits if splits is not None else load_corpus(spec.corpus())
        canaries = run_canaries(
            self.run,
            count=self.config.canaries,
            seed=self.config.seed,
            splits=splits,
            tokenizer=self.tokenizer,
            write=self.context.is_main,
        )
        if canaries is not None:
            splits = canaries.plant(splits)
        return splits, canaries

    def _build_model(self, spec: RunSpec) -> NextWordModel:
        # The fleet's round-0 model, the same on every rank (DDP broadcasts rank
        # 0's anyway).
        model = initial_model(self.model_config, self.config.seed, self.tokenizer)
        if spec.weights is not None:
            load_weights(model, spec.weights, source=str(self.run.path))
        # Each rank offsets its seed for anything random from here on.
        torch.manual_seed(derive_seed(self.config.seed, "rank", self.context.rank))
        return model.to(self.context.device)

    def _build_optimizer(self, spec: RunSpec) -> torch.optim.Optimizer:
        """The run's optimizer over the model, its state restored on a resume."""
        optimizer = make_optimizer(
            self.model,
            TrainingConfig(optimizer=self.config.optimizer, lr=self.config.lr),
        )
        if spec.optimizer is not None:
            restore_optimizer(optimizer, spec.optimizer)
        return optimizer

    def _build_stream(self) -> PooledStream:
        """This worker's share of every global batch of the pooled train text."""
        return PooledStream(
            splits=self.splits,
            tokenizer=self.tokenizer,
            max_len=self.model_config.max_len,
            shard_messages=self.config.shard_messages,
            batch_size=self.config.batch_size // self.context.world_size,
            seed=self.config.seed,
            rank=self.context.rank,
            world_size=self.context.world_size,
        )

    def _build_eval_sets(self) -> dict[str, list[str]]:
        """Rank 0's held-out and future-text sets."""
        return evaluation_sets(
            self.splits,
            seed=self.config.seed,
            heldout_messages=self.config.heldout_messages,
            future_messages=self.config.future_messages,
            future_messages_per_user=self.config.future_messages_per_user,
        )

    def _wrap(self, model: NextWordModel) -> nn.Module:
        if not self.context.distributed:
            return model
        device_ids = (
            [self.context.device] if self.context.device.type == "cuda" else None
        )
        network = DistributedDataParallel(model, device_ids=device_ids)
        network.register_comm_hook(None, self.bytes.hook)
        # DDP's constructor broadcast rank 0's weights to the W - 1 others. A
        # resumed run counted its start-up broadcast already: the total stays the
        # uninterrupted run's (the resume's own start-up is not training traffic).
        if self.progress.step == 0:
            broadcast = (self.context.world_size - 1) * _state_bytes(model)
            self.progress.bytes_total += broadcast
        return network

    def total_steps(self) -> int:
        """Optimizer steps the whole run takes."""
        steps = self.config.epochs * self.stream.batches_per_epoch()
        if self.config.max_steps is not None:
            steps = min(steps, self.config.max_steps)
        return steps

    def _emit(self, event: Event) -> None:
        if self.context.is_main and self.on_event is not None:
            self.on_event(event)

    def train(self) -> Progress:
        """Train until the epochs (or max_steps) are done; returns the counters."""
        total = self.total_steps()
        per_epoch = self.stream.batches_per_epoch()
        if per_epoch == 0:
            raise RunDirError(f"{self.run.path}: the corpus has no training messages")
        self._emit(
            TrainingStarted(
                step=self.progress.step,
                total_steps=total,
                world_size=self.context.world_size,
                shards=len(self.stream.shards),
                train_sequences=sum(self.stream.shard_sizes()),
            )
        )
        self.network.train()
        while self.progress.step < total and self.progress.epoch < self.config.epochs:
            epoch = self.progress.epoch
            for batch in self.stream.epoch(epoch, skip=self.progress.batch_in_epoch):
                self._step(batch, epoch)
                if self.progress.batch_in_epoch == per_epoch:
                    self.progress.epoch += 1
                    self.progress.batch_in_epoch = 0
                every = self.config.eval_every
                if (
                    self.progress.batch_in_epoch == 0
                    or (every and self.progress.step % every == 0)
                    or self.progress.step == total
                ):
                    self._save_point(per_epoch)
                if self.progress.step >= total:
                    break
        return self.progress

    def train_until(
        self, tokens_total: int, *, extra: dict[str, Any] | None = None
    ) -> Progress:
        """Train until `tokens_total` targets are trained on, then save one point.

        Epochs follow one another without save points of their own (the demo
        paces the run by the fleet's tokens, not by epochs); `extra` joins the
        saved metrics line. One worker only: the demo's child trains it.
        """
        per_epoch = self.stream.batches_per_epoch()
        if per_epoch == 0:
            raise RunDirError(f"{self.run.path}: the corpus has no training messages")
        self.network.train()
        while self.progress.tokens_total < tokens_total:
            # The epoch's iterator lives across calls: rebuilding it would
            # re-encode the current shard at every catch-up.
            if self._batches is None:
                self._batches = self.stream.epoch(
                    self.progress.epoch, skip=self.progress.batch_in_epoch
                )
            batch = next(self._batches, None)
            if batch is not None:
                self._step(batch, self.progress.epoch)
            if batch is None or self.progress.batch_in_epoch >= per_epoch:
                self.progress.epoch += 1
                self.progress.batch_in_epoch = 0
                self._batches = None
        self._extra = extra or {}
        self._save_point(per_epoch)
        self._extra = {}
        return self.progress

    def _step(self, batch: torch.Tensor, epoch: int) -> None:
        started = time.perf_counter()
        sent_before = self.bytes.sent_bytes
        result = data_parallel_step(
            self.network,
            self.optimizer,
            batch.to(self.context.device),
            pad_id=self.tokenizer.pad_id,
            grad_clip_norm=self.config.grad_clip_norm,
            context=self.context,
        )
        self.progress.step += 1
        self.progress.batch_in_epoch += 1
        self.progress.tokens_total += result.global_targets
        # The global target count's all-reduce: one float64 per step.
        self.progress.bytes_total += (
            self.bytes.sent_bytes
            - sent_before
            + (2 * (self.context.world_size - 1) * 8)
        )
        self.progress.wall_seconds_total += time.perf_counter() - started
        self._loss_sum += result.loss_sum
        self._loss_targets += result.local_targets
        self._emit(
            StepDone(self.progress.step, epoch, result.loss_sum / result.local_targets)
        )

    def _save_point(self, per_epoch: int) -> None:
        loss_sum, targets = all_reduce_sum(
            [self._loss_sum, float(self._loss_targets)], self.context
        )
        self._loss_sum, self._loss_targets = 0.0, 0
        if self.context.is_main:
            self._evaluate_and_save(loss_sum / targets if targets else None, per_epoch)
        barrier(self.context)

    def _evaluate_and_save(self, train_loss: float | None, per_epoch: int) -> None:
        progress = self.progress
        self._emit(EvaluationStarted(progress.step))
        metrics = evaluate_sets(
            self.model,
            self.tokenizer,
            self.eval_sets,
            max_len=self.model_config.max_len,
            keystroke_texts=self.config.keystroke_texts,
        )
        record: dict[str, Any] = {
            "step": progress.step,
            "epoch": progress.step / per_epoch if per_epoch else 0.0,
            "world_size": self.context.world_size,
            "tokens_total": progress.tokens_total,
            "wall_seconds_total": round(progress.wall_seconds_total, 3),
            "bytes_total": progress.bytes_total,
            "train_loss": train_loss,
            **self._extra,
            **metrics,
        }
        if self.canaries is not None:
            record["exposure"] = self.canaries.measure(self.model, self.tokenizer)
        save_checkpoint(
            self.run.checkpoint_path(progress.step),
            self.model,
            self.model_config,
            vocab_fingerprint=self.tokenizer.fingerprint(),
        )
        save_optimizer(self.run, progress.step, self.optimizer)
        self.run.append_metrics(record)
        self.run.write_state(progress.as_state())
        self.run.prune_checkpoints(
            keep_last=_KEEP_LAST, keep_every=self.config.checkpoint_every
        )
        self._emit(Evaluated(record))


def _state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def drop_unsaved_metrics(run: RunDir, progress: Progress | None) -> None:
    """Rank 0 on resume: forget metrics lines past the last complete save."""
    last = progress.step if progress is not None else 0
    records = run.read_metrics()
    kept = [r for r in records if int(r.get("step", 0)) <= last]
    if len(kept) != len(records):
        run.rewrite_metrics(kept)
