"""Keys of a SecAgg round: X25519 agreement, HKDF, AES-GCM for shares.

Bonawitz et al. 2017 (section 4) give every phone two Diffie-Hellman key pairs
per round: c for the pairwise masks (the agreed key seeds the PRG) and s for an
authenticated-encryption channel through the server to each neighbour (their
Shamir shares). Here both are X25519 (`cryptography`), every agreed secret goes
through HKDF-SHA256 with a label naming its use, and shares are sealed with
AES-256-GCM.

Simulated: the private keys, the self-mask seed and the Shamir coefficients are
derived from `(seed, server_round, client_id)` so that a run replays; a real
phone draws them from `os.urandom(32)`. Everything else is real cryptography.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
_SALT = b"fedtype-secagg-v1"
# Each share key seals one message (one direction of one pair in one round).
_NONCE = bytes(12)


def simulated_secret(
    seed: int, server_round: int, client_id: str, purpose: str
) -> bytes:
    """32 bytes a real phone would draw from os.urandom, replayable here."""
    return _hkdf(f"{seed}".encode(), f"{server_round}:{client_id}:{purpose}".encode())


def simulated_random_bytes(secret: bytes, purpose: str) -> Callable[[int], bytes]:
    """A replayable stand-in for os.urandom, seeded by a simulated secret."""
    return lambda n: hashlib.shake_256(secret + purpose.encode()).digest(n)


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair held as raw bytes (so that it pickles)."""

    private: bytes
    public: bytes

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        """The pair whose private key is the raw 32 bytes `private`."""
        key = X25519PrivateKey.from_private_bytes(private)
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(private=private, public=public)


def mask_seed(private: bytes, peer_public: bytes) -> bytes:
    """The PRG seed of a pairwise mask; both ends of the pair agree on it."""
    return _hkdf(_exchange(private, peer_public), b"pairwise-mask")


def share_key(
    private: bytes, peer_public: bytes, *, sender: str, recipient: str
) -> bytes:
    """The AES-GCM key of the shares `sender` seals for `recipient`."""
    label = f"shares:{sender}->{recipient}".encode()
    return _hkdf(_exchange(private, peer_public), label)


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """AES-256-GCM ciphertext and tag, bound to `associated` (sender, recipient)."""
    return AESGCM(key).encrypt(_NONCE, plaintext, associated)


def unseal(key: bytes, ciphertext: bytes, associated: bytes) -> bytes:
    """The plaintext; raises `cryptography.exceptions.InvalidTag` if tampered."""
    return AESGCM(key).decrypt(_NONCE, ciphertext, associated)


def _exchange(private: bytes, peer_public: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(private)
    return key.exchange(X25519PublicKey.from_public_bytes(peer_public))


def _hkdf(material: bytes, info: bytes) -> bytes:
    kdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=_SALT, info=info)
    return kdf.derive(material)
