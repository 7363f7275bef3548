"""MEASUREMENT HARNESS ONLY: what the phones really did in a round.

The curious-server attack (`coordinator.measure.attack`) is scored against the truth,
the words in the batches the phone trained on; and a protected round's metrics
line files the phones' own loss figures and work as `simulation_truth`. Only
the measurement code may know them: they are computed here, on the device side,
from the phones' own data and reports, and they are never an input to the
coordinator's logic (selection, screening, aggregation). A real deployment has
no such functions.
"""

from __future__ import annotations

from corpora.tokenizer import WordTokenizer
from device_sim.config import LocalTrainingConfig
from device_sim.phone import Phone


def trained_tokens(
    phone: Phone,
    *,
    tokenizer: WordTokenizer,
    config: LocalTrainingConfig,
    max_len: int,
    server_round: int,
) -> set[int]:
    """The target token ids of the sequences `phone` trains on in `server_round`.

    The sequences are those `Phone.local_data` draws for the round (its budget
    of them); every one is trained on, since the budget is the steps' capacity.
    """
    data = phone.local_data(
        tokenizer=tokenizer, config=config, max_len=max_len, server_round=server_round
    )
    return {token for sequence in data.sequences for token in sequence[1:]}
