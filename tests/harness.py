"""Test harness: a central server and workstations wired together in-process."""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import httpx

from server.app import create_app
from server.db import make_engine
from server.site import start_new_epoch
from sync.transports import SwitchableTransport
from workstation.builder import SyncTiming, build_workstation
from workstation.desk import DeskSettings, Done, PatientView, RegistrationDraft
from workstation.desk.core import enroll_workstation

PASSWORD = "secret-123"


class Central:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.app = create_app(self.engine, migrate=True)
        self.auth = self.app.state.auth
        self.sync = self.app.state.sync

    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=self.app)

    def clerk(self, username: str, roles: list[str], name: str | None = None) -> str:
        return self.auth.create_clerk(username, name or username, roles, PASSWORD)

    def close(self) -> None:
        self.engine.dispose()


class Station:
    """One workstation, built as ``workstation run`` builds it, on a link to
    the in-process server that a test can cut."""

    def __init__(
        self,
        central: Central,
        directory: Path,
        name: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.central = central
        self.name = name
        parts = build_workstation(
            directory / "replica.db",
            "http://central",
            settings=DeskSettings(
                window_name=name, receipts_dir=directory / "receipts", ack_wait_s=0
            ),
            transport=transport or central.transport(),
            switchable=True,
            timing=SyncTiming(
                interval_s=0.05, base_delay_s=0.01, max_delay_s=0.05, probe_interval_s=0.05
            ),
        )
        assert parts.network is not None
        self.parts = parts
        self.store, self.client, self.engine, self.desk = (
            parts.store,
            parts.client,
            parts.engine,
            parts.desk,
        )
        self.network: SwitchableTransport = parts.network

    async def enroll_and_login(self, username: str) -> None:
        code = self.central.auth.create_enrollment_code(self.name)
        await enroll_workstation(self.client, self.store, code, self.name)
        await self.desk.login(username, PASSWORD)
        await self.desk.current_shift()  # opened in the background: pushed now with the rest
        await self.engine.sync_once()  # bootstrap + number blocks

    # -- the cashier's work, typed as at the window ------------------------------

    async def register(self, form: RegistrationDraft) -> Done:
        cashier = self.parts.cashier
        draft = cashier.registration(
            name=form.name,
            sex=form.sex,
            birth_date=form.birth_date,
            doc_type=form.doc_type,
            doc_no=form.doc_no,
            phone=form.phone,
            address=form.address,
        )
        return await cashier.commit(draft)

    async def issue_card(self, patient_id: str, amount_text: str, method: str) -> Done:
        view = self.desk.patient(patient_id)
        assert view is not None, patient_id
        cashier = self.parts.cashier
        return await cashier.commit(cashier.issue_card_draft(view, amount_text, method))

    async def top_up(self, card_text: str | None, amount_text: str, method: str) -> Done:
        assert card_text is not None
        view = self.desk.patient_by_card(card_text)
        cashier = self.parts.cashier
        return await cashier.commit(cashier.top_up_draft(view, card_text, amount_text, method))

    async def cancel_card(self, card_text: str | None, reason: str) -> Done:
        assert card_text is not None
        cashier = self.parts.cashier
        return await cashier.commit(cashier.cancel_card_draft(card_text, reason))

    def view(self, patient_id: str) -> PatientView:
        """The patient as the clerk at this station sees them."""
        view = self.desk.patient(patient_id)
        assert view is not None, patient_id
        return view

    def offline(self) -> None:
        self.network.cut = True

    def online(self) -> None:
        self.network.cut = False

    async def close(self) -> None:
        await self.parts.aclose()


async def cashier_station(central: Central, tmp_path: Path) -> Station:
    """Station "a", enrolled, with cashier "cash" logged in and synced once."""
    central.clerk("cash", ["cashier"])
    station = Station(central, tmp_path / "a", "a")
    await station.enroll_and_login("cash")
    return station


def back_up(db: Path, backup: Path) -> None:
    """The nightly backup of a SQLite central database (its log folded in)."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(db, backup)


def restore(central: Central, db: Path, backup: Path) -> str:
    """The server's disk died: put the backup in place and mark a new epoch,
    as the runbook says. Returns the new epoch."""
    central.engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, db)
    return start_new_epoch(central.engine)


@dataclass
class LostWork:
    db: Path
    backup: Path
    central: Central
    station: Station
    patient_id: str
    card_no: str


async def work_a_restore_will_lose(tmp_path: Path, patient: RegistrationDraft) -> LostWork:
    """Station "a" registers ``patient``, issues a card with 50.00 and syncs;
    the nightly backup is taken; then two top-ups (100.00 cash, 30.00 WeChat)
    are synced, which the backup does not hold."""
    db, backup = tmp_path / "central.db", tmp_path / "backup.db"
    central = Central(f"sqlite:///{db}")
    station = await cashier_station(central, tmp_path)
    reg = await station.register(patient)
    card = await station.issue_card(reg.patient_id, "50", "cash")
    await station.engine.sync_once()

    central.engine.dispose()
    back_up(db, backup)
    await station.top_up(str(card.card_no), "100", "cash")
    await station.top_up(str(card.card_no), "30", "wechat")
    await station.engine.sync_once()
    return LostWork(db, backup, central, station, reg.patient_id, str(card.card_no))
