"""A simulated phone: a private typing history, its own random stream, a profile.

The history is held by the phone alone. The coordinator can ask a phone to train
the global weights it sends, or to measure them on its future text; what comes back
is a `ClientReport` (the update, a number of examples, a few loss figures) or an
`EvalMetrics`, never text or token ids. Local training is FedAvg's ClientUpdate
(McMahan et al. 2017, arXiv 1602.05629) with FedProx's optional proximal term
(Li et al. 2020, arXiv 1812.06127), run by the one shared training loop.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from corpora.tokenizer import WordTokenizer
from device_sim.config import LocalTrainingConfig
from device_sim.faults import corrupt_report, fault_of
from device_sim.profile import DeviceProfile
from models.batching import PackedSequences, encode_messages
from models.config import TrainingConfig
from models.files import atomic_write_text
from models.metrics import EvalCounts, EvalMetrics, combine, count_metrics
from models.model import NextWordModel
from models.sampled_softmax import public_proposal
from models.seeding import numpy_rng
from models.training import TrainResult, batch_mean_loss, train_local
from models.weights import Parameters, load_parameters


@dataclass(frozen=True)
class ClientMetrics:
    """Numbers a phone reports about its round: losses on its own data, work done."""

    loss_before: float  # loss of the received weights on its first local batch
    loss_after: float  # the same batch's loss after local training
    train_loss: float  # mean loss of its local steps
    steps: int  # local optimizer steps
    num_tokens: int  # targets trained on, all local epochs counted


@dataclass(frozen=True, eq=False)
class ClientReport:
    """Everything that crosses from a phone to the coordinator after training."""

    client_id: str
    update: Parameters  # local weights - global weights, in parameter order
    num_examples: int  # sequences trained on (each counted once)
    metrics: ClientMetrics
    # Bytes the phone sent when it compressed its update (device_sim.compression);
    # None: the update went up whole, 4 bytes a float32 weight.
    bytes_up: int | None = None


@dataclass(frozen=True, eq=False)
class LocalData:
    """A phone's training material for one round; it never leaves the device."""

    sequences: list[list[int]]  # token sequences trained on this round
    rng: np.random.Generator  # the phone's stream for the round, after sampling


class Phone:
    """One simulated device with a private typing history."""

    __slots__ = ("client_id", "profile", "_seed", "_train", "_future", "_encoded")

    def __init__(
        self,
        client_id: str,
        *,
        train: Sequence[str],
        future: Sequence[str],
        profile: DeviceProfile,
        seed: int,
    ) -> None:
        self.client_id = client_id
        self.profile = profile
        self._seed = seed
        self._train = tuple(train)
        self._future = tuple(future)
        # (tokenizer fingerprint, max_len) -> the train text as token sequences:
        # a phone tokenises its history once, not every round, and keeps the ids
        # packed (a fleet's worth of lists of ints would grow the process a lot).
        self._encoded: tuple[tuple[str, int], PackedSequences] | None = None

    def __repr__(self) -> str:
        return f"Phone({self.client_id!r})"

    def sequences(self, tokenizer: WordTokenizer, max_len: int) -> PackedSequences:
        """The train text as `<bos> ... <eos>` token windows, encoded once."""
        key = (tokenizer.fingerprint(), max_len)
        if self._encoded is None or self._encoded[0] != key:
            encoded = encode_messages(tokenizer, list(self._train), max_len)
            self._encoded = (key, PackedSequences.pack(encoded))
        return self._encoded[1]

    def local_data(
        self,
        *,
        tokenizer: WordTokenizer,
        config: LocalTrainingConfig,
        max_len: int,
        server_round: int,
    ) -> LocalData:
        """This round's training sequences, loss sample and random stream.

        Device side only: for the executors that run the phones' own training
        (one at a time here, or many batched together), never for the coordinator.
        The sequences are all the phone's, or a random `sequence_budget()` of them.
        """
        rng = numpy_rng(self._seed, server_round, self.client_id, "train")
        packed = self.sequences(tokenizer, max_len)
        budget = config.sequence_budget()
        if budget is not None and len(packed) > budget:
            chosen = np.sort(rng.choice(len(packed), size=budget, replace=False))
            return LocalData(packed.unpack(chosen.tolist()), rng)
        return LocalData(packed.unpack(), rng)

    def local_steps(
        self, tokenizer: WordTokenizer, config: LocalTrainingConfig, max_len: int
    ) -> int:
        """Optimizer steps this phone's local training takes (for its timing)."""
        count = len(self.sequences(tokenizer, max_len))
        budget = config.sequence_budget()
        if budget is not None:
            count = min(count, budget)
        steps = -(-count // config.batch_size) * config.local_epochs
        cap = config.max_local_steps
        return steps if cap is None else min(steps, cap)

    def fit(
        self,
        model: NextWordModel,
        *,
        tokenizer: WordTokenizer,
        config: LocalTrainingConfig,
        server_round: int,
    ) -> tuple[TrainResult, ClientMetrics]:
        """Train `model` in place on this phone's history for one round."""
        data = self.local_data(
            tokenizer=tokenizer,
            config=config,
            max_len=model.config.max_len,
            server_round=server_round,
        )
        training = config.training_config(server_round)
        result = train_local(
            model,
            data.sequences,
            training,
            pad_id=tokenizer.pad_id,
            rng=data.rng,
            proposal=proposal(tokenizer, training),
        )
        # The first step's loss is the received weights' loss on the first batch,
        # so one forward pass over that batch after training measures the change.
        after = float("nan")
        if result.first_batch is not None:
            after = batch_mean_loss(
                model,
                result.first_batch,
                pad_id=tokenizer.pad_id,
                precision=config.precision,
            )
        before = result.first_loss
        metrics = ClientMetrics(
            loss_before=before,
            loss_after=after,
            train_loss=result.mean_loss,
            steps=result.steps,
            num_tokens=result.num_tokens,
        )
        return result, metrics

    def train(
        self,
        model: NextWordModel,
        global_parameters: Parameters,
        *,
        tokenizer: WordTokenizer,
        config: LocalTrainingConfig,
        server_round: int,
        fault_kind: str = "nan",
        fault_scale: float | None = None,
    ) -> ClientReport:
        """FedAvg's ClientUpdate: start from the global weights, return the delta.

        `model` is a scratch instance the caller reuses across phones; its weights
        are overwritten with `global_parameters` first.
        """
        load_parameters(model, global_parameters)
        result, metrics = self.fit(
            model, tokenizer=tokenizer, config=config, server_round=server_round
        )
        with torch.no_grad():
            update = [
                p.detach() - g
                for p, g in zip(model.parameters(), global_parameters, strict=True)
            ]
        num_examples = result.num_examples
        if self.profile.faulty:
            fault = fault_of(fault_kind, fault_scale)
            update, num_examples = corrupt_report(
                update, num_examples, kind=fault.kind, scale=fault.scale
            )
        return ClientReport(self.client_id, update, num_examples, metrics)

    def evaluate_counts(
        self,
        model: NextWordModel,
        *,
        tokenizer: WordTokenizer,
        max_messages: int,
        keystroke_texts: int,
    ) -> EvalCounts | None:
        """Additive counts of `model`'s hits and keystrokes on its future text.

        None when the phone has no future text. It uses its `max_messages` oldest
        future messages, the same ones every time, and simulates keystrokes on
        `keystroke_texts` of them. Federated evaluation pools these counts.
        """
        texts = self.future_texts(max_messages)
        if not texts:
            return None
        return count_metrics(
            model,
            tokenizer,
            texts,
            max_len=model.config.max_len,
            keystroke_texts=keystroke_texts,
        )

    def evaluate(
        self,
        model: NextWordModel,
        *,
        tokenizer: WordTokenizer,
        max_messages: int,
        keystroke_texts: int,
    ) -> EvalMetrics | None:
        """The foundation's metrics of `model` on this phone's future text alone."""
        counts = self.evaluate_counts(
            model,
            tokenizer=tokenizer,
            max_messages=max_messages,
            keystroke_texts=keystroke_texts,
        )
        return None if counts is None else combine([counts])

    def train_texts(self) -> tuple[str, ...]:
        """The train text, oldest first. Device side only (on-phone fine-tuning)."""
        return self._train

    def future_texts(self, max_messages: int) -> list[str]:
        """The future messages evaluation uses: the `max_messages` oldest. Device
        side only (a phone measures itself on them and reports counts)."""
        return list(self._future[:max_messages])

    def future_size(self, max_messages: int) -> int:
        """How many future messages `evaluate` would use."""
        return min(len(self._future), max_messages)

    def save(self, path: str | Path) -> None:
        """Write this phone's history to its own storage, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "client_id": self.client_id,
            "train": self._train,
            "future": self._future,
        }
        atomic_write_text(path, json.dumps(payload, ensure_ascii=False))

    def with_texts(self, train: Sequence[str]) -> Phone:
        """This phone with `train` appended to its training history."""
        return Phone(
            self.client_id,
            train=(*self._train, *train),
            future=self._future,
            profile=self.profile,
            seed=self._seed,
        )

    @classmethod
    def load(cls, path: str | Path, *, profile: DeviceProfile, seed: int) -> Phone:
        """A phone whose history `save` wrote to `path`.

        Raises:
            PhoneStoreError: the file is missing or not a phone's history.
        """
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(
                str(payload["client_id"]),
                train=[str(t) for t in payload["train"]],
                future=[str(t) for t in payload["future"]],
                profile=profile,
                seed=seed,
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise PhoneStoreError(f"{path}: not a phone's history ({error})") from None


def proposal(tokenizer: WordTokenizer, config: TrainingConfig) -> torch.Tensor | None:
    """The sampled softmax's public proposal when `config` samples, else None."""
    return public_proposal(tokenizer) if config.train_softmax == "sampled" else None


class PhoneStoreError(ValueError):
    """A stored phone history cannot be read; the message names the file."""
