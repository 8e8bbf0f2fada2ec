"""The clerks' public signing keys (``domain.signing``).

A key is recorded at an online login, for the clerk whose password the login
just checked and the device it came from; a pushed op is applied as the
clerk it names only if it carries a valid signature by one of that clerk's
keys on that device (:func:`signature_refusal`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from domain.errors import Rejection
from domain.operation import Operation
from domain.signing import key_id_of, public_key_of, signature_valid

from .auth import AuthError
from .chain import append_audit
from .db import clerk_keys, devices, meta, utc_now, writer
from .raw import RawSql

_KEY_SQL = "SELECT clerk_id, device_id, public_key FROM clerk_keys WHERE key_id = ?"
_INSERT_KEY_SQL = (
    "INSERT INTO clerk_keys (key_id, clerk_id, device_id, public_key, registered_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_id) DO NOTHING"
)
_SECRET_META_KEY = "key_secret"  # meta: what the server certifies keys with (certificate)


def key_secret(conn: Connection) -> str:
    """The server's secret for key certificates, made the first time it is needed.
    It lives in the database, so a restored backup holds it too (unless the
    backup is older than every key registered: then their ops are refused)."""
    found = conn.execute(select(meta.c.value).where(meta.c.key == _SECRET_META_KEY)).scalar()
    if found is not None:
        return str(found)
    insert_ = sqlite_insert if conn.dialect.name == "sqlite" else postgresql_insert
    conn.execute(
        insert_(meta)
        .values(key=_SECRET_META_KEY, value=secrets.token_hex(32))
        .on_conflict_do_nothing(index_elements=[meta.c.key])
    )
    return str(
        conn.execute(select(meta.c.value).where(meta.c.key == _SECRET_META_KEY)).scalar_one()
    )


def certificate(secret: str, clerk_id: str, device_id: str, public_key_hex: str) -> str:
    """The server's word that ``public_key_hex`` is ``clerk_id``'s key on
    ``device_id`` (said at the login that proved the password): the key and
    an HMAC of the three under the server's secret."""
    text = f"clerk-key-certificate/1\n{clerk_id}\n{device_id}\n{public_key_hex}"
    mac = hmac.new(bytes.fromhex(secret), text.encode(), hashlib.sha256).hexdigest()
    return f"{public_key_hex}:{mac}"


def certified_key(secret: str | None, op: Operation, device_id: str) -> str | None:
    """The public key (hex) ``op.key_cert`` certifies as its clerk's on
    ``device_id`` and as the key ``op.key_id`` names; None if it does not."""
    if secret is None or op.key_cert is None or op.key_id is None:
        return None
    public_hex = op.key_cert.partition(":")[0]
    expected = certificate(secret, op.clerk_id, device_id, public_hex)
    if not hmac.compare_digest(expected, op.key_cert):
        return None
    return public_hex if key_id_of(bytes.fromhex(public_hex)) == op.key_id else None


@dataclass(frozen=True)
class ClerkKey:
    clerk_id: str
    device_id: str
    public_key: Ed25519PublicKey | None  # None: not a key (the check fails)


def register_key(
    engine: Engine,
    clerk_id: str,
    device_id: str,
    public_key_hex: str,
    unsigned_through: int | None,
) -> str:
    """Record ``clerk_id``'s key on ``device_id`` (once; again is a no-op) and,
    the first time the device registers one, the last op it made unsigned.
    Returns the server's certificate of the key (:func:`certificate`);
    AuthError 409 if the key is another clerk's or another device's; audited
    in the same transaction."""
    public_key = bytes.fromhex(public_key_hex)
    key_id = key_id_of(public_key)
    with writer(engine) as conn, conn.begin():
        known = conn.execute(
            select(clerk_keys.c.clerk_id, clerk_keys.c.device_id).where(
                clerk_keys.c.key_id == key_id
            )
        ).first()
        if known is not None and tuple(known) != (clerk_id, device_id):
            append_audit(
                conn,
                clerk_id=clerk_id,
                device_id=device_id,
                action="register_key",
                target=key_id,
                outcome="taken",
            )
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
                append_audit(
                    conn,
                    clerk_id=clerk_id,
                    device_id=device_id,
                    action="register_key",
                    target=key_id,
                    outcome="ok",
                )
            conn.execute(
                update(devices)
                .where(devices.c.device_id == device_id, devices.c.unsigned_through.is_(None))
                .values(unsigned_through=unsigned_through or 0)
            )
            issued = certificate(key_secret(conn), clerk_id, device_id, public_key_hex)
    if refusal is not None:
        raise refusal
    return issued


class KeyRing:
    """The keys a push met, read once each."""

    def __init__(self, sql: RawSql) -> None:
        self._sql = sql
        self._keys: dict[str, ClerkKey | None] = {}

    def rerecord(self, op: Operation, device_id: str, secret: str | None) -> ClerkKey | None:
        """The key of ``op`` recorded again from its certificate, if it is
        the server's (a restore lost the login that registered it)."""
        public_hex = certified_key(secret, op, device_id)
        if public_hex is None or op.key_id is None:
            return None
        self._sql.execute(
            _INSERT_KEY_SQL, (op.key_id, op.clerk_id, device_id, public_hex, utc_now())
        )
        append_audit(
            self._sql.conn,
            clerk_id=op.clerk_id,
            device_id=device_id,
            action="register_key",
            target=op.key_id,
            outcome="recorded_again",
            detail="from the certificate its op carried (the registration was lost)",
        )
        self._keys.pop(op.key_id, None)
        return self.get(op.key_id)

    def get(self, key_id: str) -> ClerkKey | None:
        """The key, read (and loaded) once a push. Not kept across pushes: a
        server restored from a backup may have lost it, and an op applied
        with a key the database does not hold would not verify later."""
        if key_id not in self._keys:
            row = self._sql.one(_KEY_SQL, (key_id,))
            self._keys[key_id] = (
                ClerkKey(row[0], row[1], public_key_of(bytes.fromhex(row[2])))
                if row is not None
                else None
            )
        return self._keys[key_id]


def signature_refusal(
    keys: KeyRing,
    op: Operation,
    device_id: str,
    unsigned_through: int | None,
    secret: str | None = None,
) -> Rejection | None:
    """Why ``op``, pushed by ``device_id``, may not run as the clerk it names; None
    if it may. Unsigned ops are taken only as made before the device signed
    (``unsigned_through``; None: a device of release 0.1, which never signs)."""
    if op.signature is None or op.key_id is None:
        if unsigned_through is None or op.client_seq <= unsigned_through:
            return None
        return Rejection(code="op_unsigned", params={"clerk_id": op.clerk_id})
    key = keys.get(op.key_id)
    if key is None:  # unknown here: a restored server may have lost its registration
        key = keys.rerecord(op, device_id, secret)
    if (
        key is None
        or key.clerk_id != op.clerk_id
        or key.device_id != device_id
        or not signature_valid(key.public_key, op, device_id)
    ):
        return Rejection(code="signature_invalid", params={"clerk_id": op.clerk_id})
    return None
