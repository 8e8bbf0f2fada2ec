"""Who did it is who signed it.

Each clerk holds, on each workstation, an Ed25519 signing key of their own.
The workstation makes it at the clerk's online login, keeps the private half
sealed under a key derived from the clerk's password (``local_db.keys``), and
registers the public half with the server in the login itself, where the
password proves whose it is. An offline login unseals it; every operation the
clerk makes is signed with it at the moment it is committed.

The server applies an operation as the clerk it names only if the signature
matches a key that clerk registered on that device: a colleague's session, a
session on another device, or a clerk id read from a pull cannot stand in
for anyone. The private key never leaves the workstation, so neither can a
copy of the server's database.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PUBLIC_KEY_BYTES = 32
KEY_ID_PATTERN = r"^[0-9a-f]{32}$"
# the server's certificate of a key: "<public key hex>:<HMAC hex>" (server.keys)
KEY_CERT_PATTERN = r"^[0-9a-f]{64}:[0-9a-f]{64}$"
SIGNATURE_PATTERN = r"^[0-9a-f]{128}$"
PUBLIC_KEY_PATTERN = r"^[0-9a-f]{64}$"
_FORMAT = "op-signature/1"


class Signed(Protocol):
    """What a signature covers of an operation (``domain.operation.Operation``)."""

    @property
    def op_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def args_hash(self) -> str: ...
    @property
    def clerk_id(self) -> str: ...
    @property
    def at(self) -> str: ...
    @property
    def hlc(self) -> str: ...
    @property
    def signature(self) -> str | None: ...


def key_id_of(public_key: bytes) -> str:
    """A key's name: the first 128 bits of the SHA-256 of its public half."""
    return hashlib.sha256(public_key).hexdigest()[:32]


def signed_text(op: Signed, device_id: str) -> bytes:
    """What a signature covers: everything that says who did what, where and
    when (the arguments through their hash). Not its place in the device's
    sequence (the op id, signed and applied once, already makes it one op),
    nor ``withdrawn``, which only ever makes the server apply less."""
    fields = (
        _FORMAT,
        op.op_id,
        device_id,
        op.kind,
        op.args_hash,
        op.clerk_id,
        op.at,
        op.hlc,
    )
    return "\n".join(fields).encode()


class SigningKey:
    """A clerk's private key on this workstation, once unsealed."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_key = private.public_key().public_bytes_raw()
        self.key_id = key_id_of(self.public_key)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> SigningKey:
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self._private.private_bytes_raw()

    def sign(self, op: Signed, device_id: str) -> str:
        return self._private.sign(signed_text(op, device_id)).hex()


def public_key_of(raw: bytes) -> Ed25519PublicKey | None:
    """The public key of ``raw`` bytes, loaded once to check many signatures."""
    if len(raw) != PUBLIC_KEY_BYTES:
        return None
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        return None


def signature_valid(
    public_key: bytes | Ed25519PublicKey | None, op: Signed, device_id: str
) -> bool:
    """Whether ``op.signature`` is ``public_key``'s over the op made on ``device_id``."""
    key = public_key_of(public_key) if isinstance(public_key, bytes) else public_key
    if op.signature is None or key is None:
        return False
    try:
        key.verify(bytes.fromhex(op.signature), signed_text(op, device_id))
    except (InvalidSignature, ValueError):
        return False
    return True
