"""The next-word model: embedding, one LSTM layer, projection, tied output layer.

In the spirit of the Gboard next-word model (Hard et al. 2018, arXiv 1811.03604):
a single recurrent layer whose output is projected back to the embedding width so
the output layer can share the input embedding matrix, which halves the parameters.
Gboard used a CIFG-LSTM (coupled input and forget gates); this uses PyTorch's fused
standard LSTM, which is several times faster on CPU than a hand-written CIFG cell.
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import ModelConfig, native_bf16

LSTMState = tuple[torch.Tensor, torch.Tensor]
# Whether bf16 autocast may run the LSTM (oneDNN needs native bf16 for it).
NATIVE_BF16 = native_bf16()


class NextWordModel(nn.Module):
    """Predicts the next token of a token sequence."""

    def __init__(
        self, config: ModelConfig, *, output_bias: torch.Tensor | None = None
    ) -> None:
        """A freshly initialised model.

        Args:
            config: the model's shape.
            output_bias: the output layer's starting bias, shape (V,), e.g. a
                unigram distribution's log-probabilities; None starts at zeros.
        """
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        self.lstm = nn.LSTM(config.embed_dim, config.hidden_dim, batch_first=True)
        self.projection = nn.Linear(config.hidden_dim, config.embed_dim)
        self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
        nn.init.normal_(self.embedding.weight, std=0.05)
        if output_bias is not None:
            if output_bias.shape != (config.vocab_size,):
                raise ValueError(
                    f"output_bias has shape {tuple(output_bias.shape)}, "
                    f"expected ({config.vocab_size},)"
                )
            with torch.no_grad():
                self.output_bias.copy_(output_bias)

    def features(
        self, tokens: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """The projected LSTM output at every position, before the output layer.

        Args:
            tokens: Token ids, shape (B, T).
            state: LSTM state to continue from, or None to start fresh.

        Returns:
            Features of shape (B, T, E) and the LSTM state after the last position.
        """
        embedded = self.embedding(tokens)  # (B, T, E)
        if torch.is_autocast_enabled("cpu") and not NATIVE_BF16:
            # oneDNN has no bf16 LSTM without native bf16: run it in fp32.
            with torch.autocast("cpu", enabled=False):
                hidden, state = self.lstm(embedded, state)  # (B, T, H)
        else:
            hidden, state = self.lstm(embedded, state)  # (B, T, H)
        return self.projection(hidden), state  # (B, T, E)

    def output_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The tied output layer: features (..., E) to logits (..., V)."""
        return features @ self.embedding.weight.T + self.output_bias

    def candidate_logits(
        self, features: torch.Tensor, targets: torch.Tensor, samples: torch.Tensor
    ) -> torch.Tensor:
        """The tied output layer over each row's target and shared samples only.

        Args:
            features: (N, E).
            targets: (N,) each row's own word.
            samples: (S,) words every row is scored against.

        Returns:
            (N, 1 + S): column 0 the target's logit, then the samples'.
        """
        weight, bias = self.embedding.weight, self.output_bias
        own = (features * weight[targets]).sum(-1) + bias[targets]  # (N,)
        shared = features @ weight[samples].T + bias[samples]  # (N, S)
        return torch.cat([own[:, None].to(shared.dtype), shared], dim=1)

    def forward(
        self,
        tokens: torch.Tensor,
        state: LSTMState | None = None,
        *,
        at: torch.Tensor | None = None,
        row_multiple: int = 1,
        candidates: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, LSTMState]:
        """Logits of the next token at every position, or at the positions `at`.

        Args:
            tokens: Token ids, shape (B, T).
            state: LSTM state to continue from, or None to start fresh.
            at: A (B, T) boolean mask; when given, logits only where it is True,
                packed in row-major order into (N, V). Training passes its real
                (non-padding) targets so that no work is spent on padding in the
                output layer, which holds most of the model's arithmetic.
            row_multiple: with `at`, zero rows are appended so that N is a
                multiple of this (their logits are the output bias alone).
            candidates: with `at`, (targets (N',), samples (S,)): logits only of
                each packed row's target and of the shared samples, (N', 1 + S),
                as the sampled softmax of training needs (`candidate_logits`).

        Returns:
            Logits of shape (B, T, V), or (N, V) with `at`, and the LSTM state
            after the last position.
        """
        features, state = self.features(tokens, state)  # (B, T, E)
        if at is not None:
            features = features[at]  # (N, E)
            extra = -features.shape[0] % row_multiple
            if extra:
                features = torch.cat(
                    [
                        features,
                        features.new_zeros(extra, 1).expand(extra, features.shape[1]),
                    ]
                )
            if candidates is not None:
                return self.candidate_logits(features, *candidates), state
        return self.output_logits(features), state


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_count(config: ModelConfig) -> int:
    """The numbers in `NextWordModel(config)`'s weights, from its config alone:
    the embedding (tied to the output), the LSTM with its two biases, the
    projection with its bias, and the output bias."""
    e, h, v = config.embed_dim, config.hidden_dim, config.vocab_size
    lstm = 4 * h * (e + h) + 8 * h
    return v * e + lstm + (h * e + e) + v


def flops_per_token(config: ModelConfig) -> int:
    """Multiply-adds x2 of one forward step for one token (embedding lookup free)."""
    e, h, v = config.embed_dim, config.hidden_dim, config.vocab_size
    lstm = 4 * h * (e + h)
    return 2 * (lstm + h * e + e * v)
