"""MEASUREMENT HARNESS ONLY: the tokens a phone really trained on in a round.

The curious-server attack (`coordinator.attack`) is scored against the truth,
the words in the batches the phone trained on. Only the measurement code may
know it: it is computed here, on the device side, from the phone's own data,
and it is never an input to the coordinator's logic (selection, screening,
aggregation). A real deployment has no such function.
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
