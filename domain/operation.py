"""The operation: one clerk action as the workstation records it and the
server receives it. The same envelope is the outbox row, the push's item and
the server's deduplication record.

The command's arguments travel as the JSON text the window made
(``payload``), hashed once (:func:`args_hash`), and resent verbatim: the
server checks the hash, so a replay with other arguments under the same op id
is refused instead of applied.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .commands import Command, parse_command
from .signing import KEY_CERT_PATTERN, KEY_ID_PATTERN, SIGNATURE_PATTERN, SigningKey
from .text import unstorable

MAX_PAYLOAD_CHARS = 16_384


def args_hash(kind: str, payload: str) -> str:
    """SHA-256 of the kind and the arguments' JSON text."""
    return hashlib.sha256(f"{kind}\n{payload}".encode()).hexdigest()


class Operation(BaseModel):
    """One clerk action; resent verbatim until the server has answered it.

    Strict (a ``client_seq`` of ``"7"`` is refused, not read as 7) and
    storable: a push holding an envelope the server could not record is
    refused whole (422). The workstation builds its operations with this very
    model, so none of its own is ever refused so; what an op *carries* (the
    payload) is judged op by op, and a bad one is refused alone."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    op_id: str = Field(min_length=1, max_length=40, description="a ULID made at the workstation")
    device_id: str | None = Field(
        default=None,
        max_length=40,
        description="the workstation that made it; the server holds it to the device token "
        "(workstations of release 0.1 leave it out)",
    )
    client_seq: int = Field(ge=1, le=2**62, description="the device's own gap-free sequence")
    kind: str = Field(min_length=1, max_length=40)
    payload: str = Field(max_length=MAX_PAYLOAD_CHARS, description="the command as JSON text")
    args_hash: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 of kind + newline + payload"
    )
    clerk_id: str = Field(min_length=1, max_length=40)
    at: str = Field(min_length=10, max_length=40, description="when the clerk acted (ISO 8601)")
    hlc: str = Field(max_length=40, description="hybrid logical clock: a hint for people")
    withdrawn: bool = Field(
        default=False,
        description="the workstation withdraws it: the server refused it once (an answer a "
        "restore of the server lost) and the clerk was told; it is recorded as refused and "
        "never applied, so the device's sequence goes on",
    )
    key_id: str | None = Field(
        default=None,
        pattern=KEY_ID_PATTERN,
        description="the clerk's signing key on this device (domain.signing); ops made "
        "before workstations signed (release 0.1) leave it out",
    )
    signature: str | None = Field(
        default=None,
        pattern=SIGNATURE_PATTERN,
        description="Ed25519 signature by that key of the op's signed text (domain.signing)",
    )
    key_cert: str | None = Field(
        default=None,
        pattern=KEY_CERT_PATTERN,
        description="the key's public half and the server's certificate that it is the "
        "clerk's on this device, given at the login that registered it: a server restored "
        "from a backup that lost the registration records the key again from it",
    )

    @classmethod
    def of(
        cls,
        command: Command,
        *,
        op_id: str,
        device_id: str,
        client_seq: int,
        clerk_id: str,
        at: str,
        hlc: str,
    ) -> Operation:
        payload = command.model_dump_json()
        return cls(
            op_id=op_id,
            device_id=device_id,
            client_seq=client_seq,
            kind=command.kind,
            payload=payload,
            args_hash=args_hash(command.kind, payload),
            clerk_id=clerk_id,
            at=at,
            hlc=hlc,
        )

    def signed_by(
        self, key: SigningKey, device_id: str, certificate: str | None = None
    ) -> Operation:
        """This op signed with the clerk's ``key`` (and its ``certificate``)."""
        return self.model_copy(
            update={
                "key_id": key.key_id,
                "signature": key.sign(self, device_id),
                "key_cert": certificate,
            }
        )

    @model_validator(mode="after")
    def _storable(self) -> Operation:
        for text in (self.op_id, self.kind, self.payload, self.clerk_id, self.at, self.hlc):
            if unstorable(text):
                raise ValueError("text holds NUL or a lone surrogate, which cannot be stored")
        if self.device_id is not None and unstorable(self.device_id):
            raise ValueError("text holds NUL or a lone surrogate, which cannot be stored")
        return self

    def hash_matches(self) -> bool:
        return args_hash(self.kind, self.payload) == self.args_hash

    def command(self) -> Command:
        """The command it carries; DomainError if it is unknown or malformed."""
        return parse_command(self.kind, self.payload)
