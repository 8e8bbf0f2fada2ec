"""Clerks, devices and sessions.

A workstation proves itself with a device token received once, at enrolment,
for a one-time code an administrator created. A clerk logs in on an enrolled
workstation with a password (argon2) and gets a session bound to that device.
Every request but /health, enrolment and login carries both.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.engine import Connection
from ulid import ULID

from domain.roles import ROLES

from .db import (
    audit,
    clerks,
    devices,
    enrollment_codes,
    load_policy,
    sessions,
    utc_now,
    writer,
)
from .raw import RawSql

SESSION_HOURS = 12
ENROLL_CODE_HOURS = 72
_hasher = PasswordHasher()


class AuthError(Exception):
    """A request that may not proceed; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, zh: str, en: str) -> None:
        super().__init__(en)
        self.status, self.code, self.zh, self.en = status, code, zh, en


@dataclass(frozen=True)
class Device:
    device_id: str
    name: str


@dataclass(frozen=True)
class Session:
    clerk_id: str
    username: str
    name: str
    roles: tuple[str, ...]
    device_id: str
    policy: dict[str, int] = field(
        default_factory=dict
    )  # at login: the policy the clerk works under
    enrolled_at: str | None = None  # the device's (read with the push's session)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _password_ok(password_hash: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


def _locked(until: str) -> AuthError:
    return AuthError(
        423,
        "login_locked",
        f"登录失败次数过多，账号锁定至 {until[11:16]}（UTC）。",
        f"Too many failed logins; locked until {until[11:16]} UTC.",
    )


def _device_token_missing() -> AuthError:
    return AuthError(
        401, "device_token_missing", "缺少工作站凭证。", "The workstation token is missing."
    )


def _device_unknown() -> AuthError:
    return AuthError(
        401,
        "device_unknown",
        "工作站未注册或已停用。",
        "This workstation is not enrolled or has been disabled.",
    )


def _session_missing() -> AuthError:
    return AuthError(401, "session_missing", "请先登录。", "Log in first.")


def _session_invalid() -> AuthError:
    return AuthError(
        401,
        "session_invalid",
        "登录已失效，请重新登录。",
        "Your session has ended; log in again.",
    )


# The device and the clerk's session of a request, in one statement. Nothing
# of it is cached: a disabled device, a clerk made inactive or a session that
# ended (logout, expiry) is refused by the next request, whichever server
# process (``workstation server --workers``) answers it.
_SESSION_SQL = (
    "SELECT d.device_id, d.active, s.clerk_id, s.device_id, s.revoked, s.expires_at, "
    "c.username, c.name, c.roles, c.active, d.enrolled_at "
    "FROM devices d "
    "LEFT JOIN sessions s ON s.token_hash = ? "
    "LEFT JOIN clerks c ON c.clerk_id = s.clerk_id "
    "WHERE d.token_hash = ?"
)
# PostgreSQL: the device's row stays locked until the transaction ends, so
# the pushes of one device are applied one after the other (SQLite's writers
# are one at a time anyway)
_SESSION_LOCKING_DEVICE_SQL = _SESSION_SQL + " FOR UPDATE OF d"


def session_of(
    sql: RawSql, device_token: str | None, bearer: str | None, *, lock_device: bool = False
) -> Session:
    """The session of ``bearer`` on the device of ``device_token``, or
    AuthError (401) saying what is wrong, in this order: no device token, a
    device unknown or disabled, no session token, a session unknown, ended,
    expired, of an inactive clerk or of another device. ``lock_device``
    (inside a transaction): the device's row is locked until it ends."""
    if not device_token:
        raise _device_token_missing()
    query = _SESSION_LOCKING_DEVICE_SQL if lock_device and not sql.sqlite else _SESSION_SQL
    row = sql.one(query, (token_hash(bearer) if bearer else "", token_hash(device_token)))
    if row is None or not row[1]:
        raise _device_unknown()
    if not bearer:
        raise _session_missing()
    (
        device_id,
        _,
        clerk_id,
        session_device,
        revoked,
        expires_at,
        username,
        name,
        roles,
        active,
        enrolled_at,
    ) = row
    if (
        clerk_id is None
        or revoked
        or not active
        or session_device != device_id
        or expires_at < utc_now()
    ):
        raise _session_invalid()
    return Session(
        clerk_id, username, name, tuple(json.loads(roles)), device_id, enrolled_at=enrolled_at
    )


class AuthService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- administration ------------------------------------------------------

    def create_clerk(self, username: str, name: str, roles: list[str], password: str) -> str:
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise ValueError(f"unknown roles: {', '.join(unknown)} (known: {', '.join(ROLES)})")
        if not roles:
            raise ValueError("a clerk needs at least one role")
        if len(password) < 6:
            raise ValueError("a password needs at least 6 characters")
        clerk_id = str(ULID())
        with writer(self.engine) as conn, conn.begin():
            if conn.execute(select(clerks.c.clerk_id).where(clerks.c.username == username)).first():
                raise ValueError(f"username {username!r} is taken")
            conn.execute(
                insert(clerks).values(
                    clerk_id=clerk_id,
                    username=username,
                    name=name,
                    roles=json.dumps(sorted(set(roles))),
                    password_hash=_hasher.hash(password),
                    active=1,
                    failed_attempts=0,
                    created_at=utc_now(),
                )
            )
            self._audit(conn, None, None, "create_clerk", username, "ok")
        return clerk_id

    def create_enrollment_code(self, device_name: str) -> str:
        code = "-".join(secrets.token_hex(2).upper() for _ in range(3))
        with writer(self.engine) as conn, conn.begin():
            conn.execute(
                insert(enrollment_codes).values(
                    code_hash=token_hash(code),
                    device_name=device_name,
                    created_at=utc_now(),
                    expires_at=(_now() + timedelta(hours=ENROLL_CODE_HOURS)).isoformat(
                        timespec="seconds"
                    ),
                )
            )
            self._audit(conn, None, None, "create_enrollment_code", device_name, "ok")
        return code

    # -- enrolment -----------------------------------------------------------

    def enroll(self, code: str, device_name: str) -> tuple[str, str]:
        """Exchange a one-time code for (device_id, device_token)."""
        code_key = token_hash(code.strip().upper())
        with writer(self.engine) as conn, conn.begin():
            row = conn.execute(
                select(enrollment_codes).where(enrollment_codes.c.code_hash == code_key)
            ).first()
            if row is None or row.used_at is not None or row.expires_at < utc_now():
                self._audit(conn, None, None, "enroll", device_name, "refused")
                device_id = token = ""
            else:
                device_id = str(ULID())
                token = secrets.token_urlsafe(32)
                conn.execute(
                    insert(devices).values(
                        device_id=device_id,
                        name=device_name or row.device_name,
                        token_hash=token_hash(token),
                        enrolled_at=utc_now(),
                        active=1,
                    )
                )
                conn.execute(
                    update(enrollment_codes)
                    .where(enrollment_codes.c.code_hash == code_key)
                    .values(used_at=utc_now(), device_id=device_id)
                )
                self._audit(conn, None, device_id, "enroll", device_name, "ok")
        if not token:
            raise AuthError(
                403,
                "enroll_code_invalid",
                "注册码无效、已使用或已过期。",
                "The enrolment code is invalid, used or expired.",
            )
        return device_id, token

    def device(self, token: str | None) -> Device:
        if not token:
            raise _device_token_missing()
        with self.engine.connect() as conn:
            row = conn.execute(
                select(devices).where(devices.c.token_hash == token_hash(token))
            ).first()
        if row is None or not row.active:
            raise _device_unknown()
        return Device(device_id=row.device_id, name=row.name)

    def device_and_session(self, device_token: str | None, bearer: str | None) -> Session:
        """The clerk session of a request (device token and session token),
        checked in one statement; see :func:`session_of`."""
        if not device_token:
            raise _device_token_missing()
        with self.engine.connect() as conn:
            return session_of(RawSql(conn), device_token, bearer)

    # -- clerks --------------------------------------------------------------

    def login(self, device: Device, username: str, password: str) -> tuple[str, str, Session]:
        """Verify a clerk's password; return (session token, expiry, session).

        Failures are counted (and audited) in a committed transaction before the
        error is raised; after ``policy.login_attempts`` failures the clerk is
        locked out for ``policy.lockout_minutes``."""
        now = _now()
        refusal: AuthError | None = None
        with writer(self.engine) as conn, conn.begin():
            policy = load_policy(conn)
            row = conn.execute(select(clerks).where(clerks.c.username == username)).first()
            if row is None or not row.active:
                _hasher.hash(password)  # same cost as a real check: do not reveal who exists
                self._audit(conn, None, device.device_id, "login", username, "unknown_clerk")
                refusal = AuthError(
                    401, "login_failed", "用户名或密码错误。", "Wrong username or password."
                )
            elif row.locked_until and row.locked_until > now.isoformat(timespec="seconds"):
                self._audit(conn, row.clerk_id, device.device_id, "login", username, "locked")
                refusal = _locked(row.locked_until)
            elif not _password_ok(row.password_hash, password):
                attempts = row.failed_attempts + 1
                values: dict[str, object] = {"failed_attempts": attempts}
                refusal = AuthError(
                    401, "login_failed", "用户名或密码错误。", "Wrong username or password."
                )
                if attempts >= policy.login_attempts:
                    until = (now + timedelta(minutes=policy.lockout_minutes)).isoformat(
                        timespec="seconds"
                    )
                    values = {"failed_attempts": 0, "locked_until": until}
                    refusal = _locked(until)
                conn.execute(
                    update(clerks).where(clerks.c.clerk_id == row.clerk_id).values(**values)
                )
                self._audit(
                    conn, row.clerk_id, device.device_id, "login", username, "wrong_password"
                )
            else:
                token = secrets.token_urlsafe(32)
                expires = (now + timedelta(hours=SESSION_HOURS)).isoformat(timespec="seconds")
                conn.execute(
                    update(clerks)
                    .where(clerks.c.clerk_id == row.clerk_id)
                    .values(failed_attempts=0, locked_until=None)
                )
                conn.execute(
                    insert(sessions).values(
                        token_hash=token_hash(token),
                        clerk_id=row.clerk_id,
                        device_id=device.device_id,
                        created_at=now.isoformat(timespec="seconds"),
                        expires_at=expires,
                        revoked=0,
                    )
                )
                self._audit(conn, row.clerk_id, device.device_id, "login", username, "ok")
        if refusal is not None:
            raise refusal
        assert row is not None
        session = Session(
            row.clerk_id,
            row.username,
            row.name,
            tuple(json.loads(row.roles)),
            device.device_id,
            policy.as_dict(),
        )
        return token, expires, session

    def session(self, device: Device, bearer: str | None) -> Session:
        if not bearer:
            raise _session_missing()
        with self.engine.connect() as conn:
            row = conn.execute(
                select(sessions, clerks.c.username, clerks.c.name, clerks.c.roles, clerks.c.active)
                .join(clerks, clerks.c.clerk_id == sessions.c.clerk_id)
                .where(sessions.c.token_hash == token_hash(bearer))
            ).first()
        if (
            row is None
            or row.revoked
            or not row.active
            or row.device_id != device.device_id
            or row.expires_at < utc_now()
        ):
            raise _session_invalid()
        return Session(
            row.clerk_id, row.username, row.name, tuple(json.loads(row.roles)), row.device_id
        )

    def logout(self, bearer: str) -> None:
        with writer(self.engine) as conn, conn.begin():
            conn.execute(
                update(sessions)
                .where(sessions.c.token_hash == token_hash(bearer))
                .values(revoked=1)
            )

    def record(
        self,
        clerk_id: str | None,
        device_id: str | None,
        action: str,
        target: str,
        outcome: str,
        detail: str | None = None,
    ) -> None:
        with writer(self.engine) as conn, conn.begin():
            self._audit(conn, clerk_id, device_id, action, target, outcome, detail)

    @staticmethod
    def _audit(
        conn: Connection,
        clerk_id: str | None,
        device_id: str | None,
        action: str,
        target: str,
        outcome: str,
        detail: str | None = None,
    ) -> None:
        conn.execute(
            insert(audit).values(
                at=utc_now(),
                clerk_id=clerk_id,
                device_id=device_id,
                action=action,
                target=target,
                outcome=outcome,
                detail=detail,
            )
        )
