"""Compressed updates up: what a phone really sends, and the server's decompression.

- `int8`: QSGD-style uniform quantisation (Alistarh et al. 2017, arXiv 1610.02132)
  with one float32 scale per tensor, `max|x| / 127`, and stochastic rounding:
  x/scale rounds up with probability equal to its fractional part, so the
  decompressed update is an unbiased estimate of the update. 1 byte a weight.
- `topk:F`: each tensor's fraction F of largest-magnitude values, as int32
  indices and float32 values (8 bytes each), with error feedback (Stich et al.
  2018, arXiv 1809.07599; Karimireddy et al. 2019): what was not sent is kept on
  the phone and added to its next update.

The math here is pure (tensors and a random stream in, messages out).
`Uplink` is the phone side across rounds: it holds the error-feedback memory
and draws each phone's rounding stream from `(seed, server_round, client_id)`.
The server decompresses each message before screening it.

Neither composes with secure aggregation, which the CLI refuses: a masked
coordinate is a dense random field element of SecAgg's own fixed-point width
(`secagg.quantize`, whose `bits` is the knob that shrinks it), so an
8-bit grid per phone saves nothing, and a sparse update would show the server
its indices.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from device_sim.compression_spec import COMPRESSIONS as COMPRESSIONS
from device_sim.compression_spec import Compression as Compression
from device_sim.compression_spec import parse_compression as parse_compression
from models.seeding import numpy_rng
from models.weights import Parameters

if TYPE_CHECKING:
    from device_sim.phone import ClientReport

INT8_LEVELS = 127  # int8 values lie in [-127, 127]: symmetric around 0
SCALE_BYTES = 4  # a float32 scale per int8 tensor
SPARSE_ENTRY_BYTES = 8  # an int32 index and a float32 value


@dataclass(frozen=True, eq=False)
class Int8Tensor:
    """One tensor as sent: int8 levels and the float32 scale that maps them back."""

    levels: np.ndarray  # int8, the tensor's shape
    scale: float

    @property
    def nbytes(self) -> int:
        return self.levels.size + SCALE_BYTES


@dataclass(frozen=True, eq=False)
class SparseTensor:
    """One tensor as sent: the kept values and their flat indices."""

    indices: np.ndarray  # int32, (k,)
    values: np.ndarray  # float32, (k,)
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return self.indices.size * SPARSE_ENTRY_BYTES


def quantize_int8(tensor: torch.Tensor, rng: np.random.Generator) -> Int8Tensor:
    """Stochastic rounding onto `scale * {-127, ..., 127}`, scale = max|x| / 127."""
    values = tensor.detach().cpu().double().numpy()
    peak = float(np.abs(values).max()) if values.size else 0.0
    if peak == 0.0:
        return Int8Tensor(np.zeros(values.shape, dtype=np.int8), 0.0)
    scale = np.float32(peak / INT8_LEVELS)
    scaled = np.clip(values / float(scale), -INT8_LEVELS, INT8_LEVELS)
    low = np.floor(scaled)
    up = rng.random(values.shape) < scaled - low
    return Int8Tensor((low + up).astype(np.int8), float(scale))


def top_k(tensor: torch.Tensor, fraction: float) -> SparseTensor:
    """The `ceil(fraction * n)` largest-magnitude values; ties to the lower index."""
    flat = tensor.detach().cpu().float().reshape(-1).numpy()
    k = min(flat.size, int(np.ceil(fraction * flat.size)))
    order = np.lexsort((np.arange(flat.size), -np.abs(flat)))[:k]
    indices = np.sort(order).astype(np.int32)
    return SparseTensor(indices, flat[indices].copy(), tuple(tensor.shape))


def decompress(message: Int8Tensor | SparseTensor, like: torch.Tensor) -> torch.Tensor:
    """The server's reading of one sent tensor, in `like`'s shape and dtype."""
    if isinstance(message, Int8Tensor):
        values = message.levels.astype(np.float64) * message.scale
        return torch.from_numpy(values).to(like.dtype).reshape(like.shape)
    dense = torch.zeros(like.numel(), dtype=like.dtype)
    dense[torch.from_numpy(message.indices.astype(np.int64))] = torch.from_numpy(
        message.values
    ).to(like.dtype)
    return dense.reshape(like.shape)


def compress(
    update: Parameters,
    compression: Compression,
    rng: np.random.Generator,
    residual: Parameters | None = None,
) -> tuple[list[Int8Tensor | SparseTensor], Parameters | None]:
    """The messages of one update and the error-feedback memory after sending.

    Args:
        update: The phone's update, in parameter order.
        compression: int8 or topk (none sends the update as it is).
        rng: The phone's rounding stream for this round.
        residual: What earlier topk rounds did not send, added first.

    Returns:
        One message a tensor, and the new residual (topk only, else None).
    """
    if compression.kind == "int8":
        return [quantize_int8(t, rng) for t in update], None
    if compression.kind != "topk":
        raise ValueError(f"nothing to compress with {compression.kind!r}")
    if residual is not None:
        update = [u + r for u, r in zip(update, residual, strict=True)]
    sent = [top_k(t, compression.fraction) for t in update]
    kept = [u - decompress(m, u) for u, m in zip(update, sent, strict=True)]
    return list(sent), kept


class Uplink:
    """The phones' side of compressed reporting, across rounds.

    The error-feedback memory lives with the phones this process trains: it is
    not saved in the run directory (a resumed run starts it again at zero).
    """

    def __init__(self, spec: str, *, seed: int) -> None:
        self.compression = parse_compression(spec)
        self.seed = seed
        self.residuals: dict[str, Parameters] = {}

    def send(self, report: ClientReport, *, server_round: int) -> ClientReport:
        """`report` as the server reads it after decompression, with the bytes
        that really crossed in `bytes_up`."""
        if self.compression.kind == "none" or not _finite(report.update):
            # A non-finite update is sent whole, for the screen to reject.
            return report
        rng = numpy_rng(self.seed, server_round, report.client_id, "compress")
        residual = self.residuals.get(report.client_id)
        messages, kept = compress(report.update, self.compression, rng, residual)
        if kept is not None:
            self.residuals[report.client_id] = kept
        received = [
            decompress(m, t) for m, t in zip(messages, report.update, strict=True)
        ]
        return replace(
            report, update=received, bytes_up=sum(m.nbytes for m in messages)
        )


def _finite(update: Parameters) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in update)
