"""The exported model under onnxruntime, behind `NextWordModel`'s interface.

`OnnxNextWordModel` maps (B, T) token ids and an optional LSTM state to
((B, T, V) logits, state), as `NextWordModel.forward` does, so the one
`models.suggest.Suggester` and the one `models.metrics.evaluate` serve both
engines: the exported model's strip and metrics are computed by the same code
as the PyTorch model's, and any difference is the graph's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from corpora.messages import CorpusError
from corpora.tokenizer import WordTokenizer
from models.config import ModelConfig
from models.export_manifest import TOKENIZER_FILE, ExportError, read_manifest

LSTMState = tuple[torch.Tensor, torch.Tensor]


class OnnxNextWordModel(nn.Module):
    """An onnxruntime session of an exported graph (no parameters of its own)."""

    def __init__(self, path: Path, config: ModelConfig, *, threads: int = 1) -> None:
        """Open the graph at `path` on the CPU with `threads` intra-op threads
        (1 by default, as a keyboard runs beside the app in the foreground)."""
        import onnxruntime as ort

        super().__init__()
        self.config = config
        self.path = path
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own bare classes
            raise ExportError(f"{path}: onnxruntime cannot load it ({error})") from None

    def step(
        self, tokens: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One call of the graph on numpy arrays: what a phone app makes a key."""
        logits, h_out, c_out = self.session.run(
            None, {"tokens": tokens, "h": h, "c": c}
        )
        return logits, h_out, c_out

    def forward(
        self, tokens: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """Logits (B, T, V) of the next token at every position, and the state."""
        batch = tokens.shape[0]
        if state is None:
            zeros = np.zeros((1, batch, self.config.hidden_dim), dtype=np.float32)
            h, c = zeros, zeros
        else:
            h, c = (s.detach().cpu().float().numpy() for s in state)
        ids = tokens.detach().cpu().to(torch.int64).numpy()
        logits, h_out, c_out = self.step(ids, h, c)
        return torch.from_numpy(logits), (
            torch.from_numpy(h_out),
            torch.from_numpy(c_out),
        )


@dataclass(frozen=True)
class ExportedModel:
    """An export directory opened: the engine, its tokenizer, its manifest."""

    model: OnnxNextWordModel
    tokenizer: WordTokenizer
    manifest: dict[str, Any]


def load_exported(directory: str | Path, *, threads: int = 1) -> ExportedModel:
    """Open an export directory written by `models.export.export_model`.

    Raises:
        ExportError: a missing or damaged file (checksums are verified), or a
            manifest whose model shape or vocabulary does not fit its files.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    try:
        config = ModelConfig(**manifest["model"])
    except (KeyError, TypeError, ValueError):
        raise ExportError(f"{directory}: manifest.json has no valid model") from None
    try:
        tokenizer = WordTokenizer.load(directory / TOKENIZER_FILE)
    except CorpusError as error:
        raise ExportError(str(error)) from None
    if tokenizer.fingerprint() != manifest.get("vocab_fingerprint"):
        raise ExportError(f"{directory}: tokenizer.json is not the model's vocabulary")
    model = OnnxNextWordModel(
        directory / manifest["model_file"], config, threads=threads
    )
    return ExportedModel(model, tokenizer, manifest)
