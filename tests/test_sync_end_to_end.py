"""Two workstations and one central server, end to end: offline work,
reconnection, lost responses, conflicts. Nothing lost, nothing silent."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from domain.areas import ROW_TYPES
from local_db.store import LocalStore
from server.db import REPLICATED, ops, transfers
from sync.client import Offline
from tests.harness import Central, Station
from workstation.desk import RegistrationDraft

ZHANG = RegistrationDraft(
    name="张三丰",
    sex="F",
    birth_date="",
    doc_type="resident_id",
    doc_no="11010519491231002X",
    phone="13812345678",
    address="北京市东城区",
)
LI = RegistrationDraft(
    name="李单",
    sex="M",
    birth_date="",
    doc_type="resident_id",
    doc_no="440524188001010014",
    phone="13912345678",
    address="广东省汕头市",
)


def replica_rows(store: LocalStore) -> dict[str, list[dict]]:
    result = {}
    for row_type in ROW_TYPES:
        cols = list(row_type.model_fields)
        rows = store.conn.execute(
            f"SELECT {', '.join(cols)} FROM {row_type.table} ORDER BY {row_type.key}"
        ).fetchall()
        result[row_type.table] = [dict(zip(cols, r, strict=True)) for r in rows]
    return result


def server_rows(central: Central) -> dict[str, list[dict]]:
    result = {}
    with central.engine.connect() as conn:
        for row_type in ROW_TYPES:
            table = REPLICATED[row_type.table]
            rows = conn.execute(select(table).order_by(table.c[row_type.key])).mappings()
            result[row_type.table] = [dict(r) for r in rows]
    return result


def pending_rows(store: LocalStore) -> int:
    return sum(
        store.conn.execute(
            f"SELECT COUNT(*) FROM {rt.table} WHERE pending_op IS NOT NULL"
        ).fetchone()[0]
        for rt in ROW_TYPES
    )


@pytest.fixture
async def pair(central: Central, tmp_path: Path):
    central.clerk("cash_a", ["cashier"])
    central.clerk("cash_b", ["cashier"])
    a = Station(central, tmp_path / "a", "window-a")
    b = Station(central, tmp_path / "b", "window-b")
    await a.enroll_and_login("cash_a")
    await b.enroll_and_login("cash_b")
    yield a, b
    await a.close()
    await b.close()


async def test_offline_and_online_work_converge(
    pair: tuple[Station, Station], central: Central
) -> None:
    a, b = pair
    a.offline()
    reg_a = await a.register(ZHANG)
    card_a = await a.issue_card(reg_a.patient_id, "50", "cash")
    await a.top_up(card_a.card_no, "100.50", "wechat")
    await a.top_up(card_a.card_no, "20", "alipay")
    view = a.view(reg_a.patient_id)
    assert view is not None and view.pending and view.balance_fen == 5000 + 10050 + 2000
    assert view.confirmed_balance_fen == 0
    assert a.store.outbox_stats().pending == 4
    with pytest.raises(Offline):
        await a.engine.sync_once()  # offline: fails, loses nothing
    assert a.store.outbox_stats().pending == 4

    reg_b = await b.register(LI)
    card_b = await b.issue_card(reg_b.patient_id, "10", "bank_card")
    await b.top_up(card_b.card_no, "300", "cash")
    await b.top_up(card_b.card_no, "0.01", "cash")
    await b.engine.sync_once()
    assert b.store.outbox_stats().pending == 0

    a.online()
    report = await a.engine.sync_once()
    assert report.pushed == 4 and report.rejected == 0
    await b.engine.sync_once()

    server = server_rows(central)
    assert replica_rows(a.store) == server
    assert replica_rows(b.store) == server
    assert len(server["patients"]) == 2 and len(server["transfers"]) == 6
    assert pending_rows(a.store) == 0 and pending_rows(b.store) == 0
    assert a.store.outbox_stats().pending == 0 and a.store.issues() == []
    view_b = b.view(reg_a.patient_id)
    assert view_b is not None and view_b.balance_fen == 17050 and not view_b.pending
    # card and receipt numbers made offline and online never collide
    receipts = [t["receipt_no"] for t in server["transfers"]]
    assert len(set(receipts)) == len(receipts)


class LoseFirstPushResponse(httpx.AsyncBaseTransport):
    """Delivers the first push to the server, then drops its response."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.dropped = 0
        self.armed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path == "/sync/push" and self.armed and self.dropped == 0:
            await response.aread()
            self.dropped += 1
            raise httpx.ReadError("connection reset after the server answered", request=request)
        return response


async def test_lost_push_response_is_retried_and_applied_once(
    central: Central, tmp_path: Path
) -> None:
    central.clerk("cash_a", ["cashier"])
    faulty = LoseFirstPushResponse(central.transport())
    a = Station(central, tmp_path / "a", "window-a", transport=faulty)
    await a.enroll_and_login("cash_a")  # its shift is opened and pushed
    faulty.armed = True
    reg = await a.register(ZHANG)
    card = await a.issue_card(reg.patient_id, "50", "cash")
    await a.top_up(card.card_no, "88", "cash")
    with pytest.raises(Offline):
        await a.engine.sync_once()
    assert faulty.dropped == 1
    assert a.store.outbox_stats().pending == 3  # the client never heard back
    report = await a.engine.sync_once()
    assert report.pushed == 3  # the replays return the stored results
    with central.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ops)).scalar() == 3 + 1  # + shift
        assert conn.execute(select(func.count()).select_from(transfers)).scalar() == 2
    assert replica_rows(a.store) == server_rows(central)
    assert a.view(reg.patient_id).balance_fen == 13800
    await a.close()


async def test_same_id_registered_on_both_ends_in_sync_issues(
    pair: tuple[Station, Station], central: Central
) -> None:
    a, b = pair
    a.offline()
    reg_a = await a.register(ZHANG)
    card_a = await a.issue_card(reg_a.patient_id, "50", "cash")
    await a.top_up(card_a.card_no, "30", "cash")

    reg_b = await b.register(ZHANG)  # same ID number, online first
    card_b = await b.issue_card(reg_b.patient_id, "20", "cash")
    await b.engine.sync_once()

    a.online()
    report = await a.engine.sync_once()
    issues = {i["summary"]["kind"]: i for i in a.desk.issues()}
    # the registration was mapped onto B's patient: not an error, but the clerk is told
    assert issues["register_patient"]["kind"] == "modified"
    assert issues["register_patient"]["code"] == "patient_mapped"
    # B already gave that patient a card: A's card and its payments were refused
    assert issues["issue_card"]["kind"] == "rejected"
    assert issues["issue_card"]["code"] == "patient_has_active_card"
    assert issues["top_up"]["code"] == "card_unknown"
    assert report.rejected == 2
    # the refused effects left A's view; the patient is B's record, balance as the server has it
    view = a.view(reg_a.patient_id)
    assert view is not None and view.patient.patient_id == reg_b.patient_id
    assert view.balance_fen == 2000 and [c.card_no for c in view.cards] == [card_b.card_no]
    assert replica_rows(a.store) == server_rows(central)
    assert pending_rows(a.store) == 0
    # nothing lost: the refused ops are still in the outbox, and the issue names the money
    money = json.loads(json.dumps(issues["top_up"]["summary"]["payload"]))
    assert money["amount_fen"] == 3000


async def test_top_up_to_card_cancelled_on_server_lands_in_sync_issues(
    central: Central, tmp_path: Path
) -> None:
    central.clerk("cash_a", ["cashier"])
    central.clerk("boss", ["supervisor"])
    a = Station(central, tmp_path / "a", "window-a")
    s = Station(central, tmp_path / "s", "supervisor-desk")
    await a.enroll_and_login("cash_a")
    await s.enroll_and_login("boss")
    reg = await a.register(ZHANG)
    card = await a.issue_card(reg.patient_id, "50", "cash")
    await a.engine.sync_once()

    a.offline()
    await a.top_up(card.card_no, "200", "cash")
    assert a.view(reg.patient_id).balance_fen == 25000

    await s.engine.sync_once()
    await s.cancel_card(card.card_no, "卡片损坏")
    await s.engine.sync_once()

    a.online()
    report = await a.engine.sync_once()
    assert report.rejected == 1
    [issue] = a.desk.issues()
    assert issue["kind"] == "rejected" and issue["code"] == "card_not_active"
    view = a.view(reg.patient_id)
    assert view.balance_fen == 5000  # the refused top-up left the view
    assert view.cards[0].status == "cancelled"
    assert a.store.outbox_stats().open_issues == 1
    assert a.desk.resolve_issue(issue["issue_id"], "退还现金 200 元")
    assert a.desk.issues() == []
    await a.close()
    await s.close()
