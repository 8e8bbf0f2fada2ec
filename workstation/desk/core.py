"""The desk's core: what every window shares. The clerk's session (online and
offline login), the workstation's status, Sync issues, the patient look-ups
every window makes, and the one way a window commits a command.

A window's desk (``CashierDesk`` now; the admission and exam desks later)
turns what its clerk typed into typed drafts, parsed once, and commits each
through :meth:`Desk.commit`: the command is decided against the replica and
committed with its outbox entry in one transaction, then, online, the
window waits a moment for the server's answer (a future the sync engine
resolves) so a refusal reaches the clerk at the window and the receipt is
final. Nothing is shown as done before the local commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from domain.commands import Command, parse_command
from domain.errors import DomainError, Rejection
from domain.identity import DocumentType, parse_national_id
from domain.numbers import parse_card_no
from domain.shifts import MONEY_ROLES, OpenShift
from domain.signing import SigningKey
from domain.state import Actor, Policy
from local_db import pinyin
from local_db.keys import SealedKey, seal, unseal
from local_db.search import PatientHit
from local_db.store import (
    CommandRejected,
    Executed,
    LocalStore,
    PatientView,
    RowsChanged,
    new_op_id,
)
from sync.client import Offline, Refused, ServerBusy, SyncClient, SyncError, Unauthorised
from sync.engine import Progress, SyncEngine, SyncStatus
from sync.protocol import LoginResponse
from sync.transports import SwitchableTransport

log = logging.getLogger(__name__)

ACK_WAIT_S = 2.0  # online, wait this long for the server before printing a receipt

__all__ = [
    "ACK_WAIT_S",
    "ClerkSession",
    "CommandRejected",
    "Committed",
    "Desk",
    "DeskSettings",
    "DeskStatus",
    "LoginFailed",
    "NotAllowed",
    "PatientHit",
    "PatientView",
    "enroll_workstation",
]


class LoginFailed(Exception):
    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(en)
        self.code, self.zh, self.en = code, zh, en

    def message(self, lang: str) -> str:
        return self.en if lang.startswith("en") else self.zh


class NotAllowed(Exception):
    """The clerk tried something outside their roles, or is not logged in."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.message("en"))
        self.rejection = rejection


@dataclass(frozen=True)
class ClerkSession:
    clerk_id: str
    username: str
    name: str
    roles: frozenset[str]
    mode: str  # "online" | "offline"

    def has_any(self, roles: frozenset[str]) -> bool:
        return bool(self.roles & roles)


@dataclass(frozen=True)
class Committed:
    """A command committed locally, and what the server said of it meanwhile."""

    executed: Executed
    confirmed: bool  # the server has applied it already
    rejection: Rejection | None  # the server refused it at once (online)

    @property
    def result(self) -> dict[str, Any]:
        return self.executed.decision.result

    @property
    def op_id(self) -> str:
        return self.executed.op_id


@dataclass(frozen=True)
class DeskStatus:
    online: bool | None
    has_session: bool
    pending: int
    oldest_pending_at: str | None
    last_sync_at: datetime | None
    open_issues: int
    clock_skew_flagged: bool
    clock_skew_s: float
    network_cut: bool
    busy: str | None
    error_zh: str | None
    error_en: str | None
    replica_ready: bool = True  # the patient data is here (bootstrapped once)
    progress: Progress | None = None  # of a bootstrap in progress


@dataclass
class DeskSettings:
    hospital_name: str = "示范医院 Demo Hospital"
    window_name: str = "收费窗口 1"
    receipts_dir: Path = field(default_factory=lambda: Path("receipts"))
    ack_wait_s: float = ACK_WAIT_S


async def enroll_workstation(
    client: SyncClient, store: LocalStore, code: str, device_name: str
) -> str:
    """Exchange a one-time enrolment code for this workstation's identity.
    Returns the device token, which the caller keeps in the secret store."""
    answer = await client.enroll(code, device_name)
    await asyncio.to_thread(store.set_meta, "device_id", answer.device_id)
    await asyncio.to_thread(store.set_meta, "device_name", device_name)
    client.device_token = answer.device_token
    return answer.device_token


class Desk:
    """The core every window's desk is built on."""

    def __init__(
        self,
        store: LocalStore,
        client: SyncClient,
        settings: DeskSettings | None = None,
        *,
        network: SwitchableTransport | None = None,
        engine: SyncEngine | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.settings = settings or DeskSettings()
        self.network = network
        self.engine = engine or SyncEngine(store, client)
        self.engine.reauthenticate = self._relogin
        self.engine.on_status = self._engine_status
        self.engine.on_session_ended = self._session_ended
        self.clerk: ClerkSession | None = None
        self._password: str | None = None  # in memory only, to log in again after an outage
        self._key: SigningKey | None = None  # the clerk's signing key, unsealed at login
        self._listeners: list[Callable[[], None]] = []
        self._replica_ready = False
        self.shift_id: str | None = None  # the clerk's shift: the money taken belongs to it
        self._shift_task: asyncio.Task[None] | None = None
        # why the server ended the clerk's session (read once by the window,
        # which goes back to the login screen and says so)
        self.ended: LoginFailed | None = None
        self._forgetting: asyncio.Task[None] | None = None

    # -- status ------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Called (from any thread) whenever sync status may have changed."""
        self._listeners.append(listener)

    def watch_rows(self, listener: Callable[[RowsChanged], None]) -> None:
        """Called (from the committing thread) with the rows each commit changed."""
        self.store.subscribe(listener)

    def _engine_status(self, _status: SyncStatus) -> None:
        self._notify()

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("status listener failed")

    def status(self) -> DeskStatus:
        stats = self.store.outbox_stats()
        sync = self.engine.status
        return DeskStatus(
            online=sync.online if not self.network_cut else False,
            has_session=sync.has_session,
            pending=stats.pending,
            oldest_pending_at=stats.oldest_at,
            last_sync_at=sync.last_success_at,
            open_issues=stats.open_issues,
            clock_skew_flagged=sync.clock_skew_flagged,
            clock_skew_s=sync.clock_skew_s,
            network_cut=self.network_cut,
            busy=sync.busy,
            error_zh=sync.error_zh,
            error_en=sync.error_en,
            replica_ready=sync.replica_ready,
            progress=sync.progress,
        )

    @property
    def network_cut(self) -> bool:
        return self.network is not None and self.network.cut

    def toggle_network(self) -> bool:
        """Demo only: cut or restore this workstation's link to the server."""
        if self.network is None:
            raise RuntimeError("the network switch exists only in the demo")
        self.network.cut = not self.network.cut
        if not self.network.cut:
            self.engine.poke()
        self._notify()
        return self.network.cut

    @property
    def policy(self) -> Policy:
        return self.store.policy()

    # -- clerks --------------------------------------------------------------

    async def login(self, username: str, password: str) -> ClerkSession:
        username = username.strip()
        if not username or not password:
            raise LoginFailed(
                "login_empty", "请输入用户名和密码。", "Enter your username and password."
            )
        try:
            answer, key, new_key = await self._login_online(username, password)
        except (Offline, ServerBusy):
            offline = await asyncio.to_thread(self._offline_login, username, password)
            self._settle(None)
            return offline
        except (Unauthorised, Refused) as exc:
            if exc.code == "clerk_disabled":  # and offline no longer either
                await asyncio.to_thread(self.store.forget_clerk, username)
            raise LoginFailed(exc.code, exc.message_zh, exc.message_en) from None
        self.ended = None
        clerk = answer.clerk
        policy = Policy.from_dict(answer.policy)
        self.store.sign_as(clerk.clerk_id, key, answer.key_certificate)
        self._key = key
        self.clerk = ClerkSession(
            clerk.clerk_id, clerk.username, clerk.name, frozenset(clerk.roles), "online"
        )
        self._password = password
        device_id = self.store.device_id

        def remember() -> None:
            self.store.cache_clerk(
                username=clerk.username,
                clerk_id=clerk.clerk_id,
                name=clerk.name,
                roles=clerk.roles,
                # the sealed key is the offline password check now (local_db.keys);
                # release 0.1's verifier column stays, empty
                verifier="",
                at=self.store.clock().isoformat(timespec="seconds"),
                sealed_key=(
                    seal(new_key, password, clerk.clerk_id, device_id)
                    if new_key is not None
                    else None
                ),
                certificate=answer.key_certificate,
            )
            self.store.set_policy(policy)

        self._settle(remember)
        self.engine.poke()
        self._notify()
        return self.clerk

    async def _login_online(
        self, username: str, password: str
    ) -> tuple[LoginResponse, SigningKey, SigningKey | None]:
        """Log in at the server with the clerk's signing key here
        (``domain.signing``): the one sealed at an earlier login, unsealed
        while the server checks the password, or a new one. The login records
        its public half for the clerk. Returns the answer, the key, and the
        key again if it is new (to be sealed)."""
        device_id = self.store.device_id
        clerk_id, sealed, unsigned_through = await asyncio.to_thread(self._held_key, username)
        unsealing = (
            asyncio.ensure_future(asyncio.to_thread(unseal, sealed, password, clerk_id, device_id))
            if sealed is not None and clerk_id is not None
            else None
        )
        try:
            if sealed is None:  # the clerk's first login here
                fresh = SigningKey.generate()
                answer = await self.client.login(
                    username,
                    password,
                    signing_key=fresh.public_key,
                    unsigned_through=unsigned_through,
                )
                return answer, fresh, fresh
            answer = await self.client.login(
                username, password, signing_key=sealed.public_key, unsigned_through=unsigned_through
            )
            key = await unsealing if unsealing is not None else None
            if key is not None and clerk_id == answer.clerk.clerk_id:
                return answer, key, None
        finally:
            if unsealing is not None and not unsealing.done():
                unsealing.cancel()
        # the password changed since the key was sealed (or the username is
        # another clerk's now): a new key, registered by a login of its own
        # (the first session ended: it named the old key)
        with contextlib.suppress(SyncError):
            await self.client.logout()
        fresh = SigningKey.generate()
        answer = await self.client.login(
            username, password, signing_key=fresh.public_key, unsigned_through=unsigned_through
        )
        return answer, fresh, fresh

    def _held_key(self, username: str) -> tuple[str | None, SealedKey | None, int]:
        """The clerk's id and sealed key here, if they logged in here before,
        and the last op this workstation made unsigned."""
        cached = self.store.cached_clerk(username)
        clerk_id = cached["clerk_id"] if cached is not None else None
        sealed = self.store.sealed_key(clerk_id) if clerk_id is not None else None
        return clerk_id, sealed, self.store.unsigned_through()

    def _offline_login(self, username: str, password: str) -> ClerkSession:
        """Log in with the signing key sealed at this workstation's last online login:
        the password that opens it is the clerk's."""
        policy = self.store.policy()
        now = self.store.clock()
        cached = self.store.cached_clerk(username)
        if cached is None:
            raise LoginFailed(
                "offline_unknown",
                "中心服务器不可达：离线时只能登录近期在本机联网登录过的操作员。",
                "The central server is unreachable: offline, only clerks who recently logged in "
                "online at this workstation can log in.",
            )
        if cached["locked_until"] and cached["locked_until"] > now.isoformat(timespec="seconds"):
            raise LoginFailed(
                "login_locked",
                f"登录失败次数过多，已锁定至 {cached['locked_until'][11:16]}。",
                f"Too many failed logins; locked until {cached['locked_until'][11:16]}.",
            )
        last_online = datetime.fromisoformat(cached["last_online_login"])
        if now - last_online > timedelta(days=policy.offline_login_days):
            raise LoginFailed(
                "offline_expired",
                f"您在本机最近一次联网登录已超过 {policy.offline_login_days} 天，离线登录不可用。",
                f"Your last online login here is more than {policy.offline_login_days} days ago; "
                "offline login is not allowed.",
            )
        sealed = self.store.sealed_key(cached["clerk_id"])
        if sealed is None:  # cached by release 0.1, before clerks signed their work
            raise LoginFailed(
                "offline_no_key",
                "中心服务器不可达：您在本机升级后还未联网登录过，暂不能离线办理业务。请联网后登录一次。",
                "The central server is unreachable: you have not logged in online at this "
                "workstation since it was upgraded, so you cannot work offline yet. Log in once "
                "while the server is reachable.",
            )
        # the key opens with the password of the clerk's last online login
        # here, which the verifier beside it was made from: opening it is the
        # password check (one Argon2 derivation, not two)
        key = unseal(sealed, password, cached["clerk_id"], self.store.device_id)
        if key is None:
            until = (now + timedelta(minutes=policy.lockout_minutes)).isoformat(timespec="seconds")
            attempts = self.store.note_login_failure(
                username, attempts_allowed=policy.login_attempts, locked_until=until
            )
            if attempts >= policy.login_attempts:
                raise LoginFailed(
                    "login_locked",
                    f"登录失败次数过多，已锁定至 {until[11:16]}。",
                    f"Too many failed logins; locked until {until[11:16]}.",
                )
            raise LoginFailed("login_failed", "用户名或密码错误。", "Wrong username or password.")
        if cached["failed_attempts"] or cached["locked_until"]:
            self.store.clear_login_failures(username)  # a write only when there is one to clear
        self.store.sign_as(cached["clerk_id"], key, self.store.key_certificate(cached["clerk_id"]))
        self._key = key
        self.clerk = ClerkSession(
            cached["clerk_id"], username, cached["name"], frozenset(cached["roles"]), "offline"
        )
        self._password = password
        self._notify()
        return self.clerk

    async def _relogin(self) -> bool:
        """Engine callback: get a server session for the clerk at the desk."""
        if self.clerk is None or self._password is None or self.network_cut:
            return False
        try:
            answer = await self.client.login(
                self.clerk.username,
                self._password,
                signing_key=self._key.public_key if self._key is not None else None,
            )
        except (Unauthorised, Refused) as exc:
            # the password changed, the clerk was disabled or locked out here
            self._session_ended(exc)
            return False
        await asyncio.to_thread(self.store.set_policy, Policy.from_dict(answer.policy))
        self.clerk = ClerkSession(
            self.clerk.clerk_id,
            self.clerk.username,
            self.clerk.name,
            frozenset(answer.clerk.roles),
            "online",
        )
        self._notify()
        return True

    def _session_ended(self, exc: SyncError) -> None:
        """Engine callback: the server ended the clerk's session for good (or
        refused to log them in again). The clerk is logged out here, told
        why, and must log in online before logging in offline again."""
        clerk = self.clerk
        if clerk is None:
            return
        log.warning("the server ended %s's session: %s", clerk.username, exc.code)
        self.store.stop_signing(clerk.clerk_id)
        self._key = None
        self.clerk = None
        self.shift_id = None
        self._shift_task = None
        self._password = None
        self.ended = LoginFailed(exc.code, exc.message_zh, exc.message_en)
        self._forgetting = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self.store.forget_clerk, clerk.username)
        )
        self._notify()

    def _settle(self, remember: Callable[[], None] | None) -> None:
        """What a login writes (the clerk's verifier for offline logins, the
        policy; then the clerk's shift, found or opened) is written in the
        background: the login does not wait for the store, which a bootstrap
        may hold for seconds; the clerk's first commit does
        (:meth:`current_shift`)."""
        self.shift_id = None

        async def settle() -> None:
            if remember is not None:
                await asyncio.to_thread(remember)
            await self._open_shift()

        self._shift_task = asyncio.get_running_loop().create_task(settle())

    async def current_shift(self) -> str | None:
        """The clerk's open shift on this workstation, once it is found or opened."""
        task = self._shift_task
        if task is not None:
            try:
                await asyncio.shield(task)
            except Exception:
                log.exception("opening the clerk's shift failed")
        return self.shift_id

    async def _open_shift(self) -> None:
        """The clerk's open shift on this workstation, opened now if there is
        none (offline too: opening one is an operation like any other). Only
        clerks who take money work in a shift."""
        if self.clerk is None or not self.clerk.has_any(MONEY_ROLES):
            return
        actor = self.actor()
        found = await asyncio.to_thread(self.store.open_shift, actor.clerk_id, actor.device_id)
        if found is None:
            command = OpenShift(shift_id=new_op_id())
            await asyncio.to_thread(self.store.execute, actor, lambda _store: command)
            self._notify()
            self.engine.poke()
            found = command.shift_id
        if self.clerk is not None and self.clerk.clerk_id == actor.clerk_id:
            self.shift_id = found

    async def logout(self) -> None:
        await self.current_shift()  # let an opening finish: it is the clerk's
        if self.clerk is not None:
            self.store.stop_signing(self.clerk.clerk_id)
        self._key = None
        self.clerk = None
        self.shift_id = None  # still open: the clerk's next login here carries on in it
        self._shift_task = None
        self._password = None
        try:
            await self.client.logout()
        except SyncError:
            self.client.session_token = None
        self._notify()

    def actor(self) -> Actor:
        """The clerk at the desk, as the rules see them."""
        if self.clerk is None:
            raise NotAllowed(
                Rejection(code="role_forbidden", params={"roles": "-", "command": "-"})
            )
        return Actor(self.clerk.clerk_id, self.clerk.roles, self.store.device_id)

    def may(self, command_roles: frozenset[str]) -> bool:
        return self.clerk is not None and self.clerk.has_any(command_roles)

    # -- the one way a window commits ------------------------------------------

    async def check(self, build: Callable[[LocalStore], Command]) -> None:
        """Decide the command against the replica without writing anything
        (numbers taken are given back): raises CommandRejected, or DomainError
        from ``build``, so a form shows the refusal before the clerk confirms."""
        await asyncio.to_thread(self.store.check, self.actor(), build)

    async def commit(self, build: Callable[[LocalStore], Command]) -> Committed:
        """Commit the command with its outbox entry; online, wait up to
        ``ack_wait_s`` for the server's answer. Raises CommandRejected (the
        rules said no; nothing written) or DomainError from ``build``."""
        actor = self.actor()
        online = (
            not self.network_cut
            and bool(self.engine.status.online)
            and self.engine.status.has_session
        )
        op_id = new_op_id()
        # asked for before the commit, so the engine cannot answer first
        answer = self.engine.answer_for(op_id) if online else None
        try:
            executed = await asyncio.to_thread(self.store.execute, actor, build, op_id)
        except BaseException:
            if answer is not None:
                answer.cancel()
            raise
        self._notify()
        self.engine.poke()
        if answer is None:
            return Committed(executed, confirmed=False, rejection=None)
        try:
            result = await asyncio.wait_for(asyncio.shield(answer), self.settings.ack_wait_s)
        except TimeoutError:
            answer.cancel()
            return Committed(executed, confirmed=False, rejection=None)
        if result.status in ("rejected", "needs_review"):
            rejection = Rejection(code=result.code or result.status, params=result.params or {})
            return Committed(executed, confirmed=False, rejection=rejection)
        return Committed(executed, confirmed=True, rejection=None)

    # -- look-ups every window makes --------------------------------------------

    def search(self, query: str, limit: int = 20) -> list[PatientHit]:
        return self.store.search(query, limit)

    def hits(self, patient_ids: list[str]) -> dict[str, PatientHit]:
        """These patients' search lines as they are now."""
        return self.store.hits(patient_ids)

    @staticmethod
    def warm_up() -> None:
        """Load what the first registration needs (pinyin dictionaries, ~0.25 s)
        ahead of it; call off the screen's thread, after login."""
        pinyin.warm_up()

    def replica_ready(self) -> bool:
        """Whether this workstation holds the patient data (it has bootstrapped
        once): until then a search finding nothing proves nothing."""
        if not self._replica_ready:
            self._replica_ready = self.store.get_meta("epoch") is not None
        return self._replica_ready and self.engine.status.replica_ready

    def patient(self, patient_id: str) -> PatientView | None:
        return self.store.patient_view(patient_id)

    def patient_by_card(self, card_text: str) -> PatientView:
        card_no = parse_card_no(card_text)
        card = self.store.card(card_no)
        if card is None:
            raise DomainError("card_unknown", card_no=card_no)
        view = self.store.patient_view(card.patient_id)
        if view is None:
            raise DomainError("patient_unknown")
        return view

    def patient_by_national_id(self, doc_no: str) -> PatientView | None:
        number = parse_national_id(doc_no).number
        found = self.store.patient_by_document(DocumentType.RESIDENT_ID.value, number)
        return self.store.patient_view(found.patient_id) if found else None

    # -- Sync issues ---------------------------------------------------------

    def issues(self, status: str | None = "open") -> list[dict[str, Any]]:
        """Sync issues, each with ``facts``: what its operation was about, as
        its command summarises itself."""
        issues = self.store.issues(status)
        for issue in issues:
            summary = issue["summary"]
            try:
                command = parse_command(str(summary.get("kind", "")), summary.get("payload") or {})
                issue["facts"] = command.summary()
            except DomainError:
                issue["facts"] = []
        return issues

    def resolve_issue(self, issue_id: int, note: str) -> bool:
        if self.clerk is None:
            return False
        done = self.store.resolve_issue(
            issue_id, self.clerk.clerk_id, note.strip() or "acknowledged"
        )
        self._notify()
        return done
