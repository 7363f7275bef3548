"""Random streams derived from `(seed, server_round, client_id, ...)`.

Every random choice in fedtype draws from a stream named by the keys it belongs to,
so any round of any run can be replayed alone and two runs with one seed agree.
"""

from __future__ import annotations

import hashlib
import secrets

import numpy as np


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from a base seed and any printable keys."""
    text = ":".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def numpy_rng(seed: int, *keys: object) -> np.random.Generator:
    """A NumPy generator for the stream `(seed, *keys)`."""
    return np.random.default_rng(derive_seed(seed, *keys))


def os_entropy() -> int:
    """128 bits of the operating system's randomness, kept nowhere."""
    return secrets.randbits(128)


def os_rng(entropy: int | None = None) -> np.random.Generator:
    """A stream seeded from the OS (or from `entropy`, itself from `os_entropy`,
    when several ranks must draw the same values): secrets and DP noise, which
    never replay."""
    return np.random.default_rng(os_entropy() if entropy is None else entropy)
