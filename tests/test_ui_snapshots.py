"""Snapshots of the cashier desk and the Sync issues screen, in both
languages, with a frozen clock, fixed data, fixed size and no cursor blink.
Review changes with `pytest --snapshot-update` and look at the SVGs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from rich.cells import cell_len
from textual.pilot import Pilot
from textual.widgets import DataTable

from domain.cards import CardRow
from domain.cashier.top_up import TopUp
from domain.leases import number_block
from domain.ledger import TransferRow, deposit_account, intake_account
from domain.numbers import Series
from domain.patients import PatientRow
from domain.state import Actor
from local_db.store import LocalStore, ServerResult
from screens.cashier import CashierScreen
from screens.sync_issues import SyncIssuesScreen
from sync.engine import SyncStatus
from workstation.app import WindowApp, make_app
from workstation.builder import build_workstation
from workstation.desk import ClerkSession, Desk, DeskSettings

BEIJING = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 22, 9, 30, tzinfo=BEIJING)
SIZE = (130, 36)

PATIENTS = [
    (
        "P001",
        "张三丰",
        "F",
        "1949-12-31",
        "11010519491231002X",
        "13812345678",
        "北京市东城区东四北大街8号",
    ),
    (
        "P002",
        "张珊",
        "F",
        "1990-03-07",
        "110105199003074128",
        "13900001111",
        "北京市朝阳区建国路88号",
    ),
    (
        "P003",
        "赵四",
        "M",
        "1975-06-01",
        "310104197506015231",
        "13600002222",
        "上海市徐汇区漕溪北路3号",
    ),
]


def confirmed_rows() -> list[tuple[str, dict, str]]:
    rows: list[tuple[str, dict, str]] = []
    for pid, name, sex, born, doc, phone, address in PATIENTS:
        rows.append(
            (
                "patients",
                PatientRow(
                    patient_id=pid,
                    name=name,
                    sex=sex,
                    birth_date=born,
                    doc_type="resident_id",
                    doc_no=doc,
                    phone=phone,
                    address=address,
                    registered_at="2026-10-01T08:00:00+08:00",
                    registered_by="C0",
                    registered_device="D0",
                ).model_dump(),
                pid,
            )
        )
    card = CardRow(
        card_no="1000000008",
        patient_id="P001",
        status="active",
        issued_at="2026-10-01T08:05:00+08:00",
        issued_by="C0",
        issued_device="D0",
        status_changed_at="2026-10-01T08:05:00+08:00",
    )
    rows.append(("cards", card.model_dump(), card.card_no))
    transfer = TransferRow(
        transfer_id="T001",
        debit_account=intake_account("cash", "D0"),
        credit_account=deposit_account("P001"),
        amount_fen=50000,
        kind="first_prepayment",
        method="cash",
        patient_id="P001",
        card_no="1000000008",
        receipt_no="R000000001",
        clerk_id="C0",
        device_id="D0",
        at="2026-10-01T08:05:00+08:00",
        op_id="O0",
    )
    rows.append(("transfers", transfer.model_dump(), transfer.transfer_id))
    return rows


@pytest.fixture
def desk(tmp_path: Path) -> Desk:
    station = build_workstation(
        tmp_path / "replica.db",
        "http://central.invalid",
        settings=DeskSettings(window_name="收费窗口 3"),
        switchable=True,
        clock=lambda: NOW,
    )
    store = station.store
    store.set_meta("device_id", "DEV1")
    granted = "2026-11-01T00:00:00+08:00"
    store.add_lease(number_block("L1", "card", 100_000_100, 100_000_199, "DEV1", granted))
    store.add_lease(number_block("L2", "receipt", 500, 999, "DEV1", granted))
    store.apply_pull(confirmed_rows(), next_cursor=3, epoch="E1", device_last_seq=0)
    actor = Actor("C1", frozenset({"cashier"}), "DEV1")
    # one top-up still pending, one the server refused
    for transfer_id, amount in (("T002", 10050), ("T003", 20000)):

        def top_up(s: LocalStore, t: str = transfer_id, a: int = amount) -> TopUp:
            return TopUp(
                transfer_id=t,
                card_no="1000000008",
                amount_fen=a,
                method="wechat",
                receipt_no=s.take_number(Series.RECEIPT),
            )

        store.execute(actor, top_up)
    refused = store.outbox()[0].op
    store.record_results(
        [
            ServerResult(
                op_id=refused.op_id,
                status="rejected",
                code="card_lost",
                params={"card_no": "1000000008"},
            )
        ]
    )
    store.rebase()
    d = station.desk
    d.clerk = ClerkSession("C1", "cashier", "王芳", frozenset({"cashier"}), "online")
    d.engine.status = SyncStatus(
        online=True, has_session=True, last_success_at=NOW - timedelta(minutes=3)
    )
    return d


def app_for(desk: Desk, language: str):
    return make_app(
        desk,
        language=language,
        run_sync=False,
        status_interval_s=0,
        clock=lambda: NOW,
        cursor_blink=False,
    )


async def _tables_settled(pilot: Pilot) -> None:
    """A DataTable sizes its columns to their cells when it is next idle, after
    the rows came: wait for that (a busy machine gets there later), then for
    the repaint."""

    def settled(table: DataTable) -> bool:
        if table.row_count == 0:
            return True
        first = [cell_len(str(cell)) for cell in table.get_row_at(0)]
        return all(
            column.content_width >= width
            for column, width in zip(table.ordered_columns, first, strict=True)
        )

    for _ in range(200):
        if all(settled(table) for table in pilot.app.screen.query(DataTable)):
            break
        await pilot.pause(0.02)
    else:
        raise AssertionError("the tables did not size their columns")
    await pilot.pause()


async def _open_cashier_with_search(pilot: Pilot) -> None:
    app = pilot.app
    await app.push_screen(CashierScreen())
    await pilot.pause()
    await pilot.press(*"zs")
    for _ in range(100):
        screen = app.screen
        if isinstance(screen, CashierScreen) and screen.view is not None and len(screen._hits) == 2:
            break
        await pilot.pause(0.02)
    await _tables_settled(pilot)
    assert isinstance(app, WindowApp)
    app.refresh_status()
    await pilot.pause()


async def _open_issues(pilot: Pilot) -> None:
    app = pilot.app
    await app.push_screen(SyncIssuesScreen())
    for _ in range(100):
        screen = app.screen
        # the issues read, and their rows in the table (a table without rows
        # counts as settled: a busy machine once drew it before its rows came)
        if (
            isinstance(screen, SyncIssuesScreen)
            and screen.issues
            and all(table.row_count for table in screen.query(DataTable))
        ):
            break
        await pilot.pause(0.02)
    await _tables_settled(pilot)
    assert isinstance(app, WindowApp)
    app.refresh_status()
    await pilot.pause()


@pytest.mark.parametrize("language", ["zh", "en"])
def test_cashier_screen_snapshot(snap_compare, desk: Desk, language: str) -> None:
    assert snap_compare(
        app_for(desk, language), terminal_size=SIZE, run_before=_open_cashier_with_search
    )


@pytest.mark.parametrize("language", ["zh", "en"])
def test_sync_issues_screen_snapshot(snap_compare, desk: Desk, language: str) -> None:
    assert snap_compare(app_for(desk, language), terminal_size=SIZE, run_before=_open_issues)
