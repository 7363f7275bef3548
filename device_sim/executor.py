"""Where the phones of a round do their work: the client executor interface.

The coordinator hands an executor the phones it picked and the global weights; the
executor returns their reports. `SerialExecutor` trains them one after another in
this process on ONE reused model instance, so the memory of a round does not grow
with the number of phones. A process-pool or batched executor fits behind the same
two methods: phones are plain picklable data, and a report carries only tensors
and numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from corpora.tokenizer import WordTokenizer
from device_sim.config import LocalTrainingConfig
from device_sim.local_eval import EvalCounts
from device_sim.phone import ClientReport, Parameters, Phone, load_parameters
from models.config import ModelConfig
from models.model import NextWordModel

# Called with each report as soon as its phone has finished.
ReportCallback = Callable[[ClientReport], None]


class ClientExecutor(Protocol):
    """Runs phones' local work for the coordinator."""

    def train(
        self,
        phones: Sequence[Phone],
        global_parameters: Parameters,
        *,
        server_round: int,
        on_report: ReportCallback | None = None,
    ) -> list[ClientReport]:
        """Each phone's report after training from `global_parameters`, in order."""
        ...

    def evaluate(
        self,
        phones: Sequence[Phone],
        global_parameters: Parameters,
        *,
        max_messages: int,
        keystroke_texts: Sequence[int],
    ) -> list[tuple[str, EvalCounts]]:
        """`(client_id, counts)` of the weights on each phone's future text.

        `keystroke_texts[i]` is phone i's share of the keystroke sample.
        """
        ...

    def close(self) -> None:
        """Release workers or memory; the executor is not used afterwards."""
        ...


class SerialExecutor:
    """Phones one at a time in this process, on a single reused model instance."""

    def __init__(
        self,
        *,
        model_config: ModelConfig,
        tokenizer: WordTokenizer,
        local: LocalTrainingConfig,
        fault_kind: str = "nan",
    ) -> None:
        self.tokenizer = tokenizer
        self.local = local
        self.fault_kind = fault_kind
        self._model = NextWordModel(model_config)

    def train(
        self,
        phones: Sequence[Phone],
        global_parameters: Parameters,
        *,
        server_round: int,
        on_report: ReportCallback | None = None,
    ) -> list[ClientReport]:
        """Train each phone in turn; `Phone.train` resets the model's weights."""
        reports = []
        for phone in phones:
            report = phone.train(
                self._model,
                global_parameters,
                tokenizer=self.tokenizer,
                config=self.local,
                server_round=server_round,
                fault_kind=self.fault_kind,
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
        """Each phone measures the global weights on its own future text."""
        load_parameters(self._model, global_parameters)
        results = []
        for phone, keystrokes in zip(phones, keystroke_texts, strict=True):
            metrics = phone.evaluate_counts(
                self._model,
                tokenizer=self.tokenizer,
                max_messages=max_messages,
                keystroke_texts=keystrokes,
            )
            if metrics is not None:
                results.append((phone.client_id, metrics))
        return results

    def close(self) -> None:
        """Nothing to release in-process."""
