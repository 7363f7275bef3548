"""Export the next-word model for a phone: ONNX with the LSTM state in and out.

Production keyboards run an exported model, not a training framework: SwiftKey
shipped its DP-fine-tuned next-word model through ONNX (arXiv 2505.05648). The
graph takes the LSTM state as input and gives it back as output, so typing one
more word costs one step of one token, not a rerun of the context; that is how
`models.suggest.Suggester` feeds the model (it keeps the state of its cached
context and runs only the new tokens). `models.onnx_engine` runs the result with
onnxruntime behind `NextWordModel`'s interface. The directory's layout and its
manifest are `models.export_manifest`'s.

    tokens (B, T) int64, h (1, B, H), c (1, B, H) -> logits (B, T, V), h_out, c_out
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from corpora.tokenizer import WordTokenizer
from models.export_manifest import (
    FP32_FILE,
    INT8_FILE,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    TOKENIZER_FILE,
    VOCAB_FILE,
    check_out_dir,
    file_entries,
    vocabulary,
)
from models.files import atomic_write, atomic_write_text
from models.model import NextWordModel

# ONNX opset of the graph: 18 runs on onnxruntime 1.14+ and its mobile builds.
OPSET = 18
INPUT_NAMES = ("tokens", "h", "c")
OUTPUT_NAMES = ("logits", "h_out", "c_out")
# Constants up to this many elements are folded at export: the LSTM's weights
# (4H x H), not the embedding (V x E), which would otherwise be stored twice.
_FOLD_LIMIT = 1 << 19


class _StepGraph(nn.Module):
    """`NextWordModel` with its LSTM state as two plain tensors in and out."""

    def __init__(self, model: NextWordModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, tokens: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, (h_out, c_out) = self.model(tokens, (h, c))  # (B, T, V)
        return logits, h_out, c_out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter prints its progress and warns about optional packages; the
    quantiser advises pre-processing through the root logger."""
    loggers = [logging.getLogger("torch.onnx"), logging.getLogger()]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_onnx(model: NextWordModel, path: Path, *, opset: int = OPSET) -> None:
    """Write `model` as an fp32 ONNX graph with dynamic batch and time axes."""
    model = model.float().eval()
    tokens = torch.zeros(2, 3, dtype=torch.int64)  # (B, T)
    state = torch.zeros(1, 2, model.config.hidden_dim)  # (1, B, H)
    batch = torch.export.Dim("batch", min=1, max=65_536)
    time = torch.export.Dim("time", min=1, max=65_536)
    with _quiet():
        program = torch.onnx.export(
            _StepGraph(model),
            (tokens, state, state.clone()),
            dynamo=True,
            opset_version=opset,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={
                "tokens": {0: batch, 1: time},
                "h": {1: batch},
                "c": {1: batch},
            },
        )
    if program is None:  # only the legacy exporter returns None
        raise RuntimeError("torch.onnx.export returned no program")
    _fold_and_save(program.model_proto, path)


def _fold_and_save(graph: Any, path: Path) -> None:
    """Fold the LSTM weights' gate reordering (PyTorch's i, f, g, o to ONNX's
    i, o, f, c: Slices and a Concat of each weight) into plain initializers, so
    that the LSTM op reads its weights directly and int8 quantisation reaches
    them."""
    import onnx
    import onnxscript.optimizer

    # The exporter fixes the time axis of the LSTM's outputs to the sample's
    # length; dropping the intermediate shapes lets them be inferred again.
    del graph.graph.value_info[:]
    _declare_axes(graph)
    folded = onnxscript.optimizer.optimize(
        graph, input_size_limit=_FOLD_LIMIT, output_size_limit=_FOLD_LIMIT
    )
    onnx.save(folded, str(path))


def _declare_axes(graph: Any) -> None:
    """Name the tokens' and logits' batch and time axes in `graph` (an onnx
    ModelProto): the exporter and the quantiser both pin time to the sample's
    length in the declared shapes, and onnxruntime then refuses other lengths."""
    for value in (graph.graph.input[0], graph.graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip(dims[:2], ("batch", "time"), strict=True):
            dim.ClearField("dim_value")
            dim.dim_param = name


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation (onnxruntime.quantization): int8 weights with a
    per-tensor scale, activations quantised at each call. The LSTM and the
    projection run in int8 arithmetic; the tied embedding is stored once in int8
    and dequantised for the output layer."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(source, target, weight_type=QuantType.QInt8)
    graph = onnx.load(str(target))
    _declare_axes(graph)
    onnx.save(graph, str(target))


def export_model(
    model: NextWordModel,
    tokenizer: WordTokenizer,
    out: Path,
    *,
    source: dict[str, Any],
    int8: bool = False,
) -> dict[str, Any]:
    """Write the export directory `out`: new, or an earlier export's (replaced).

    Args:
        model: The trained model.
        tokenizer: The tokenizer it was trained with.
        out: The export directory.
        source: Where the model comes from (run, kind, step, server_round), copied
            into the manifest.
        int8: Ship the int8-quantised graph instead of the fp32 one.

    Returns:
        The manifest, as written to manifest.json.

    Raises:
        ExportError: `out` holds files that are not an export's.
    """
    check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST_FILE, FP32_FILE, INT8_FILE):
        (out / name).unlink(missing_ok=True)
    for stale in out.glob(".*.tmp*"):  # what a killed export left mid-write
        stale.unlink()
    model_file = INT8_FILE if int8 else FP32_FILE
    # Built outside `out`, so that a kill mid-export leaves no stray folder there.
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / FP32_FILE
        export_onnx(model, fp32)
        if int8:
            quantize_int8(fp32, Path(scratch) / INT8_FILE)
        built = Path(scratch) / model_file
        atomic_write(out / model_file, lambda path: shutil.copyfile(built, path))
    atomic_write(out / TOKENIZER_FILE, tokenizer.save)
    atomic_write_text(out / VOCAB_FILE, json_text(vocabulary(tokenizer)))
    manifest = {
        "format": MANIFEST_FORMAT,
        "source": source,
        "model": asdict(model.config),
        "precision": "int8" if int8 else "fp32",
        "model_file": model_file,
        "opset": OPSET,
        "inputs": list(INPUT_NAMES),
        "outputs": list(OUTPUT_NAMES),
        "vocab_fingerprint": tokenizer.fingerprint(),
        "torch": torch.__version__,
        "files": file_entries(out, [model_file, TOKENIZER_FILE, VOCAB_FILE]),
    }
    # Written last: a directory with a manifest is a whole export.
    atomic_write_text(out / MANIFEST_FILE, json_text(manifest))
    return manifest


def json_text(payload: Any) -> str:
    """Indented JSON with a final newline."""
    return json.dumps(payload, indent=1) + "\n"
