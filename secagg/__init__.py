"""SecAgg+'s shared primitives, used by the phone's and the server's side alike.

Bonawitz et al. 2017 (CCS) with the sparse graph of Bell et al. 2020 (CCS):
round parameters, key agreement and sealing, Shamir sharing, the PRG, the
quantisation, the neighbour graph, the messages that cross, and `PhoneSide`,
what the server may ask of the phones. The phone's side lives in
`device_sim.secagg_client` and `device_sim.secagg_phones`, the server's in
`coordinator.protections.secagg_server`; see docs/secagg.md.
"""

from secagg.config import (
    RoundParameters,
    SecAggAbort,
    SecAggConfig,
    round_parameters,
)
from secagg.messages import (
    EncryptedShare,
    MaskedInput,
    PublicKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.phones import MaskerLike, PhonesFactory, PhoneSide
from secagg.quantize import QuantizationSpec, choose_spec

__all__ = [
    "EncryptedShare",
    "MaskedInput",
    "MaskerLike",
    "PhoneSide",
    "PhonesFactory",
    "PublicKeys",
    "QuantizationSpec",
    "RoundParameters",
    "SecAggAbort",
    "SecAggConfig",
    "UnmaskRequest",
    "UnmaskResponse",
    "choose_spec",
    "round_parameters",
]
