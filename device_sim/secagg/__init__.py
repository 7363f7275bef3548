"""Secure aggregation (SecAgg+) on the phone, and the primitives both sides use.

Bonawitz et al. 2017 (CCS) with the sparse graph of Bell et al. 2020 (CCS). The
server's side lives in `coordinator.secagg_server`; see docs/secagg.md.
"""

from device_sim.secagg.client import Masker, SecAggClient
from device_sim.secagg.config import (
    RoundParameters,
    SecAggAbort,
    SecAggConfig,
    round_parameters,
)
from device_sim.secagg.messages import (
    EncryptedShare,
    MaskedInput,
    PublicKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from device_sim.secagg.quantize import QuantizationSpec, choose_spec

__all__ = [
    "EncryptedShare",
    "MaskedInput",
    "Masker",
    "PublicKeys",
    "QuantizationSpec",
    "RoundParameters",
    "SecAggAbort",
    "SecAggClient",
    "SecAggConfig",
    "UnmaskRequest",
    "UnmaskResponse",
    "choose_spec",
    "round_parameters",
]
