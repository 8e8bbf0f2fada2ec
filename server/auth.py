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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, NoReturn

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.engine import Connection
from ulid import ULID

from domain.roles import DATA_ROLES, ROLES

from .chain import append_audit, session_ref
from .db import (
    clerks,
    devices,
    enrollment_codes,
    load_policy,
    login_failures,
    sessions,
    utc_now,
    writer,
)
from .passwords import PasswordRefused, check_password
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
    ref: str | None = None  # how the audit names the session (server.chain.session_ref)
    enrolled_at: str | None = None  # the device's (read with the push's session)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


# sessions.revoked: 0 in force, 1 the clerk logged out, 2 ended for them (an
# administrator's revocation, a lockout): the workstation then sends the clerk
# back to the login screen instead of logging in again by itself
SESSION_LOGGED_OUT = 1
SESSION_ENDED = 2

# A failed login counted before the password is checked, in one statement
# (atomic on PostgreSQL too: ON CONFLICT takes the row's lock): the count and
# the lockout's end, a lockout that ran out cleared. Parameters: username,
# device, now, now.
_COUNT_ATTEMPT_SQL = (
    "INSERT INTO login_failures (username, device_id, failed_attempts, locked_until) "
    "VALUES (?, ?, 1, NULL) ON CONFLICT (username, device_id) DO UPDATE SET "
    "failed_attempts = CASE WHEN login_failures.locked_until <= ? THEN 1 "
    "ELSE login_failures.failed_attempts + 1 END, "
    "locked_until = CASE WHEN login_failures.locked_until <= ? THEN NULL "
    "ELSE login_failures.locked_until END "
    "RETURNING failed_attempts, locked_until"
)
# the lockout's end, unless a parallel attempt set one: until, username, device
_LOCK_SQL = (
    "UPDATE login_failures SET locked_until = COALESCE(locked_until, ?) "
    "WHERE username = ? AND device_id = ? RETURNING locked_until"
)


def _password_ok(password_hash: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


def _dummy_hash() -> str:
    """A hash no password matches, checked for usernames nobody holds: the
    answer then takes as long as a wrong password's."""
    return _hash_of_nothing(_hasher)


@cache
def _hash_of_nothing(hasher: PasswordHasher) -> str:
    return hasher.hash(secrets.token_urlsafe(32))


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


def _clerk_disabled() -> AuthError:
    return AuthError(
        403,
        "clerk_disabled",
        "您的账号已停用，请联系信息科。",
        "Your account has been disabled; contact the IT department.",
    )


def _session_ended() -> AuthError:
    return AuthError(
        401,
        "session_ended",
        "您的登录已被结束（管理员操作或登录失败次数过多），请重新登录。",
        "Your session was ended (by an administrator, or after too many failed logins); "
        "log in again.",
    )


def _clerk_disabled_session() -> AuthError:
    """401, not 403: the session is over (the workstation goes back to login)."""
    error = _clerk_disabled()
    error.status = 401
    return error


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
    if clerk_id is None or session_device != device_id:
        raise _session_invalid()
    if not active:
        raise _clerk_disabled_session()
    if revoked == SESSION_ENDED:
        raise _session_ended()
    if revoked or expires_at < utc_now():
        raise _session_invalid()
    return Session(
        clerk_id,
        username,
        name,
        tuple(json.loads(roles)),
        device_id,
        ref=session_ref(bearer),
        enrolled_at=enrolled_at,
    )


def require_data_role(session: Session) -> Session:
    """The session, if its clerk works with patients or money: the IT
    administrator's role (only) gets no patient data, pushes nothing and
    leases no numbers (403)."""
    if not DATA_ROLES.intersection(session.roles):
        raise AuthError(
            403,
            "role_no_data",
            "系统管理员不处理收费和患者数据：请用收费、登记或主管账号登录。",
            "The administrator role handles no money and no patient data: log in as a "
            "cashier, admission clerk, registrar or supervisor.",
        )
    return session


class AdminRefused(ValueError):
    """An administrator's command that cannot be carried out; says why in
    both languages. The refusal is audited, and nothing else written."""

    def __init__(self, zh: str, en: str) -> None:
        super().__init__(f"{en} / {zh}")
        self.zh, self.en = zh, en


def _end_sessions(conn: Connection, which: Any) -> int:
    """End the sessions in force that ``which`` selects; their next request
    gets 401 session_ended. Returns how many."""
    done = conn.execute(
        update(sessions).where(which, sessions.c.revoked == 0).values(revoked=SESSION_ENDED)
    )
    return int(done.rowcount)


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
        check_password(password, username)
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

    # -- revocation: each takes effect at the next request ------------------------

    def disable_device(self, device: str) -> tuple[str, int]:
        """Disable the workstation ``device`` (its id, or its name if no other
        holds it): its token is refused from now on and the sessions on it
        end. Returns (device id, sessions ended). Enrolling it again takes a
        new code."""
        with self._administering("disable_device", device) as conn:
            found = conn.execute(
                select(devices.c.device_id).where(
                    (devices.c.device_id == device) | (devices.c.name == device)
                )
            ).all()
            exact = [r.device_id for r in found if r.device_id == device]
            ids = exact or [r.device_id for r in found]
            if len(ids) != 1:
                if ids:
                    raise AdminRefused(
                        f"有 {len(ids)} 台工作站名为“{device}”，请用编号指定：{', '.join(ids)}",
                        f"{len(ids)} workstations are named {device!r}; give the id of "
                        f"one: {', '.join(ids)}",
                    )
                raise AdminRefused(
                    f"没有编号或名称为“{device}”的工作站（workstation admin list-devices 可列出）。",
                    f"No workstation has the id or name {device!r} "
                    "(`workstation admin list-devices` lists them).",
                )
            [device_id] = ids
            conn.execute(update(devices).where(devices.c.device_id == device_id).values(active=0))
            ended = _end_sessions(conn, sessions.c.device_id == device_id)
            self._audit(
                conn, None, device_id, "disable_device", device, "ok", f"{ended} sessions ended"
            )
        return device_id, ended

    def disable_clerk(self, username: str) -> int:
        """Disable a clerk: no login from now on, their sessions end (and so
        their work at every workstation). Returns the sessions ended."""
        with self._administering("disable_clerk", username) as conn:
            clerk_id = self._clerk_id(conn, username)
            conn.execute(update(clerks).where(clerks.c.clerk_id == clerk_id).values(active=0))
            ended = _end_sessions(conn, sessions.c.clerk_id == clerk_id)
            self._audit(
                conn, clerk_id, None, "disable_clerk", username, "ok", f"{ended} sessions ended"
            )
        return ended

    def enable_clerk(self, username: str) -> None:
        """Let a disabled clerk log in again (with the password they had)."""
        with self._administering("enable_clerk", username) as conn:
            clerk_id = self._clerk_id(conn, username)
            conn.execute(update(clerks).where(clerks.c.clerk_id == clerk_id).values(active=1))
            self._audit(conn, clerk_id, None, "enable_clerk", username, "ok")

    def end_sessions(self, username: str) -> int:
        """End every session of a clerk (a workstation left logged in, a
        password seen): they log in again. Returns the sessions ended."""
        with self._administering("end_sessions", username) as conn:
            clerk_id = self._clerk_id(conn, username)
            ended = _end_sessions(conn, sessions.c.clerk_id == clerk_id)
            self._audit(
                conn, clerk_id, None, "end_sessions", username, "ok", f"{ended} sessions ended"
            )
        return ended

    def reset_password(self, username: str, password: str) -> int:
        """Give a clerk a new password (the rules of ``server.passwords``):
        their sessions end and their lockouts are lifted. Returns the
        sessions ended."""
        try:
            check_password(password, username)
        except PasswordRefused as refused:
            self.record(None, None, "reset_password", username, "refused", refused.en)
            raise
        password_hash = _hasher.hash(password)
        with self._administering("reset_password", username) as conn:
            clerk_id = self._clerk_id(conn, username)
            conn.execute(
                update(clerks)
                .where(clerks.c.clerk_id == clerk_id)
                .values(password_hash=password_hash)
            )
            conn.execute(delete(login_failures).where(login_failures.c.username == username))
            ended = _end_sessions(conn, sessions.c.clerk_id == clerk_id)
            self._audit(
                conn, clerk_id, None, "reset_password", username, "ok", f"{ended} sessions ended"
            )
        return ended

    @contextmanager
    def _administering(self, action: str, target: str) -> Iterator[Connection]:
        """The transaction of an administrator's command; a refusal
        (AdminRefused) is audited after it rolled back."""
        try:
            with writer(self.engine) as conn, conn.begin():
                yield conn
        except AdminRefused as refused:
            self.record(None, None, action, target, "refused", refused.en)
            raise

    @staticmethod
    def _clerk_id(conn: Connection, username: str) -> str:
        clerk_id = conn.execute(
            select(clerks.c.clerk_id).where(clerks.c.username == username)
        ).scalar()
        if clerk_id is None:
            raise AdminRefused(
                f"没有用户名为“{username}”的操作员（workstation admin list-clerks 可列出）。",
                f"No clerk has the username {username!r} "
                "(`workstation admin list-clerks` lists them).",
            )
        return str(clerk_id)

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
                        unsigned_through=0,  # signs every op (domain.signing)
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

        Failures are counted per username and workstation (``login_failures``):
        after ``policy.login_attempts`` of them the clerk is locked out at this
        workstation for ``policy.lockout_minutes``, and their sessions on it
        end. The attempt is counted *before* the password is checked, in one
        statement (:data:`_COUNT_ATTEMPT_SQL`), and a success clears it: so
        parallel guesses are each counted, and no more than the policy's
        attempts reach the (slow) check before the lockout. The check runs
        outside any transaction. A username nobody holds is answered as a
        wrong password is, after a check of the same cost against a dummy
        hash, and is locked out the same way. A disabled clerk is told so
        (403 clerk_disabled) only with their right password."""
        now = _now()
        at = now.isoformat(timespec="seconds")
        with writer(self.engine) as conn, conn.begin():
            policy = load_policy(conn)
            row = conn.execute(select(clerks).where(clerks.c.username == username)).first()
            [(attempts, locked_until)] = RawSql(conn).all(
                _COUNT_ATTEMPT_SQL, (username, device.device_id, at, at)
            )
            clerk_id = row.clerk_id if row is not None else None
            if locked_until is not None:
                self._audit(conn, clerk_id, device.device_id, "login", username, "locked")
        if locked_until is not None:
            raise _locked(locked_until)
        if attempts > policy.login_attempts:
            # guesses in flight when the limit was reached: no check for these
            self._lock_out(device, username, clerk_id, now, policy.lockout_minutes, "locked")
        known = row is not None and row.active
        ok = _password_ok(row.password_hash if row is not None else _dummy_hash(), password)
        if not (ok and known):
            if ok and row is not None:  # the right password of a disabled clerk
                self.record(row.clerk_id, device.device_id, "login", username, "clerk_disabled")
                raise _clerk_disabled()
            outcome = "wrong_password" if row is not None else "unknown_clerk"
            if attempts >= policy.login_attempts:
                self._lock_out(device, username, clerk_id, now, policy.lockout_minutes, outcome)
            self.record(clerk_id, device.device_id, "login", username, outcome)
            raise AuthError(
                401, "login_failed", "用户名或密码错误。", "Wrong username or password."
            )
        assert row is not None
        token = secrets.token_urlsafe(32)
        expires = (now + timedelta(hours=SESSION_HOURS)).isoformat(timespec="seconds")
        with writer(self.engine) as conn, conn.begin():
            conn.execute(
                delete(login_failures).where(
                    login_failures.c.username == username,
                    login_failures.c.device_id == device.device_id,
                )
            )
            conn.execute(
                insert(sessions).values(
                    token_hash=token_hash(token),
                    clerk_id=row.clerk_id,
                    device_id=device.device_id,
                    created_at=at,
                    expires_at=expires,
                    revoked=0,
                )
            )
            self._audit(
                conn,
                row.clerk_id,
                device.device_id,
                "login",
                username,
                "ok",
                session=session_ref(token),
            )
        session = Session(
            row.clerk_id,
            row.username,
            row.name,
            tuple(json.loads(row.roles)),
            device.device_id,
            policy.as_dict(),
            ref=session_ref(token),
        )
        return token, expires, session

    def _lock_out(
        self,
        device: Device,
        username: str,
        clerk_id: str | None,
        now: datetime,
        minutes: int,
        outcome: str,
    ) -> NoReturn:
        """Lock ``username`` out at ``device`` (unless a parallel attempt
        already did), end the clerk's sessions there, and raise the 423."""
        until = (now + timedelta(minutes=minutes)).isoformat(timespec="seconds")
        with writer(self.engine) as conn, conn.begin():
            [(locked,)] = RawSql(conn).all(_LOCK_SQL, (until, username, device.device_id))
            if clerk_id is not None:
                _end_sessions(
                    conn,
                    (sessions.c.clerk_id == clerk_id) & (sessions.c.device_id == device.device_id),
                )
            self._audit(conn, clerk_id, device.device_id, "login", username, outcome, "locked out")
        raise _locked(locked)

    def logout(self, session: Session, bearer: str) -> None:
        """End the session of ``bearer``, audited in the same transaction."""
        with writer(self.engine) as conn, conn.begin():
            ended = conn.execute(
                update(sessions)
                .where(sessions.c.token_hash == token_hash(bearer))
                .values(revoked=SESSION_LOGGED_OUT)
            ).rowcount
            self._audit(
                conn,
                session.clerk_id,
                session.device_id,
                "logout",
                session.username,
                "ok" if ended else "no_session",
                session=session_ref(bearer),
            )

    def record(
        self,
        clerk_id: str | None,
        device_id: str | None,
        action: str,
        target: str,
        outcome: str,
        detail: str | None = None,
        *,
        session: str | None = None,
    ) -> None:
        with writer(self.engine) as conn, conn.begin():
            self._audit(conn, clerk_id, device_id, action, target, outcome, detail, session=session)

    def record_for(
        self, session: Session, action: str, target: str, outcome: str, detail: str | None = None
    ) -> None:
        """An audit record of a request made in ``session`` (clerk, device, session)."""
        self.record(
            session.clerk_id,
            session.device_id,
            action,
            target,
            outcome,
            detail,
            session=session.ref,
        )

    @staticmethod
    def _audit(
        conn: Connection,
        clerk_id: str | None,
        device_id: str | None,
        action: str,
        target: str,
        outcome: str,
        detail: str | None = None,
        *,
        session: str | None = None,
        operator: str | None = None,
    ) -> None:
        """One record at the head of the audit chain, in ``conn``'s (write)
        transaction. ``operator``: by default, who runs the admin command this
        is part of (``server.chain.acting``); None in the server."""
        append_audit(
            conn,
            clerk_id=clerk_id,
            device_id=device_id,
            action=action,
            target=target,
            outcome=outcome,
            detail=detail,
            session=session,
            operator=operator,
        )
