"""Evaluation of the global model every `eval_every` rounds, at a bounded cost.

Two sets, both fixed for the whole run so that rounds compare:

- held-out users (generalisation to people who never trained): a fixed, evenly
  spaced sample of `heldout_messages` of their messages, the same sample
  `fedtype evaluate` and the central baseline use; the server holds it as a test
  set, as a simulation may.
- the training population's future text (what its users typed after training
  data was cut): measured on the phones themselves, federated evaluation as in
  Gboard (Hard et al. 2018). A cohort of phones drawn once from the seed, holding
  about `future_messages` messages (at most `future_messages_per_phone` each),
  reports additive counts that `models.metrics.combine` pools. The cohort rule
  is `models.evaluation_sets.future_cohort`, shared with the baselines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coordinator.config import FederationConfig
from corpora.tokenizer import WordTokenizer
from device_sim.executor import ClientExecutor
from device_sim.fleet import Fleet
from models import evaluation_sets
from models.evaluation_sets import FutureCohort
from models.metrics import combine, evaluate
from models.model import NextWordModel
from models.weights import parameters_of


def future_cohort(fleet: Fleet, config: FederationConfig) -> FutureCohort:
    """The fleet's phones that measure future text (`models.evaluation_sets`)."""
    sizes = {
        client_id: fleet.phone(client_id).future_size(config.future_messages_per_phone)
        for client_id in fleet.client_ids
    }
    return evaluation_sets.future_cohort(
        sizes,
        seed=config.seed,
        messages=config.future_messages,
        keystroke_texts=config.keystroke_texts,
    )


@dataclass(frozen=True, kw_only=True)
class Evaluator:
    """Measures a global model on the held-out sample and the future cohort."""

    heldout_texts: list[str]
    cohort: FutureCohort
    config: FederationConfig
    tokenizer: WordTokenizer

    def heldout(self, model: NextWordModel) -> dict[str, Any] | None:
        """Metrics on the held-out sample (None when there is none)."""
        if not self.heldout_texts:
            return None
        metrics = evaluate(
            model,
            self.tokenizer,
            self.heldout_texts,
            max_len=model.config.max_len,
            keystroke_texts=self.config.keystroke_texts,
        )
        return metrics.as_dict()

    def future(
        self, model: NextWordModel, fleet: Fleet, executor: ClientExecutor
    ) -> dict[str, Any] | None:
        """Metrics pooled from the cohort's phones (None when the cohort is empty)."""
        pairs = [
            (fleet.phone(c), k)
            for c, k in zip(
                self.cohort.client_ids, self.cohort.keystroke_texts, strict=True
            )
            if c in fleet
        ]
        if not pairs:
            return None
        counts = executor.evaluate(
            [phone for phone, _ in pairs],
            parameters_of(model),
            max_messages=self.config.future_messages_per_phone,
            keystroke_texts=[k for _, k in pairs],
        )
        return combine([c for _, c in counts]).as_dict()

    def run(
        self,
        model: NextWordModel,
        fleet: Fleet,
        executor: ClientExecutor,
        *,
        heldout: bool = True,
    ) -> dict[str, Any]:
        """`{"heldout": ..., "future": ...}`, each `EvalMetrics.as_dict()` or None.

        The future cohort's phones are measured on every rank (a collective);
        the held-out sample only where `heldout` is set (rank 0).
        """
        return {
            "heldout": self.heldout(model) if heldout else None,
            "future": self.future(model, fleet, executor),
        }
