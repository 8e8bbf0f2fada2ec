"""A clerk's signing key at rest: sealed under the clerk's password.

The private key (``domain.signing``) is encrypted with AES-256-GCM under a key
derived from the password by Argon2id, with a salt of its own; the clerk's
and the device's ids are bound in as associated data, so a sealed key copied
to another clerk's row or another workstation does not open. Whoever reads
the replica learns the public key and nothing that signs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.signing import SigningKey

# Argon2id, as the password verifier (argon2-cffi's defaults): a guess costs
# the same whichever of the two an attacker with the replica tries.
KDF_TIME_COST = 3
KDF_MEMORY_KIB = 65_536
KDF_PARALLELISM = 4


@dataclass(frozen=True)
class SealedKey:
    key_id: str
    public_key: bytes
    salt: bytes
    nonce: bytes
    sealed: bytes


def _wrapping_key(password: str, salt: bytes) -> bytes:
    return hash_secret_raw(
        password.encode(),
        salt,
        time_cost=KDF_TIME_COST,
        memory_cost=KDF_MEMORY_KIB,
        parallelism=KDF_PARALLELISM,
        hash_len=32,
        type=Type.ID,
    )


def _bound(clerk_id: str, device_id: str) -> bytes:
    return f"clerk-key/1\n{clerk_id}\n{device_id}".encode()


def seal(key: SigningKey, password: str, clerk_id: str, device_id: str) -> SealedKey:
    salt, nonce = os.urandom(16), os.urandom(12)
    sealed = AESGCM(_wrapping_key(password, salt)).encrypt(
        nonce, key.private_bytes(), _bound(clerk_id, device_id)
    )
    return SealedKey(key.key_id, key.public_key, salt, nonce, sealed)


def unseal(sealed: SealedKey, password: str, clerk_id: str, device_id: str) -> SigningKey | None:
    """The key, or None if the password (or the clerk, or the device) is not the one
    it was sealed for."""
    try:
        raw = AESGCM(_wrapping_key(password, sealed.salt)).decrypt(
            sealed.nonce, sealed.sealed, _bound(clerk_id, device_id)
        )
    except InvalidTag:
        return None
    key = SigningKey.from_bytes(raw)
    return key if key.key_id == sealed.key_id else None
