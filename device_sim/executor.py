"""Where a round's phones do their work: one engine, from one process to many ranks.

The coordinator hands `FleetExecutor.train` the phones it picked and the global
weights. Each rank (`device_sim.ranks`) trains its share of them, longest first to
the least-loaded rank, one after another on ONE resident model, so a round's
memory does not grow with its phones. The updates stay on the rank that trained
them; what crosses to the coordinator is a `ClientSummary` per phone (its count,
the update's norm, health and sketch, its loss figures; under secure aggregation
only its claimed count and health), gathered from every rank, and later the
round's sums, through one all-reduce:

- `TrainedRound.weighted_sum(accepted)`: the `num_examples`-weighted sum of the
  accepted updates and their total count (FedAvg and its server optimizers);
- `TrainedRound.reduce_vectors(build)`: each rank sums a vector it builds from
  each accepted phone's report (secure aggregation's masked integers and DP's
  clipped contributions use it), through the same all-reduce;
- `TrainedRound.gather_updates(accepted)`: every accepted update on every rank,
  for the robust aggregators that need them all (a coordinate-wise median cannot
  be computed from sums).

Local training is `Phone.train`: `models.training.train_local` under autograd on
the one model implementation. With one rank nothing leaves the process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from corpora.tokenizer import WordTokenizer
from device_sim.clipping import flatten, unflatten
from device_sim.compression import Uplink
from device_sim.config import HOSTILE_KINDS, LocalTrainingConfig
from device_sim.contribution import protect
from device_sim.faults import Fault, fault_of
from device_sim.phone import ClientMetrics, ClientReport, Phone
from device_sim.profile import work_seconds
from device_sim.ranks import Ranks, SingleRank, assign_shares
from device_sim.recipe import Recipe
from device_sim.secagg_phones import SecAggPhones
from device_sim.sketch import sketch_update
from models.config import ModelConfig
from models.metrics import EvalCounts
from models.model import NextWordModel
from models.weights import Parameters, load_parameters
from secagg import MaskerLike, RoundParameters

# Called with each summary as soon as its phone (on this rank) has finished.
ReportCallback = Callable[["ClientSummary"], None]


@dataclass(frozen=True)
class ClientSummary:
    """The few numbers of a phone's report that cross between ranks."""

    client_id: str
    num_examples: int  # sequences trained on (the FedAvg weight it claims)
    norm: float  # L2 norm of the update (nan when not finite)
    finite: bool  # every value of the update is finite
    problem: str | None  # a structural defect (shape, dtype), or None
    # Its losses on its own data and its work; None under secure aggregation,
    # where they travel only inside the masked sum (`coordinator.protections`).
    metrics: ClientMetrics | None
    # The update's count sketch (`device_sim.sketch`): its direction, for the
    # screen; None under secure aggregation or for a malformed update.
    sketch: np.ndarray | None = None
    # Bytes the phone sent, when it compressed its update (else None: whole).
    bytes_up: int | None = None


def summarise(
    report: ClientReport, reference: Parameters, *, with_norm: bool = True
) -> ClientSummary:
    """The summary of `report`, judged against the global parameters' structure.

    A float32 update's norm is finite exactly when all its values are, since the
    squares of finite float32 values cannot overflow the float64 sum. Without
    `with_norm` (secure aggregation) the phone checks its own update but the
    norm it sends is nan and it sends no sketch and no loss figures: the server
    must not learn a single update's size or direction, nor how well the model
    fits one phone's text (a membership signal).
    """
    problem = _structure_problem(report.update, reference)
    squares = 0.0
    for i, t in enumerate(report.update if problem is None else ()):
        norm = float(torch.linalg.vector_norm(t, dtype=torch.float64))
        if not np.isfinite(norm):
            problem = f"non-finite values in tensor {i}"
            break
        squares += norm * norm
    finite = problem is None
    revealed = finite and with_norm
    return ClientSummary(
        report.client_id,
        report.num_examples,
        float(np.sqrt(squares)) if revealed else float("nan"),
        finite,
        problem,
        report.metrics if with_norm else None,
        sketch_update(report.update) if revealed else None,
        report.bytes_up,
    )


def _structure_problem(update: Parameters, reference: Parameters) -> str | None:
    if len(update) != len(reference):
        return f"{len(update)} tensors != {len(reference)} expected"
    for i, (t, r) in enumerate(zip(update, reference, strict=True)):
        if t.shape != r.shape:
            return f"shape {tuple(t.shape)} != {tuple(r.shape)} in tensor {i}"
        if t.dtype != r.dtype:
            got, want = (str(d).removeprefix("torch.") for d in (t.dtype, r.dtype))
            return f"dtype {got} != {want} in tensor {i}"
    return None


@dataclass(eq=False)
class TrainedRound:
    """A round's training, spread over the ranks: summaries here, updates local."""

    summaries: list[ClientSummary]  # every phone of the round, in the given order
    reference: Parameters  # the global parameters the phones started from
    ranks: Ranks
    local: dict[str, ClientReport] = field(default_factory=dict)  # this rank's
    # This rank's hostile phones and what they do inside a masked sum: known on
    # the phone only (device_sim.faults), never gathered.
    faults: dict[str, Fault] = field(default_factory=dict)

    def reduce_vectors(
        self,
        accepted: Collection[str],
        build: Callable[[ClientReport], np.ndarray],
        *,
        dtype: torch.dtype = torch.float64,
        size: int | None = None,
    ) -> np.ndarray:
        """The sum over every rank of `build(report)` for the accepted phones.

        Each rank adds up its own phones' vectors, in summary order, and one
        all-reduce adds the ranks' sums. `build` must return vectors of one
        length on every rank; integer dtypes sum exactly. With `size` given, no
        accepted phone at all sums to zeros of that length (else it is an error).
        """
        total: np.ndarray | None = None
        for summary in self.summaries:
            report = self.local.get(summary.client_id)
            if report is None or summary.client_id not in accepted:
                continue
            vector = build(report)
            total = vector.copy() if total is None else total + vector
        size = self._broadcast_size(None if total is None else total.shape[0], size)
        numpy_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        mine = np.zeros(size, dtype=numpy_dtype) if total is None else total
        summed = self.ranks.all_reduce_sum(torch.from_numpy(mine.astype(numpy_dtype)))
        return summed.numpy()

    def _broadcast_size(self, size: int | None, default: int | None = None) -> int:
        sizes = [s for s in self.ranks.all_gather_objects(size) if s is not None]
        if not sizes and default is not None:
            return default
        if not sizes:
            raise ValueError("nothing to reduce: no accepted phone on any rank")
        if len(set(sizes)) != 1:
            raise ValueError(f"ranks built vectors of different lengths {sizes}")
        return int(sizes[0])  # type: ignore[call-overload]

    def protected_sum(
        self,
        included: Collection[str],
        recipe: Recipe,
        *,
        server_round: int,
        maskers: Callable[[str], MaskerLike | None],
        dtype: torch.dtype,
    ) -> tuple[np.ndarray, float]:
        """The sum of what the included phones send under `recipe`, each phone's
        `device_sim.contribution.protect` run on the rank that holds its update
        (masked with `maskers(client_id)` under SecAgg); and this rank's seconds
        spent protecting. Nobody included sums to zeros."""
        seconds = [0.0]

        def send(report: ClientReport) -> np.ndarray:
            begun = time.perf_counter()
            vector = protect(
                report,
                recipe,
                server_round=server_round,
                masker=maskers(report.client_id),
                fault=self.faults.get(report.client_id),
            )
            seconds[0] += time.perf_counter() - begun
            return vector

        size = sum(t.numel() for t in self.reference) + recipe.appended
        total = self.reduce_vectors(included, send, dtype=dtype, size=size)
        return total, seconds[0]

    def phone_figures(self) -> list[ClientSummary]:
        """MEASUREMENT HARNESS ONLY: the summaries, each with its phone's own
        loss figures and work, for the simulation's record of the round.

        Under secure aggregation the summaries that crossed carry none; these
        come from the reports on every rank (a gather of a few numbers a phone)
        and are filed as `simulation_truth` (`coordinator.privacy.released`),
        never as something the server learned. Summaries that carry their
        figures already (no protection) are returned as they are: every rank
        holds the same summaries, so every rank skips the gather alike.
        """
        if all(s.metrics is not None for s in self.summaries):
            return list(self.summaries)
        mine = {c: r.metrics for c, r in self.local.items()}
        figures: dict[str, ClientMetrics] = {}
        for part in self.ranks.all_gather_objects(mine):
            figures.update(part)  # type: ignore[call-overload]
        return [replace(s, metrics=figures[s.client_id]) for s in self.summaries]

    @staticmethod
    def secagg_phones(
        parameters: RoundParameters, cohort: Collection[str]
    ) -> SecAggPhones:
        """The round's phones as secure aggregation's server talks to them
        (a `secagg.PhonesFactory`)."""
        return SecAggPhones.for_round(parameters, cohort)

    def weighted_sum(self, accepted: Collection[str]) -> tuple[Parameters, int]:
        """sum_i n_i * update_i over the accepted phones (float64), and sum_i n_i.

        The count travels as the vector's last value, so one all-reduce does it.
        """

        def weighted(report: ClientReport) -> np.ndarray:
            vector = flatten(report.update) * report.num_examples
            return np.append(vector, float(report.num_examples))

        summed = self.reduce_vectors(accepted, weighted)
        like = [t.to(torch.float64) for t in self.reference]
        return unflatten(summed[:-1], like), int(round(summed[-1]))

    def gather_updates(self, accepted: Collection[str]) -> list[tuple[Parameters, int]]:
        """Every accepted `(update, num_examples)`, in summary order, on every rank."""
        mine = {
            c: (r.update, r.num_examples)
            for c, r in self.local.items()
            if c in accepted
        }
        merged: dict[str, tuple[Parameters, int]] = {}
        for part in self.ranks.all_gather_objects(mine):
            merged.update(part)  # type: ignore[call-overload]
        return [merged[s.client_id] for s in self.summaries if s.client_id in merged]


class FleetExecutor:
    """Trains and evaluates phones on this rank's resident model."""

    def __init__(
        self,
        *,
        model_config: ModelConfig,
        tokenizer: WordTokenizer,
        local: LocalTrainingConfig,
        fault_kind: str = "nan",
        fault_scale: float | None = None,
        ranks: Ranks | None = None,
        seed: int = 0,
    ) -> None:
        self.tokenizer = tokenizer
        self.local = local
        self.fault_kind = fault_kind
        self.fault_scale = fault_scale
        self.ranks: Ranks = ranks or SingleRank()
        self._model = NextWordModel(model_config)
        self._max_len = model_config.max_len
        # Compression of the phones' updates (and top-k's error feedback).
        self.uplink = Uplink(local.update_compression, seed=seed)

    def _mine(self, phones: Sequence[Phone]) -> list[Phone]:
        """This rank's share of `phones`, balanced by their local steps."""
        if self.ranks.world_size == 1:
            return list(phones)
        work = [
            float(p.local_steps(self.tokenizer, self.local, self._max_len))
            for p in phones
        ]
        owner = assign_shares(work, self.ranks.world_size)
        return [p for p, r in zip(phones, owner, strict=True) if r == self.ranks.rank]

    def report_seconds(
        self, phone: Phone, *, model_bytes: int, step_seconds: float
    ) -> float:
        """Simulated seconds from the task to `phone`'s report, from its own step
        count: its history is read on the phone's side only."""
        steps = phone.local_steps(self.tokenizer, self.local, self._max_len)
        return work_seconds(
            phone.profile,
            steps=steps,
            model_bytes=model_bytes,
            step_seconds=step_seconds,
        )

    def train(
        self,
        phones: Sequence[Phone],
        global_parameters: Parameters,
        *,
        server_round: int,
        on_report: ReportCallback | None = None,
        reveal_norms: bool = True,
    ) -> TrainedRound:
        """Train this rank's share; summaries of every phone, updates kept here.

        With `reveal_norms` off (secure aggregation) no summary carries its
        update's norm, sketch or loss figures across ranks.
        """
        trained = TrainedRound([], list(global_parameters), self.ranks)
        for phone in self._mine(phones):
            report = phone.train(
                self._model,
                global_parameters,
                tokenizer=self.tokenizer,
                config=self.local,
                server_round=server_round,
                fault_kind=self.fault_kind,
                fault_scale=self.fault_scale,
            )
            # The phone compresses; the server decompresses before screening.
            report = self.uplink.send(report, server_round=server_round)
            trained.local[report.client_id] = report
            if phone.profile.faulty and self.fault_kind in HOSTILE_KINDS:
                trained.faults[phone.client_id] = fault_of(
                    self.fault_kind, self.fault_scale
                )
            summary = summarise(report, trained.reference, with_norm=reveal_norms)
            trained.summaries.append(summary)
            if on_report is not None:
                on_report(summary)
        by_id: dict[str, ClientSummary] = {}
        for part in self.ranks.all_gather_objects(trained.summaries):
            by_id.update((s.client_id, s) for s in part)  # type: ignore[attr-defined]
        trained.summaries = [by_id[p.client_id] for p in phones]
        return trained

    def evaluate(
        self,
        phones: Sequence[Phone],
        global_parameters: Parameters,
        *,
        max_messages: int,
        keystroke_texts: Sequence[int],
    ) -> list[tuple[str, EvalCounts]]:
        """`(client_id, counts)` of the weights on each phone's future text.

        The phones are shared out over the ranks by their future text's size and
        the counts gathered, so every rank returns the same list, in phone order.
        `keystroke_texts[i]` is phone i's share of the keystroke sample.
        """
        load_parameters(self._model, global_parameters)
        work = [float(p.future_size(max_messages)) for p in phones]
        owner = assign_shares(work, self.ranks.world_size)
        mine: dict[str, EvalCounts] = {}
        for phone, keystrokes, rank in zip(phones, keystroke_texts, owner, strict=True):
            if rank != self.ranks.rank:
                continue
            counts = phone.evaluate_counts(
                self._model,
                tokenizer=self.tokenizer,
                max_messages=max_messages,
                keystroke_texts=keystrokes,
            )
            if counts is not None:
                mine[phone.client_id] = counts
        merged: dict[str, EvalCounts] = {}
        for part in self.ranks.all_gather_objects(mine):
            merged.update(part)  # type: ignore[call-overload]
        return [
            (p.client_id, merged[p.client_id]) for p in phones if p.client_id in merged
        ]

    def close(self) -> None:
        """Leave the ranks' group."""
        self.ranks.close()


# The one executor type; tests may substitute any object with these methods.
ClientExecutor = FleetExecutor
