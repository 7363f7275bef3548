"""The unigram baseline: always suggest the most frequent training words.

A keyboard with no model at all would offer the words people type most; any learned
model must beat it. It is written as a module with the model's interface, so the same
`models.metrics.evaluate` measures it.
"""

from __future__ import annotations

import torch
from torch import nn

from corpora.tokenizer import WordTokenizer


def public_unigram_log_probs(tokenizer: WordTokenizer) -> torch.Tensor:
    """Log-probabilities of the tokenizer's tokens from public word frequencies.

    No phone's text enters: the words take wordfreq's English frequencies (the
    list the public vocabulary was drawn from), `<unk>` the frequency mass of the
    words outside the vocabulary, and `<eos>`, each punctuation mark and the other
    specials, for which wordfreq has no figure, the uniform share 1 / V that an
    untrained model gives them.

    Returns:
        A float32 tensor of shape (V,) whose exponentials sum to 1.
    """
    from wordfreq import get_frequency_dict

    frequencies = get_frequency_dict("en")
    size = tokenizer.vocab_size
    words = torch.zeros(size, dtype=torch.float64)
    for token_id in tokenizer.word_ids:
        words[token_id] = frequencies.get(tokenizer.id_to_token[token_id], 0.0)
    total = sum(frequencies.values())
    words[tokenizer.unk_id] = max(total - float(words.sum()), 0.0)
    # <eos>, punctuation, <pad>, <bos> and any word wordfreq lacks.
    uniform = words == 0
    probs = words / words.sum() * (1 - int(uniform.sum()) / size)
    probs[uniform] = 1 / size
    return torch.log(probs).float()


class UnigramModel(nn.Module):
    """Predicts the same distribution, the training unigram frequencies, everywhere."""

    log_probs: torch.Tensor  # (V,), a buffer

    def __init__(self, log_probs: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("log_probs", log_probs)  # (V,)

    @classmethod
    def fit(cls, tokenizer: WordTokenizer, texts: list[str]) -> UnigramModel:
        """Add-one smoothed token frequencies of `texts`, one `<eos>` a message."""
        # One bincount over every text's ids (one per text cost 4 s on Chit-Chat).
        ids = torch.tensor(
            [i for row in tokenizer.encode_batch(texts) for i in row], dtype=torch.long
        )
        counts = 1 + torch.bincount(ids, minlength=tokenizer.vocab_size).double()
        counts[tokenizer.eos_id] += len(texts)
        counts[tokenizer.pad_id] = 0
        counts[tokenizer.bos_id] = 0
        return cls(torch.log(counts / counts.sum()).float())

    def forward(
        self, tokens: torch.Tensor, state: object = None
    ) -> tuple[torch.Tensor, None]:
        """The unigram log-probabilities at every position: (B, T, V)."""
        batch, length = tokens.shape
        return self.log_probs.expand(batch, length, -1), None
