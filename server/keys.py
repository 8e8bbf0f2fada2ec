"""The clerks' public signing keys (``domain.signing``).

A key is recorded at an online login, for the clerk whose password the login
just checked and the device it came from; a pushed op is applied as the
clerk it names only if it carries a valid signature by one of that clerk's
keys on that device (:func:`signature_refusal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select, update

from domain.errors import Rejection
from domain.operation import Operation
from domain.signing import key_id_of, signature_valid

from .auth import AuthError
from .db import clerk_keys, devices, utc_now, writer
from .raw import RawSql

_KEY_SQL = "SELECT clerk_id, device_id, public_key FROM clerk_keys WHERE key_id = ?"


@dataclass(frozen=True)
class ClerkKey:
    clerk_id: str
    device_id: str
    public_key: bytes


def register_key(
    engine: Engine,
    clerk_id: str,
    device_id: str,
    public_key_hex: str,
    unsigned_through: int | None,
    audit: Any,
) -> str:
    """Record ``clerk_id``'s key on ``device_id`` (once; again is a no-op) and,
    the first time the device registers one, the last op it made unsigned.
    Returns the key id; AuthError 409 if the key is another clerk's or
    another device's. ``audit(conn, clerk_id, device_id, action, target,
    outcome)`` writes the audit record."""
    public_key = bytes.fromhex(public_key_hex)
    key_id = key_id_of(public_key)
    with writer(engine) as conn, conn.begin():
        known = conn.execute(
            select(clerk_keys.c.clerk_id, clerk_keys.c.device_id).where(
                clerk_keys.c.key_id == key_id
            )
        ).first()
        if known is not None and tuple(known) != (clerk_id, device_id):
            audit(conn, clerk_id, device_id, "register_key", key_id, "taken")
            refusal: AuthError | None = AuthError(
                409,
                "key_taken",
                "该签名密钥已登记给其他操作员或工作站，登录未完成。请告知信息科。",
                "This signing key is registered to another clerk or workstation; the login "
                "did not complete. Tell IT.",
            )
        else:
            refusal = None
            if known is None:
                conn.execute(
                    insert(clerk_keys).values(
                        key_id=key_id,
                        clerk_id=clerk_id,
                        device_id=device_id,
                        public_key=public_key_hex,
                        registered_at=utc_now(),
                    )
                )
                audit(conn, clerk_id, device_id, "register_key", key_id, "ok")
            conn.execute(
                update(devices)
                .where(devices.c.device_id == device_id, devices.c.unsigned_through.is_(None))
                .values(unsigned_through=unsigned_through or 0)
            )
    if refusal is not None:
        raise refusal
    return key_id


class KeyRing:
    """The keys a push met, read once each."""

    def __init__(self, sql: RawSql) -> None:
        self._sql = sql
        self._keys: dict[str, ClerkKey | None] = {}

    def get(self, key_id: str) -> ClerkKey | None:
        if key_id not in self._keys:
            row = self._sql.one(_KEY_SQL, (key_id,))
            self._keys[key_id] = (
                ClerkKey(row[0], row[1], bytes.fromhex(row[2])) if row is not None else None
            )
        return self._keys[key_id]


def signature_refusal(
    keys: KeyRing, op: Operation, device_id: str, unsigned_through: int | None
) -> Rejection | None:
    """Why ``op``, pushed by ``device_id``, may not run as the clerk it names; None
    if it may. Unsigned ops are taken only as made before the device signed
    (``unsigned_through``; None: a device of release 0.1, which never signs)."""
    if op.signature is None or op.key_id is None:
        if unsigned_through is None or op.client_seq <= unsigned_through:
            return None
        return Rejection(code="op_unsigned", params={"clerk_id": op.clerk_id})
    key = keys.get(op.key_id)
    if (
        key is None
        or key.clerk_id != op.clerk_id
        or key.device_id != device_id
        or not signature_valid(key.public_key, op, device_id)
    ):
        return Rejection(code="signature_invalid", params={"clerk_id": op.clerk_id})
    return None
