"""The wire protocol between workstation and central server.

Shared by the server (FastAPI request/response models, hence the OpenAPI
document) and the client, so both sides parse the same shapes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from domain.leases import Lease
from domain.operation import MAX_PAYLOAD_CHARS, Operation
from domain.signing import KEY_CERT_PATTERN, PUBLIC_KEY_PATTERN
from domain.text import check_storable

DEVICE_HEADER = "X-Device-Token"
MAX_OPS_PER_PUSH = 500
MAX_BODY_BYTES = 2_000_000
PULL_LIMIT_MAX = 50_000
__all__ = ["MAX_PAYLOAD_CHARS", "Operation"]  # the operation envelope is the domain's

OpStatus = Literal["applied", "applied_modified", "rejected", "needs_review", "deferred"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Request(_Model):
    """A request body: no text in it that the database cannot store (NUL,
    lone surrogates), refused with 422 before it reaches one. (Answers are
    not walked: they come from the database.)"""

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return check_storable(value)


class PushRequest(_Request):
    model_config = ConfigDict(extra="forbid", strict=True)

    device_time: str = Field(
        max_length=40, description="the workstation's wall clock now (ISO 8601)"
    )
    ops: list[Operation] = Field(max_length=MAX_OPS_PER_PUSH)


class OpResult(_Model):
    op_id: str
    status: OpStatus
    code: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    message_zh: str | None = None
    message_en: str | None = None
    server_seq: int | None = Field(default=None, description="change-log head after this op")
    result: dict[str, Any] | None = None


class PushResponse(_Model):
    results: list[OpResult]
    epoch: str
    server_time: str
    clock_skew_s: float = Field(description="device clock minus server clock, seconds")
    clock_skew_flagged: bool


class Change(_Model):
    seq: int
    table: str
    key: str
    row: dict[str, Any] | None = Field(description="the whole row; null for a deletion")


def change_mark(table: str, key: str, row: Mapping[str, Any] | None) -> str:
    """The fingerprint of a change-log entry written before entries had a
    nonce (see ``entry_mark``)."""
    text = json.dumps([table, key, row], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def new_nonce() -> int:
    """A change-log entry's nonce: 63 random bits (a signed BIGINT)."""
    return secrets.randbits(63)


def entry_mark(nonce: int | None, table: str, key: str, row_text: str | None) -> str:
    """What a pull's ``X-Change-Mark`` says of an entry, and a workstation
    sends back: its nonce, or for an entry written before entries had one,
    its fingerprint. A server restored from a backup holds a prefix of the
    log the workstation pulled from: an equal mark at the cursor means an
    equal history up to it; a missing entry or another mark (an entry
    written anew since the restore) means the server is behind the replica
    (409 ``server_behind``)."""
    if nonce is not None:
        return f"{nonce:016x}"
    return change_mark(table, key, json.loads(row_text) if row_text else None)


MARK_HEADER = "X-Change-Mark"
SERVER_BEHIND = "server_behind"
EPOCH_CHANGED = "epoch_changed"
# what a push says of the replica it comes from (headers, which a server of
# release 0.1 ignores; and X-Change-Mark): checked before anything is applied
EPOCH_HEADER = "X-Replica-Epoch"
CURSOR_HEADER = "X-Replica-Cursor"
CONFIRMED_HEADER = "X-Replica-Confirmed"
LEASE_HEADER = "X-Newest-Lease"  # the newest lease the workstation holds


class PullResponse(_Model):
    # the server's mark of the entry at next_cursor, from the X-Change-Mark
    # header (a header, so that workstations of an earlier release, which
    # refuse unknown fields, can pull from this server)
    mark: str | None = Field(default=None, exclude=True)
    changes: list[Change]
    next_cursor: int
    head: int
    has_more: bool
    epoch: str
    device_last_seq: int = Field(
        description="last client_seq of this device whose rows are <= next_cursor"
    )
    server_time: str


class EnrollRequest(_Request):
    code: str = Field(min_length=4, max_length=64)
    device_name: str = Field(min_length=1, max_length=80)


class EnrollResponse(_Model):
    device_id: str
    device_token: str
    epoch: str


class LoginRequest(_Request):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    signing_key: str | None = Field(
        default=None,
        pattern=PUBLIC_KEY_PATTERN,
        description="the clerk's public Ed25519 key on this workstation (hex), recorded for "
        "this clerk and device: the clerk's ops are signed with it (domain.signing)",
    )
    unsigned_through: int | None = Field(
        default=None,
        ge=0,
        le=2**62,
        description="the last op this workstation made before it signed ops (release 0.1); "
        "taken once, at the first login that registers a key on the device",
    )


class ClerkInfo(_Model):
    clerk_id: str
    username: str
    name: str
    roles: list[str]


class LoginResponse(_Model):
    session_token: str
    expires_at: str
    clerk: ClerkInfo
    policy: dict[str, int]
    server_time: str
    epoch: str
    key_certificate: str | None = Field(
        default=None,
        pattern=KEY_CERT_PATTERN,
        description="the server's certificate of the signing key the login registered: "
        "each op signed with the key carries it (Operation.key_cert)",
    )


class LeaseRequest(_Request):
    """Ask for a lease (``POST /leases``): ``count`` numbers, ids or units of
    ``resource`` of lease ``kind`` (``domain.leases.LEASE_KINDS``)."""

    kind: str = Field(min_length=1, max_length=40)
    resource: str = Field(min_length=1, max_length=64)
    count: int = Field(ge=1, le=1_000_000)


class LeaseGrant(_Request):
    """A granted lease: a range (first..last), a set of ids, or a quantity."""

    lease_id: str
    kind: str
    resource: str
    device_id: str
    granted_at: str
    first: int | None = None
    last: int | None = None
    ids: list[str] | None = None
    quantity: int | None = None
    expires_at: str | None = None

    def lease(self) -> Lease:
        return Lease(
            lease_id=self.lease_id,
            kind=self.kind,
            resource=self.resource,
            device_id=self.device_id,
            granted_at=self.granted_at,
            first=self.first,
            last=self.last,
            ids=frozenset(self.ids) if self.ids is not None else None,
            quantity=self.quantity,
            expires_at=self.expires_at,
        )

    @classmethod
    def of(cls, lease: Lease) -> LeaseGrant:
        return cls(
            lease_id=lease.lease_id,
            kind=lease.kind,
            resource=lease.resource,
            device_id=lease.device_id,
            granted_at=lease.granted_at,
            first=lease.first,
            last=lease.last,
            ids=sorted(lease.ids) if lease.ids is not None else None,
            quantity=lease.quantity,
            expires_at=lease.expires_at,
        )


class LeasesHeld(_Request):
    """``POST /leases/held``: the number blocks a workstation holds, told again
    after the server was restored from a backup."""

    leases: list[LeaseGrant] = Field(max_length=5_000)


class LeasesKept(_Model):
    kept: list[str]
    refused: list[str] = Field(description="blocks that overlap another's: not to be used")


class NumberBlockRequest(_Request):
    """Release 0.1's ``POST /leases/numbers``, still answered for its workstations."""

    series: Literal["card", "receipt"]
    count: int = Field(ge=1, le=10_000)


class NumberBlockResponse(_Model):
    lease_id: str
    series: str
    first: int
    last: int
    granted_at: str


class SnapshotHeader(_Model):
    type: Literal["header"] = "header"
    epoch: str
    cursor: int
    device_last_seq: int
    created_at: str
    tables: list[str]


IMAGE_HEADER_PREFIX = "X-Image-"


class SnapshotImageInfo(_Model):
    """What ``GET /sync/snapshot/image`` says about the replica image it sends,
    in response headers (``X-Image-Cursor``, ...), since the body is the file."""

    cursor: int = Field(description="the change-log position the image holds")
    epoch: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="of the gzip'd body")
    device_last_seq: int = Field(
        description="last client_seq of the requesting device whose rows are <= cursor"
    )
    rows: int = Field(description="replicated rows in the image")

    def headers(self) -> dict[str, str]:
        return {_image_header(name): str(value) for name, value in self.model_dump().items()}

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> SnapshotImageInfo:
        """Raises pydantic.ValidationError if a header is missing or malformed."""
        return cls.model_validate(
            {name: headers.get(_image_header(name)) for name in cls.model_fields}
        )


def _image_header(field: str) -> str:
    return IMAGE_HEADER_PREFIX + field.replace("_", "-").title()


class ErrorBody(_Model):
    code: str
    message_zh: str
    message_en: str
    detail: Any = None
