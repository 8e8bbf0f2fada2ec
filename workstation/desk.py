"""The desk: everything a window clerk can do, as the screens call it.

The screens never touch the store, the HTTP client or the rules directly; they
call this facade, which turns what the clerk typed into a command, commits it
locally with its outbox entry, pokes the sync engine and hands back what to
show. Nothing is shown as done before that local commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from ulid import ULID

from domain.cashier.cancel_card import CancelCard
from domain.cashier.issue_card import IssueCard, Prepayment
from domain.cashier.top_up import TopUp
from domain.commands import parse_command
from domain.errors import DomainError, Rejection
from domain.identity import DocumentType, parse_national_id
from domain.money import parse_amount, parse_payment_method
from domain.numbers import Series, parse_card_no
from domain.patients.register import RegisterPatient
from domain.state import Actor, Policy
from local_db.search import PatientHit
from local_db.store import (
    ACKED,
    CONFIRMED,
    REJECTED,
    REVIEW,
    LocalStore,
    OutboxStats,
    PatientView,
)
from local_db.store import CommandRejected as CommandRejected  # what the screens catch
from sync.client import Offline, Refused, ServerBusy, SyncClient, SyncError, Unauthorised
from sync.engine import SyncEngine, SyncStatus
from sync.transports import SwitchableTransport
from workstation.receipts import Receipt

log = logging.getLogger(__name__)

_hasher = PasswordHasher()
CASHIER_ROLES = frozenset({"cashier", "supervisor"})  # who opens the cashier desk
ACK_WAIT_S = 2.0  # online, wait this long for the server before printing a receipt


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
class RegistrationForm:
    name: str
    sex: str
    birth_date: str
    doc_type: str
    doc_no: str
    phone: str
    address: str = ""


@dataclass(frozen=True)
class Done:
    """A committed clerk action and what to show for it."""

    kind: str
    op_id: str
    patient_id: str
    confirmed: bool  # the server has applied it already
    mapped: bool = False  # registration matched an existing patient
    card_no: str | None = None
    receipt: Receipt | None = None
    receipt_path: Path | None = None
    rejection: Rejection | None = None  # the server refused it at once (online)


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


def derive_from_national_id(doc_no: str) -> tuple[str, str] | None:
    """(birth date ISO, sex) from a valid resident ID number, for the form."""
    try:
        nid = parse_national_id(doc_no)
    except DomainError:
        return None
    return nid.birth_date.isoformat(), nid.sex


class Desk:
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
        self.clerk: ClerkSession | None = None
        self._password: str | None = None  # in memory only, to log in again after an outage
        self._listeners: list[Callable[[], None]] = []

    # -- status ------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Called (from any thread) whenever sync status may have changed."""
        self._listeners.append(listener)

    def _engine_status(self, _status: SyncStatus) -> None:
        self._notify()

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("status listener failed")

    def status(self) -> DeskStatus:
        stats: OutboxStats = self.store.outbox_stats()
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
            answer = await self.client.login(username, password)
        except (Offline, ServerBusy):
            return await asyncio.to_thread(self._offline_login, username, password)
        except (Unauthorised, Refused) as exc:
            raise LoginFailed(exc.code, exc.message_zh, exc.message_en) from None
        verifier = await asyncio.to_thread(_hasher.hash, password)
        clerk = answer.clerk
        await asyncio.to_thread(
            self.store.cache_clerk,
            username=clerk.username,
            clerk_id=clerk.clerk_id,
            name=clerk.name,
            roles=clerk.roles,
            verifier=verifier,
            at=self.store.clock().isoformat(timespec="seconds"),
        )
        await asyncio.to_thread(self.store.set_policy, Policy.from_dict(answer.policy))
        self.clerk = ClerkSession(
            clerk.clerk_id, clerk.username, clerk.name, frozenset(clerk.roles), "online"
        )
        self._password = password
        self.engine.poke()
        self._notify()
        return self.clerk

    def _offline_login(self, username: str, password: str) -> ClerkSession:
        """Log in against the verifier cached at this workstation's last online login."""
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
        try:
            _hasher.verify(cached["verifier"], password)
        except (VerificationError, InvalidHashError):
            until = (now + timedelta(minutes=policy.lockout_minutes)).isoformat(timespec="seconds")
            attempts = self.store.note_login_failure(
                username, attempts_allowed=policy.login_attempts, locked_until=until
            )
            if attempts >= policy.login_attempts:
                raise LoginFailed(
                    "login_locked",
                    f"登录失败次数过多，已锁定至 {until[11:16]}。",
                    f"Too many failed logins; locked until {until[11:16]}.",
                ) from None
            raise LoginFailed(
                "login_failed", "用户名或密码错误。", "Wrong username or password."
            ) from None
        self.store.clear_login_failures(username)
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
            answer = await self.client.login(self.clerk.username, self._password)
        except Unauthorised:
            return False
        except SyncError:
            raise
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

    async def logout(self) -> None:
        self.clerk = None
        self._password = None
        try:
            await self.client.logout()
        except SyncError:
            self.client.session_token = None
        self._notify()

    def _actor(self) -> Actor:
        if self.clerk is None:
            raise NotAllowed(
                Rejection(code="role_forbidden", params={"roles": "-", "command": "-"})
            )
        return Actor(self.clerk.clerk_id, self.clerk.roles, self.store.device_id)

    def may(self, command_roles: frozenset[str]) -> bool:
        return self.clerk is not None and self.clerk.has_any(command_roles)

    # -- what the clerk typed -----------------------------------------------

    def parse_amount(self, text: str) -> int:
        """Fen from a typed yuan amount, or DomainError with the reason."""
        return parse_amount(text, limit_fen=self.policy.max_amount_fen)

    @staticmethod
    def parse_card(text: str) -> str:
        return parse_card_no(text)

    @staticmethod
    def derive_from_national_id(doc_no: str) -> tuple[str, str] | None:
        return derive_from_national_id(doc_no)

    def numbers_left(self) -> tuple[int, int]:
        """(card numbers, receipt numbers) left in this workstation's leased blocks."""
        return self.store.numbers_left(Series.CARD), self.store.numbers_left(Series.RECEIPT)

    def next_card_no(self) -> str | None:
        """The card number the next issue will take from this workstation's block."""
        return self.store.peek_number(Series.CARD)

    # -- reads -------------------------------------------------------------

    def search(self, query: str, limit: int = 20) -> list[PatientHit]:
        return self.store.search(query, limit)

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

    # -- commands ------------------------------------------------------------

    async def register_patient(self, form: RegistrationForm) -> Done:
        birth_date, sex = form.birth_date.strip(), form.sex.strip()
        if form.doc_type == DocumentType.RESIDENT_ID and (not birth_date or not sex):
            derived = derive_from_national_id(form.doc_no)
            if derived is not None:
                birth_date = birth_date or derived[0]
                sex = sex or derived[1]
        actor = self._actor()
        command = RegisterPatient(
            patient_id=str(ULID()),
            name=form.name,
            sex=sex or "U",
            birth_date=birth_date,
            doc_type=form.doc_type,
            doc_no=form.doc_no,
            phone=form.phone,
            address=form.address,
        )
        executed = await asyncio.to_thread(self.store.execute, actor, lambda _store: command)
        rejection, confirmed = await self._after_commit(executed.op_id)
        result = executed.decision.result
        return Done(
            kind=command.kind,
            op_id=executed.op_id,
            patient_id=result["patient_id"],
            confirmed=confirmed,
            mapped=bool(result.get("mapped")),
            rejection=rejection,
        )

    async def issue_card(self, patient_id: str, amount_text: str, method: str) -> Done:
        """Issue the next card of this workstation's block; an amount makes the first prepayment."""
        prepay_fen = (
            parse_amount(amount_text, limit_fen=self.policy.max_amount_fen)
            if amount_text.strip()
            else None
        )
        payment = parse_payment_method(method) if prepay_fen is not None else None
        actor = self._actor()

        def build(store: LocalStore) -> IssueCard:
            prepayment = None
            if prepay_fen is not None and payment is not None:
                prepayment = Prepayment(
                    transfer_id=str(ULID()),
                    amount_fen=prepay_fen,
                    method=payment.value,
                    receipt_no=store.take_number(Series.RECEIPT),
                )
            return IssueCard(
                card_no=store.take_number(Series.CARD), patient_id=patient_id, prepayment=prepayment
            )

        executed = await asyncio.to_thread(self.store.execute, actor, build)
        rejection, confirmed = await self._after_commit(executed.op_id)
        result = executed.decision.result
        receipt, path = None, None
        if result.get("receipt_no") and rejection is None:
            receipt, path = await asyncio.to_thread(self._receipt, result["receipt_no"], confirmed)
        return Done(
            kind=IssueCard.kind,
            op_id=executed.op_id,
            patient_id=result["patient_id"],
            confirmed=confirmed,
            card_no=result["card_no"],
            receipt=receipt,
            receipt_path=path,
            rejection=rejection,
        )

    async def top_up(self, card_text: str, amount_text: str, method: str) -> Done:
        card_no = parse_card_no(card_text)
        amount = parse_amount(amount_text, limit_fen=self.policy.max_amount_fen)
        payment = parse_payment_method(method)
        actor = self._actor()

        def build(store: LocalStore) -> TopUp:
            return TopUp(
                transfer_id=str(ULID()),
                card_no=card_no,
                amount_fen=amount,
                method=payment.value,
                receipt_no=store.take_number(Series.RECEIPT),
            )

        executed = await asyncio.to_thread(self.store.execute, actor, build)
        rejection, confirmed = await self._after_commit(executed.op_id)
        result = executed.decision.result
        receipt, path = None, None
        if rejection is None:
            receipt, path = await asyncio.to_thread(self._receipt, result["receipt_no"], confirmed)
        return Done(
            kind=TopUp.kind,
            op_id=executed.op_id,
            patient_id=result["patient_id"],
            confirmed=confirmed,
            card_no=card_no,
            receipt=receipt,
            receipt_path=path,
            rejection=rejection,
        )

    async def cancel_card(self, card_text: str, reason: str) -> Done:
        card_no = parse_card_no(card_text)
        actor = self._actor()
        command = CancelCard(card_no=card_no, reason=reason)
        executed = await asyncio.to_thread(self.store.execute, actor, lambda _store: command)
        rejection, confirmed = await self._after_commit(executed.op_id)
        card = self.store.card(card_no)
        return Done(
            kind=CancelCard.kind,
            op_id=executed.op_id,
            patient_id=card.patient_id if card else "",
            confirmed=confirmed,
            card_no=card_no,
            rejection=rejection,
        )

    async def _after_commit(self, op_id: str) -> tuple[Rejection | None, bool]:
        """Poke the engine; online, give the server a moment to answer so the
        clerk learns of a refusal at the window and the receipt is final."""
        self._notify()
        self.engine.poke()
        if self.network_cut or not self.engine.status.online or not self.engine.status.has_session:
            return None, False
        deadline = asyncio.get_running_loop().time() + self.settings.ack_wait_s
        while asyncio.get_running_loop().time() < deadline:
            state, answer = await asyncio.to_thread(self.store.op_answer, op_id)
            if state in (ACKED, CONFIRMED):
                return None, True
            if state in (REJECTED, REVIEW) and answer is not None:
                return Rejection(
                    code=answer.get("code") or "rejected", params=answer.get("params") or {}
                ), False
            await asyncio.sleep(0.05)
        return None, False

    def _receipt(self, receipt_no: str, confirmed: bool) -> tuple[Receipt, Path]:
        transfer = self.store.transfer_by_receipt(receipt_no)
        if transfer is None:
            raise DomainError("transfer_exists")
        view = self.store.patient_view(transfer.patient_id)
        receipt = Receipt(
            receipt_no=receipt_no,
            kind=transfer.kind,
            at=transfer.at,
            hospital=self.settings.hospital_name,
            window=self.settings.window_name,
            clerk_name=self.clerk.name if self.clerk else transfer.clerk_id,
            patient_name=view.patient.name if view else "",
            card_no=transfer.card_no or "",
            amount_fen=transfer.amount_fen,
            method=transfer.method,
            balance_after_fen=view.balance_fen if view else 0,
            provisional=not confirmed,
        )
        path = receipt.write(self.settings.receipts_dir, "zh")
        return receipt, path

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
