"""One contract for DeskState: the replica, the server on SQLite, the server on
PostgreSQL and the tests' fake answer the same questions the same way, so a
rule decided at the window is decided the same at the server."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from domain.cards import CardRow, CardStatus
from domain.cashier.issue_card import IssueCard, Prepayment
from domain.cashier.top_up import TopUp
from domain.commands import Decision, decide
from domain.errors import Rejection
from domain.leases import NUMBER_BLOCK, leased, leased_quantity, number_block
from domain.ledger import TransferRow, balance
from domain.numbers import Series, card_no_for, receipt_no_for
from domain.patients import PatientAliasRow, PatientRow, get_patient
from domain.patients.register import RegisterPatient
from domain.rows import Row
from domain.state import Actor, DeskState, OpContext, Policy
from local_db.store import LocalStore
from server.db import leases, writer
from server.raw import RawSql, upsert_sql
from server.state import ServerState
from tests.conftest import _url
from tests.fake_state import FakeState
from tests.harness import Central

DEVICE = "dev-1"
AT = "2026-03-01T09:30:00+08:00"
CARDS = (100_000_000, 100_000_049)
RECEIPTS = (1, 50)
POLICY = Policy(min_first_prepayment_fen=2_000)


def patient(pid: str, doc_no: str, name: str = "张三丰") -> PatientRow:
    return PatientRow(
        patient_id=pid,
        name=name,
        sex="F",
        birth_date="1949-12-31",
        doc_type="resident_id",
        doc_no=doc_no,
        phone="13812345678",
        address="北京",
        registered_at=AT,
        registered_by="clerk-1",
        registered_device=DEVICE,
    )


def card(card_no: str, pid: str, status: CardStatus = CardStatus.ACTIVE) -> CardRow:
    return CardRow(
        card_no=card_no,
        patient_id=pid,
        status=status.value,
        issued_at=AT,
        issued_by="clerk-1",
        issued_device=DEVICE,
        status_changed_at=AT,
    )


def transfer(tid: str, amount: int, credit: str, receipt: str | None, debit: str) -> TransferRow:
    return TransferRow(
        transfer_id=tid,
        debit_account=debit,
        credit_account=credit,
        amount_fen=amount,
        kind="top_up",
        method="cash",
        patient_id="P-1",
        card_no=None,
        receipt_no=receipt,
        clerk_id="clerk-1",
        device_id=DEVICE,
        at=AT,
        op_id="op-" + tid,
    )


CARD_1, CARD_2, CARD_3 = (card_no_for(CARDS[0] + i) for i in range(3))
ROWS: list[Row] = [
    patient("P-1", "11010519491231002X"),
    patient("P-2", "440524188001010014", "李单"),
    PatientAliasRow(alias_id="P-9", patient_id="P-1", mapped_at=AT),
    card(CARD_1, "P-1"),
    card(CARD_2, "P-2", CardStatus.LOST),
    transfer("T-1", 5_000, "deposit:P-1", receipt_no_for(1), "drawer:dev-1:cash"),
    transfer("T-2", 1_234, "deposit:P-1", receipt_no_for(2), "clearing:wechat"),
    transfer("T-3", 700, "refund:x", None, "deposit:P-1"),
]

Filled = Callable[[list[Row]], contextlib.AbstractContextManager[DeskState]]


@contextlib.contextmanager
def fake(rows: list[Row]) -> Iterator[DeskState]:
    state = FakeState(the_policy=POLICY)
    for row in rows:
        state.put(row)
    state.granted.append(number_block("L-1", Series.CARD.value, *CARDS, DEVICE, AT))
    state.granted.append(number_block("L-2", Series.RECEIPT.value, *RECEIPTS, DEVICE, AT))
    yield state


def replica_of(tmp_path: Path) -> Filled:
    @contextlib.contextmanager
    def filled(rows: list[Row]) -> Iterator[DeskState]:
        store = LocalStore(tmp_path / "replica.db")
        store.set_meta("device_id", DEVICE)
        store.set_policy(POLICY)
        store.add_lease(number_block("L-1", Series.CARD.value, *CARDS, DEVICE, AT))
        store.add_lease(number_block("L-2", Series.RECEIPT.value, *RECEIPTS, DEVICE, AT))
        store.apply_pull(
            [(row.table, row.model_dump(), row.key_value) for row in rows],
            next_cursor=len(rows),
            epoch="E",
            device_last_seq=0,
        )
        try:
            yield store.state
        finally:
            store.close()

    return filled


def server_of(url: str) -> Filled:
    @contextlib.contextmanager
    def filled(rows: list[Row]) -> Iterator[DeskState]:
        central = Central(url)
        try:
            with writer(central.engine) as conn, conn.begin():
                sql = RawSql(conn)
                for row in rows:
                    statement, values = upsert_sql(type(row))
                    sql.execute(statement, values(row))
                for i, (series, (first, last)) in enumerate(
                    ((Series.CARD, CARDS), (Series.RECEIPT, RECEIPTS))
                ):
                    conn.execute(
                        insert(leases).values(
                            lease_id=f"B-{i}",
                            kind=NUMBER_BLOCK,
                            resource=series.value,
                            first=first,
                            last=last,
                            device_id=DEVICE,
                            granted_at=AT,
                        )
                    )
                yield ServerState(sql, POLICY)
        finally:
            central.close()

    return filled


@pytest.fixture(params=["fake", "replica", "server-sqlite", "server-postgresql"])
def filled(request: pytest.FixtureRequest, tmp_path: Path) -> Filled:
    kind = request.param
    if kind == "fake":
        return fake
    if kind == "replica":
        return replica_of(tmp_path)
    return server_of(_url(kind.removeprefix("server-"), tmp_path))


def test_rows_by_key_and_by_columns(filled: Filled) -> None:
    with filled(ROWS) as state:
        assert state.get(PatientRow, "P-1") == ROWS[0]
        assert state.get(PatientRow, "P-404") is None
        assert state.get(PatientAliasRow, "P-9") == ROWS[2]
        assert get_patient(state, "P-9") == ROWS[0]
        assert (
            state.find(PatientRow, doc_type="resident_id", doc_no="440524188001010014") == ROWS[1]
        )
        assert state.find(PatientRow, doc_type="passport", doc_no="440524188001010014") is None
        assert state.find(CardRow, patient_id="P-1", status="active") == ROWS[3]
        assert state.find(CardRow, patient_id="P-2", status="active") is None
        assert state.exists(TransferRow, receipt_no=receipt_no_for(2))
        assert not state.exists(TransferRow, receipt_no=receipt_no_for(3))
        assert not state.exists(CardRow, card_no=CARD_3)


def test_sums_and_balances(filled: Filled) -> None:
    with filled(ROWS) as state:
        assert state.sum(TransferRow, "amount_fen", credit_account="deposit:P-1") == 6_234
        assert state.sum(TransferRow, "amount_fen", debit_account="deposit:P-1") == 700
        assert state.sum(TransferRow, "amount_fen", credit_account="deposit:P-404") == 0
        assert state.sum(TransferRow, "amount_fen", pending=True, credit_account="deposit:P-1") == 0
        deposit = balance(state, "deposit:P-1")
        assert (deposit.confirmed_fen, deposit.fen, deposit.spendable_fen) == (5_534,) * 3
        assert balance(state, "drawer:dev-1:cash").fen == -5_000


def test_leases_and_policy(filled: Filled) -> None:
    with filled(ROWS) as state:
        assert [(x.first, x.last) for x in state.leases(NUMBER_BLOCK, "card", DEVICE)] == [CARDS]
        assert state.leases(NUMBER_BLOCK, "card", "dev-2") == []
        assert state.leases("bed_pool", "card", DEVICE) == []
        assert leased(state, NUMBER_BLOCK, "card", CARDS[0], DEVICE, AT)
        assert leased(state, NUMBER_BLOCK, "card", CARDS[1], DEVICE, AT)
        assert not leased(state, NUMBER_BLOCK, "card", CARDS[1] + 1, DEVICE, AT)
        assert leased(state, NUMBER_BLOCK, "receipt", 50, DEVICE)
        assert not leased(state, NUMBER_BLOCK, "receipt", 51, DEVICE)
        assert not leased(state, NUMBER_BLOCK, "card", CARDS[0], "dev-2")
        assert leased_quantity(state, NUMBER_BLOCK, "card", DEVICE) == 0
        assert state.policy() == POLICY


def test_look_ups_are_checked_against_the_row_model(filled: Filled) -> None:
    with filled(ROWS) as state:
        for bad in (
            lambda: state.find(PatientRow, nickname="x"),
            lambda: state.exists(CardRow, status=None),
            lambda: state.sum(TransferRow, "amount_fen; DROP TABLE x", credit_account="a"),
            lambda: state.find(PatientRow),
        ):
            with pytest.raises(ValueError):
                bad()


def _ctx(*roles: str) -> OpContext:
    return OpContext(Actor("clerk-1", frozenset(roles), DEVICE), AT, "op-new")


def _outcomes(state: DeskState) -> list[Decision | Rejection]:
    cashier = _ctx("cashier")
    commands: list[Any] = [
        TopUp(
            transfer_id="T-9",
            card_no=CARD_1,
            amount_fen=10_000,
            method="cash",
            receipt_no=receipt_no_for(3),
        ),
        TopUp(
            transfer_id="T-9", card_no=CARD_2, amount_fen=1, method="cash", receipt_no="R000000004"
        ),
        TopUp(
            transfer_id="T-1", card_no=CARD_1, amount_fen=1, method="cash", receipt_no="R000000004"
        ),
        TopUp(
            transfer_id="T-8", card_no=CARD_1, amount_fen=1, method="cash", receipt_no="R000000002"
        ),
        IssueCard(card_no=CARD_3, patient_id="P-9"),
        IssueCard(
            card_no=CARD_3,
            patient_id="P-2",
            prepayment=Prepayment(
                transfer_id="T-7", amount_fen=1_999, method="alipay", receipt_no="R000000005"
            ),
        ),
        IssueCard(card_no=card_no_for(CARDS[1] + 1), patient_id="P-2"),
        RegisterPatient(
            patient_id="P-3",
            name="张三丰",
            sex="F",
            birth_date="1949-12-31",
            doc_type="resident_id",
            doc_no="11010519491231002x",
            phone="13812345678",
        ),
    ]
    return [decide(state, command, cashier) for command in commands]


def test_the_same_commands_get_the_same_answers(filled: Filled) -> None:
    with filled(ROWS) as state:
        outcomes = _outcomes(state)
    with fake(ROWS) as reference:
        assert outcomes == _outcomes(reference)
    codes = [o.code if isinstance(o, Rejection) else o.outcome for o in outcomes]
    assert codes == [
        "applied",
        "card_lost",
        "transfer_exists",
        "receipt_number_used",
        "patient_has_active_card",
        "amount_below_minimum",
        "card_number_not_leased",
        "applied_modified",
    ]


# -- what only a workstation has: rows of operations still pending -----------


@pytest.fixture(params=["fake", "replica"])
def with_pending(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeskState]:
    pending_rows: list[Row] = [
        transfer("T-P1", 300, "deposit:P-1", receipt_no_for(10), "drawer:dev-1:cash"),
        transfer("T-P2", 200, "x", receipt_no_for(11), "deposit:P-1"),
        # offline registration of a document the server already has: the pulled
        # row and the pending one stand side by side until the rebase
        patient("P-5", "11010519491231002X", "张三"),
    ]
    if request.param == "fake":
        state = FakeState(the_policy=POLICY)
        for row in ROWS:
            state.put(row)
        for row in pending_rows:
            state.put(row, pending=True)
        yield state
        return
    store = LocalStore(tmp_path / "replica.db")
    store.apply_pull(
        [(row.table, row.model_dump(), row.key_value) for row in ROWS],
        next_cursor=1,
        epoch="E",
        device_last_seq=0,
    )
    with store.transaction():
        store._write_rows("op-pending", pending_rows)
    yield store.state
    store.close()


def test_pending_rows_count_apart_and_confirmed_rows_come_first(with_pending: DeskState) -> None:
    state = with_pending
    deposit = balance(state, "deposit:P-1")
    assert deposit.confirmed_fen == 5_534
    assert (deposit.pending_in_fen, deposit.pending_out_fen) == (300, 200)
    assert deposit.fen == 5_634 and deposit.spendable_fen == 5_334
    found = state.find(PatientRow, doc_type="resident_id", doc_no="11010519491231002X")
    assert found is not None and found.patient_id == "P-1"
    assert state.get(PatientRow, "P-5") is not None
