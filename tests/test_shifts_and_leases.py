"""Money belongs to a shift (a drawer account per shift and payment method),
and leases are general: a range, a set of ids or a quantity, granted and
checked by the server, in force until returned or expired."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from domain.cards import CardRow
from domain.cashier.issue_card import IssueCard, Prepayment
from domain.cashier.top_up import TopUp
from domain.commands import Decision, decide
from domain.errors import Rejection
from domain.leases import NUMBER_BLOCK, Lease, leased, leased_quantity, number_block
from domain.ledger import TransferRow, balance
from domain.numbers import card_no_for, receipt_no_for
from domain.shifts import OpenShift, ShiftRow, ShiftStatus, drawer_account
from domain.state import Actor, OpContext
from server.db import leases, transfers
from tests.fake_state import FakeState
from tests.harness import Central, cashier_station
from workstation.desk import RegistrationDraft

DEVICE, OTHER = "dev-1", "dev-2"
AT = "2026-03-01T09:30:00+08:00"
CARD = card_no_for(100_000_000)
ZHANG = RegistrationDraft("张三丰", "F", "", "resident_id", "11010519491231002X", "13812345678")


def ctx(clerk: str = "clerk-1", *roles: str, device: str = DEVICE) -> OpContext:
    return OpContext(Actor(clerk, frozenset(roles or ("cashier",)), device), AT, "op-1")


def state_with_patient() -> FakeState:
    from domain.patients.register import RegisterPatient

    state = FakeState()
    state.granted.append(number_block("L1", "card", 100_000_000, 100_000_099, DEVICE, AT))
    state.granted.append(number_block("L2", "receipt", 1, 100, DEVICE, AT))
    for command in (
        RegisterPatient(
            patient_id="P-1",
            name="张三丰",
            sex="F",
            birth_date="1949-12-31",
            doc_type="resident_id",
            doc_no="11010519491231002X",
            phone="13812345678",
        ),
        IssueCard(card_no=CARD, patient_id="P-1"),
        OpenShift(shift_id="S-1"),
    ):
        outcome = decide(state, command, ctx())
        assert isinstance(outcome, Decision), outcome
        state.apply(outcome)
    return state


def top_up(shift_id: str | None, receipt: int = 1, method: str = "cash") -> TopUp:
    return TopUp(
        transfer_id=f"T-{receipt}",
        card_no=CARD,
        amount_fen=10_000,
        method=method,
        receipt_no=receipt_no_for(receipt),
        shift_id=shift_id,
    )


# -- shifts --------------------------------------------------------------------


def test_money_lands_in_the_shift_drawer_of_its_payment_method() -> None:
    state = state_with_patient()
    for receipt, method in enumerate(("cash", "wechat", "cash", "alipay"), start=1):
        outcome = decide(state, top_up("S-1", receipt, method), ctx())
        assert isinstance(outcome, Decision), outcome
        state.apply(outcome)
    assert balance(state, drawer_account("S-1", "cash")).fen == -20_000  # an asset: debits
    assert balance(state, drawer_account("S-1", "wechat")).fen == -10_000
    assert balance(state, drawer_account("S-1", "alipay")).fen == -10_000
    assert balance(state, "deposit:P-1").fen == 40_000


def test_a_first_prepayment_lands_in_the_shift_drawer_too() -> None:
    state = state_with_patient()
    card = state.get(CardRow, CARD)
    assert card is not None
    state.put(card.model_copy(update={"status": "cancelled"}))  # a new card is due
    issue = IssueCard(
        card_no=card_no_for(100_000_001),
        patient_id="P-1",
        prepayment=Prepayment(
            transfer_id="T-9",
            amount_fen=5_000,
            method="bank_card",
            receipt_no="R000000009",
            shift_id="S-1",
        ),
    )
    outcome = decide(state, issue, ctx())
    assert isinstance(outcome, Decision), outcome
    [transfer] = [row for row in outcome.rows if isinstance(row, TransferRow)]
    assert transfer.debit_account == "shift:S-1:bank_card"


def test_money_of_release_0_1_without_a_shift_lands_where_it_did() -> None:
    state = state_with_patient()
    outcome = decide(state, top_up(None), ctx())
    assert isinstance(outcome, Decision)
    [transfer] = outcome.rows
    assert isinstance(transfer, TransferRow) and transfer.debit_account == "drawer:dev-1:cash"


@pytest.mark.parametrize(
    ("shift", "context", "code"),
    [
        ("S-404", ctx(), "shift_unknown"),
        ("S-1", ctx("clerk-2"), "shift_unknown"),  # a colleague's shift
        ("S-1", ctx(device=OTHER), "shift_unknown"),  # the same clerk, another window
    ],
)
def test_money_only_in_the_clerk_s_own_open_shift_here(
    shift: str, context: OpContext, code: str
) -> None:
    state = state_with_patient()
    state.granted.append(number_block("L3", "receipt", 1, 100, OTHER, AT))
    outcome = decide(state, top_up(shift), context)
    assert isinstance(outcome, Rejection) and outcome.code == code
    assert "{" not in outcome.message("zh") and "{" not in outcome.message("en")


def test_a_closed_shift_takes_no_money() -> None:
    state = state_with_patient()
    closed = state.get(ShiftRow, "S-1")
    assert closed is not None
    state.put(closed.model_copy(update={"status": ShiftStatus.CLOSED.value, "closed_at": AT}))
    outcome = decide(state, top_up("S-1"), ctx())
    assert isinstance(outcome, Rejection) and outcome.code == "shift_closed"


def test_one_open_shift_per_clerk_and_workstation() -> None:
    state = state_with_patient()
    again = decide(state, OpenShift(shift_id="S-2"), ctx())
    assert isinstance(again, Rejection) and again.code == "shift_already_open"
    assert isinstance(decide(state, OpenShift(shift_id="S-1"), ctx("clerk-2")), Rejection)
    elsewhere = decide(state, OpenShift(shift_id="S-3"), ctx(device=OTHER))
    assert isinstance(elsewhere, Decision)
    forbidden = decide(state, OpenShift(shift_id="S-4"), ctx("clerk-9", "admin"))
    assert isinstance(forbidden, Rejection) and forbidden.code == "role_forbidden"


# -- leases ----------------------------------------------------------------------


def test_a_lease_holds_until_returned_or_expired_at_the_operation_s_time() -> None:
    lease = Lease(
        lease_id="L",
        kind="bed_pool",
        resource="ward-3",
        device_id=DEVICE,
        granted_at="2026-03-01T08:00:00+08:00",
        ids=frozenset({"3-01", "3-02"}),
        returned_at="2026-03-01T12:00:00+08:00",
        expires_at="2026-03-02T08:00:00+08:00",
    )
    assert lease.covers("3-01") and not lease.covers("3-03") and not lease.covers(301)
    assert lease.in_force_at("2026-03-01T11:59:59+08:00")
    assert lease.in_force_at("2026-03-01T03:59:59+00:00")  # the same moment, another offset
    assert not lease.in_force_at("2026-03-01T04:00:00+00:00")
    assert not lease.in_force_at(None)  # now: returned long ago
    budget = Lease("B", "refund_budget", "shift", DEVICE, AT, quantity=200_000)
    state = FakeState(granted=[lease, budget])
    assert leased(state, "bed_pool", "ward-3", "3-02", DEVICE, "2026-03-01T10:00:00+08:00")
    assert not leased(state, "bed_pool", "ward-3", "3-02", DEVICE, "2026-03-01T13:00:00+08:00")
    assert not leased(state, "bed_pool", "ward-3", "3-02", OTHER, "2026-03-01T10:00:00+08:00")
    assert leased_quantity(state, "refund_budget", "shift", DEVICE, AT) == 200_000


@given(
    first=st.integers(min_value=0, max_value=10**9),
    size=st.integers(min_value=1, max_value=10_000),
    probe=st.integers(min_value=-5, max_value=10_005),
)
def test_a_number_block_covers_exactly_its_range(first: int, size: int, probe: int) -> None:
    block = number_block("L", "card", first, first + size - 1, DEVICE, AT)
    assert block.covers(first + probe) == (0 <= probe < size)


async def test_the_server_grants_number_blocks_and_refuses_other_asks(
    central_sqlite: Central, tmp_path: Path
) -> None:
    station = await cashier_station(central_sqlite, tmp_path)
    client = station.client
    block = await client.lease(NUMBER_BLOCK, "card", 25)
    assert (block.kind, block.resource, block.device_id) == (
        NUMBER_BLOCK,
        "card",
        station.store.device_id,
    )
    assert block.first is not None and block.last == block.first + 24
    with central_sqlite.engine.connect() as conn:
        row = conn.execute(select(leases).where(leases.c.lease_id == block.lease_id)).one()
    assert row.granted_by == station.desk.clerk.clerk_id  # type: ignore[union-attr]
    for kind, resource, count, status, code in (
        ("parking", "card", 1, 422, "lease_kind_unknown"),
        (NUMBER_BLOCK, "visa", 1, 422, "lease_resource_unknown"),
        (NUMBER_BLOCK, "card", 10_001, 422, "lease_count"),
    ):
        response = await client._http.post(
            "/leases",
            json={"kind": kind, "resource": resource, "count": count},
            headers=client._headers(),
        )
        assert response.status_code == status and response.json()["code"] == code, response.text
    # what release 0.1's workstations ask for still works
    old = await client._http.post(
        "/leases/numbers", json={"series": "receipt", "count": 10}, headers=client._headers()
    )
    assert old.status_code == 200 and old.json()["last"] - old.json()["first"] == 9
    await station.close()


async def test_the_login_opens_a_shift_that_its_money_belongs_to(
    central_sqlite: Central, tmp_path: Path
) -> None:
    station = await cashier_station(central_sqlite, tmp_path)
    shift = await station.desk.current_shift()
    assert shift is not None
    reg = await station.register(ZHANG)
    card = await station.issue_card(reg.patient_id, "20", "wechat")
    await station.top_up(card.card_no, "30", "cash")
    await station.engine.sync_once()
    with central_sqlite.engine.connect() as conn:
        debits = dict(conn.execute(select(transfers.c.method, transfers.c.debit_account)).all())
    assert debits == {"wechat": f"shift:{shift}:wechat", "cash": f"shift:{shift}:cash"}
    # a logout does not close the shift: the next login carries on in it
    await station.desk.logout()
    await station.desk.login("cash", "secret-123")
    assert await station.desk.current_shift() == shift
    # and so does an offline login
    await station.desk.logout()
    station.offline()
    clerk = await station.desk.login("cash", "secret-123")
    assert clerk.mode == "offline" and await station.desk.current_shift() == shift
    await station.close()


async def test_a_shift_not_yet_pushed_reaches_the_server_ahead_of_its_money(
    central_sqlite: Central, tmp_path: Path
) -> None:
    """A second clerk logs in at the window just before the link goes down:
    their new shift waits in the outbox with the money taken in it, and
    reaches the server first when the link is back."""
    station = await cashier_station(central_sqlite, tmp_path)
    reg = await station.register(ZHANG)
    await station.engine.sync_once()
    central_sqlite.clerk("cash2", ["cashier"])
    await station.desk.logout()
    await station.desk.login("cash2", "secret-123")
    second = await station.desk.current_shift()
    assert second is not None
    station.offline()
    card = await station.issue_card(reg.patient_id, "50", "cash")
    waiting = [e.op.kind for e in reversed(station.store.outbox()) if e.state == "pending"]
    assert waiting == ["open_shift", "issue_card"]
    station.online()
    await station.engine.sync_once()
    assert station.store.outbox_stats().pending == 0 and not station.store.issues()
    assert station.view(reg.patient_id).confirmed_balance_fen == 5_000
    with central_sqlite.engine.connect() as conn:
        [debit] = conn.execute(select(transfers.c.debit_account)).scalars().all()
    assert debit == f"shift:{second}:cash" and card.card_no is not None
    await station.close()


async def test_the_login_does_not_wait_for_the_store_but_money_waits_for_the_shift(
    central_sqlite: Central, tmp_path: Path
) -> None:
    """A bootstrap may hold the store for seconds: the clerk is logged in at
    once, and the shift their money belongs to is opened when the store is free."""
    station = await cashier_station(central_sqlite, tmp_path)
    central_sqlite.clerk("cash2", ["cashier"])
    await station.desk.logout()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with station.store.transaction():
            held.set()
            release.wait(60)  # released below, once the login is seen done

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        await station.desk.login("cash2", "secret-123")
        assert holder.is_alive()  # logged in while the store is still held
        assert station.desk.shift_id is None  # not yet: the store is held
        waiting = asyncio.create_task(station.desk.current_shift())
        await asyncio.sleep(0.2)
        assert not waiting.done()
    finally:
        release.set()
        holder.join()
    shift = await waiting
    assert (
        shift is not None
        and station.store.open_shift(
            station.desk.clerk.clerk_id,  # type: ignore[union-attr]
            station.store.device_id,
        )
        == shift
    )
    await station.close()
