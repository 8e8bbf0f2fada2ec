"""The workstation's SQLite replica: migrations, the command + outbox
transaction, pulls and the rebase, Sync issues, and patient search."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ulid import ULID

from domain.areas import ROW_TYPES
from domain.cashier.issue_card import IssueCard, Prepayment
from domain.cashier.top_up import TopUp
from domain.commands import Command
from domain.errors import DomainError
from domain.identity import check_char
from domain.leases import number_block
from domain.numbers import Series, card_no_for
from domain.patients import get_patient
from domain.patients.register import RegisterPatient
from domain.state import Actor
from local_db.pinyin import name_terms, readings
from local_db.schema import MIGRATION_SQL, schema_version
from local_db.store import CommandRejected, Executed, LocalStore, ServerResult

DEVICE = "dev-1"
CASHIER = Actor("clerk-1", frozenset({"cashier"}), DEVICE)
GB_EXAMPLE = "11010519491231002X"  # female, 1949-12-31
MALE_EXAMPLE = "440524188001010014"  # male, 1880-01-01
ZENG_ID = "43010219900101123" + check_char("43010219900101123")  # male, 1990-01-01


def open_store(path: Path) -> LocalStore:
    store = LocalStore(path)
    store.set_meta("device_id", DEVICE)
    granted = "2024-01-01T00:00:00+00:00"
    store.add_lease(number_block("L-card", "card", 100_000_000, 100_000_009, DEVICE, granted))
    store.add_lease(number_block("L-receipt", "receipt", 1, 10, DEVICE, granted))
    return store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    s = open_store(tmp_path / "replica.db")
    yield s
    s.close()


def count(store: LocalStore, table: str, where: str = "1") -> int:
    return int(store.conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}").fetchone()[0])


def register(
    store: LocalStore,
    name: str = "张三丰",
    doc_no: str = GB_EXAMPLE,
    sex: str = "F",
    birth_date: str = "1949-12-31",
    phone: str = "13812345678",
) -> str:
    patient_id = str(ULID())
    store.execute(
        CASHIER,
        lambda _s: RegisterPatient(
            patient_id=patient_id,
            name=name,
            sex=sex,
            birth_date=birth_date,
            doc_type="resident_id",
            doc_no=doc_no,
            phone=phone,
        ),
    )
    return patient_id


def issue_card(store: LocalStore, patient_id: str, prepay_fen: int | None = None) -> Executed:
    def build(s: LocalStore) -> Command:
        prepayment = None
        if prepay_fen is not None:
            prepayment = Prepayment(
                transfer_id=str(ULID()),
                amount_fen=prepay_fen,
                method="cash",
                receipt_no=s.take_number(Series.RECEIPT),
            )
        return IssueCard(
            card_no=s.take_number(Series.CARD), patient_id=patient_id, prepayment=prepayment
        )

    return store.execute(CASHIER, build)


def top_up_builder(card_no: str, amount_fen: int = 10_000) -> Callable[[LocalStore], Command]:
    def build(s: LocalStore) -> Command:
        return TopUp(
            transfer_id=str(ULID()),
            card_no=card_no,
            amount_fen=amount_fen,
            method="wechat",
            receipt_no=s.take_number(Series.RECEIPT),
        )

    return build


def boom() -> None:
    raise RuntimeError("power cut between the rows and the outbox")


# -- migrations and pragmas ---------------------------------------------------


def test_migrations_from_empty_create_the_tables(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "fresh.db")
    try:
        tables = {
            r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        expected = {rt.table for rt in ROW_TYPES} | {
            "outbox",
            "pending_effects",
            "leases",
            "sync_state",
            "sync_issues",
            "clerk_cache",
            "patient_search",
        }
        assert expected <= tables
        triggers = {
            r[0]
            for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        }
        assert {
            "patients_search_insert",
            "patients_search_delete",
            "patients_search_update",
        } <= triggers
        indexes = {
            r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        # the server's indexes, and the ones only the windows' own look-ups need
        for row_type in ROW_TYPES:
            assert {i[0] for i in row_type.indexes + row_type.replica_indexes} <= indexes
        assert "transfers_patient" in indexes
        assert schema_version(store.conn) == list(MIGRATION_SQL)
    finally:
        store.close()


def test_journal_mode_is_wal_and_synchronous_is_full(store: LocalStore) -> None:
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_reopening_applies_no_migration_twice(tmp_path: Path) -> None:
    path = tmp_path / "replica.db"
    first = open_store(path)
    patient_id = register(first)
    first.close()
    for _ in range(2):
        again = LocalStore(path)
        try:
            rows = again.conn.execute(
                "SELECT name, COUNT(*) FROM _sqlite_migrations GROUP BY migration_set, name"
            ).fetchall()
            assert [tuple(r) for r in rows] == [(name, 1) for name in MIGRATION_SQL]
            # the data and the search index survived
            assert get_patient(again.state, patient_id) is not None
            assert [h.patient_id for h in again.search("zsf")] == [patient_id]
        finally:
            again.close()


# -- a command and its outbox entry: one transaction --------------------------


def test_execute_writes_rows_and_exactly_one_outbox_row(store: LocalStore) -> None:
    patient_id = register(store)
    assert count(store, "patients", "pending_op IS NOT NULL") == 1
    [entry] = store.outbox()
    assert entry.op.kind == "register_patient" and entry.state == "pending"
    assert entry.op.clerk_id == "clerk-1" and entry.clerk_roles == frozenset({"cashier"})
    assert count(store, "pending_effects") == 1

    executed = issue_card(store, patient_id, prepay_fen=5_000)
    assert count(store, "outbox") == 2
    assert executed.client_seq == 2
    assert count(store, "cards", f"pending_op = '{executed.op_id}'") == 1
    assert count(store, "transfers", f"pending_op = '{executed.op_id}'") == 1
    assert count(store, "outbox", f"op_id = '{executed.op_id}'") == 1
    # the payload in the outbox is exactly what will be pushed
    assert store.outbox(1)[0].op == executed.op
    assert executed.op.payload == executed.command.model_dump_json()
    assert store.numbers_left(Series.RECEIPT) == 9
    assert store.numbers_left(Series.CARD) == 9


def test_a_commit_waits_while_a_checkpoint_holds_the_log(store: LocalStore) -> None:
    """A TRUNCATE checkpoint (the engine's, after a bootstrap) holds the
    replica's write lock for a moment. A commit meanwhile waits for it, as for
    any writer, instead of failing at its first write ("database is locked":
    SQLite calls no busy handler for a transaction that has read already)."""
    checkpoint = sqlite3.connect(store.path, check_same_thread=False)
    checkpoint.execute("BEGIN IMMEDIATE")  # holds the write lock, as the checkpoint does
    released = threading.Timer(0.3, checkpoint.rollback)
    released.start()
    try:
        patient_id = register(store)  # reads (the rule), then writes
    finally:
        released.join()
        checkpoint.close()
    assert count(store, "patients", f"patient_id = '{patient_id}'") == 1
    assert count(store, "outbox") == 1


def _snapshot_counts(store: LocalStore) -> dict[str, int]:
    tables = [rt.table for rt in ROW_TYPES] + ["outbox", "pending_effects", "patient_search"]
    return {t: count(store, t) for t in tables}


def test_failure_between_rows_and_outbox_leaves_neither_for_a_top_up(store: LocalStore) -> None:
    patient_id = register(store)
    card = issue_card(store, patient_id).decision.result["card_no"]
    before = _snapshot_counts(store)
    receipts_left = store.numbers_left(Series.RECEIPT)
    next_receipt = store.peek_number(Series.RECEIPT)

    store._fail_before_outbox = boom
    with pytest.raises(RuntimeError, match="power cut"):
        store.execute(CASHIER, top_up_builder(card))

    assert _snapshot_counts(store) == before
    assert count(store, "transfers") == 0
    assert store.numbers_left(Series.RECEIPT) == receipts_left
    assert store.peek_number(Series.RECEIPT) == next_receipt
    assert not store.conn.in_transaction

    # and the store is usable again: the same receipt number goes to the next top-up
    store._fail_before_outbox = None
    executed = store.execute(CASHIER, top_up_builder(card))
    assert executed.command.receipt_no == next_receipt  # type: ignore[attr-defined]


def test_failure_between_rows_and_outbox_leaves_neither_for_a_registration(
    tmp_path: Path,
) -> None:
    path = tmp_path / "replica.db"
    store = open_store(path)
    store._fail_before_outbox = boom
    with pytest.raises(RuntimeError):
        register(store)
    store.close()
    # nothing was committed to the file either
    reopened = LocalStore(path)
    try:
        assert count(reopened, "patients") == 0
        assert count(reopened, "outbox") == 0
        assert count(reopened, "pending_effects") == 0
        assert count(reopened, "patient_search") == 0
        assert reopened.search("zsf") == []
    finally:
        reopened.close()


def test_failure_during_card_issue_gives_back_both_numbers(store: LocalStore) -> None:
    patient_id = register(store)
    cards_left = store.numbers_left(Series.CARD)
    receipts_left = store.numbers_left(Series.RECEIPT)
    store._fail_before_outbox = boom
    with pytest.raises(RuntimeError):
        issue_card(store, patient_id, prepay_fen=5_000)
    assert store.numbers_left(Series.CARD) == cards_left
    assert store.numbers_left(Series.RECEIPT) == receipts_left
    assert count(store, "cards") == 0 and count(store, "transfers") == 0
    assert count(store, "outbox") == 1  # only the registration


def test_rejected_command_writes_nothing(store: LocalStore) -> None:
    patient_id = register(store)
    issue_card(store, patient_id)
    before = _snapshot_counts(store)
    receipts_left = store.numbers_left(Series.RECEIPT)
    unknown_card = card_no_for(100_000_009)  # leased here, never issued
    with pytest.raises(CommandRejected) as caught:
        store.execute(CASHIER, top_up_builder(unknown_card))
    assert caught.value.rejection.code == "card_unknown"
    assert _snapshot_counts(store) == before
    assert store.numbers_left(Series.RECEIPT) == receipts_left


def test_rejected_by_role_writes_nothing(store: LocalStore) -> None:
    patient_id = register(store)
    card = issue_card(store, patient_id).decision.result["card_no"]
    before = _snapshot_counts(store)
    registrar = Actor("clerk-2", frozenset({"registrar"}), DEVICE)
    with pytest.raises(CommandRejected) as caught:
        store.execute(registrar, top_up_builder(card))
    assert caught.value.rejection.code == "role_forbidden"
    assert _snapshot_counts(store) == before


def test_numbers_exhausted_in_build_writes_nothing(store: LocalStore) -> None:
    patient_id = register(store)
    card = issue_card(store, patient_id).decision.result["card_no"]
    for _ in range(store.numbers_left(Series.RECEIPT)):
        store.execute(CASHIER, top_up_builder(card, 100))
    before = _snapshot_counts(store)
    with pytest.raises(DomainError) as caught:
        store.execute(CASHIER, top_up_builder(card, 100))
    assert caught.value.code == "numbers_exhausted"
    assert _snapshot_counts(store) == before


# -- pull and rebase ----------------------------------------------------------


def _pulled(executed: list[Executed]) -> list[tuple[str, dict[str, Any] | None, str]]:
    """The rows the server would send back for these ops (it decided the same)."""
    return [
        (row.table, row.model_dump(), row.key_value) for e in executed for row in e.decision.rows
    ]


def test_pull_confirms_ops_and_rebase_keeps_pending_on_top(store: LocalStore) -> None:
    patient_id = register(store)
    reg_op = store.outbox(1)[0].op
    card_exec = issue_card(store, patient_id, prepay_fen=5_000)
    card = card_exec.decision.result["card_no"]
    store.execute(CASHIER, top_up_builder(card, 12_345))  # client_seq 3, not on the server yet

    view = store.patient_view(patient_id)
    assert view is not None and view.balance_fen == 17_345 and view.confirmed_balance_fen == 0

    reg_rows = [
        (
            "patients",
            {
                k: store.conn.execute(f"SELECT {k} FROM patients").fetchone()[0]
                for k in ROW_TYPES[0].model_fields
            },
            patient_id,
        )
    ]
    applied = store.apply_pull(
        reg_rows + _pulled([card_exec]),
        next_cursor=3,
        epoch="E1",
        device_last_seq=2,
    )
    assert applied == 3

    view = store.patient_view(patient_id)
    assert view is not None
    assert view.confirmed_balance_fen == 5_000  # the server's word
    assert view.balance_fen == 5_000 + 12_345  # plus the still-pending top-up
    assert not view.pending and view.cards[0].pending is False
    assert [t.pending for t in view.transfers if t.amount_fen == 12_345] == [True]
    states = {e.op.client_seq: e.state for e in store.outbox()}
    assert states == {1: "confirmed", 2: "confirmed", 3: "pending"}
    assert reg_op.client_seq == 1
    assert store.outbox_stats().pending == 1
    assert [e.op.client_seq for e in store.ops_to_push(10)] == [3]
    assert store.get_meta("cursor") == "3"
    assert store.get_meta("epoch") == "E1"
    assert store.get_meta("device_last_seq") == "2"
    # only the pending top-up keeps a before-image
    assert count(store, "pending_effects") == 1
    assert count(store, "transfers", "pending_op IS NOT NULL") == 1


def test_pulled_rows_from_another_window_appear_under_pending_work(store: LocalStore) -> None:
    patient_id = register(store)
    card = issue_card(store, patient_id).decision.result["card_no"]
    store.execute(CASHIER, top_up_builder(card, 1_000))
    # the server confirms ops 1-2 and another window's top-up of 50 yuan
    rows = [
        (table, row, key)
        for table, row, key in _rows_in_replica(store)
        if table in ("patients", "cards")
    ]
    other = {
        "transfer_id": "T-other",
        "debit_account": "drawer:dev-2:cash",
        "credit_account": f"deposit:{patient_id}",
        "amount_fen": 5_000,
        "kind": "top_up",
        "method": "cash",
        "patient_id": patient_id,
        "card_no": card,
        "receipt_no": "R000000500",
        "clerk_id": "clerk-9",
        "device_id": "dev-2",
        "at": "2024-06-01T10:00:00+08:00",
        "op_id": "op-other",
    }
    store.apply_pull(
        [*rows, ("transfers", other, "T-other")], next_cursor=3, epoch="E1", device_last_seq=2
    )
    view = store.patient_view(patient_id)
    assert view is not None
    assert view.confirmed_balance_fen == 5_000
    assert view.balance_fen == 6_000


def _rows_in_replica(store: LocalStore) -> list[tuple[str, dict[str, Any], str]]:
    result = []
    for rt in ROW_TYPES:
        cols = list(rt.model_fields)
        for r in store.conn.execute(f"SELECT {', '.join(cols)} FROM {rt.table}"):
            row = dict(zip(cols, tuple(r), strict=True))
            result.append((rt.table, row, str(row[rt.key])))
    return result


def test_rejected_result_opens_an_issue_and_rebase_removes_its_effects(store: LocalStore) -> None:
    patient_id = register(store)
    card = issue_card(store, patient_id, prepay_fen=2_000).decision.result["card_no"]
    top = store.execute(CASHIER, top_up_builder(card, 30_000))
    assert store.patient_view(patient_id).balance_fen == 32_000  # type: ignore[union-attr]

    left = store.record_results(
        [
            ServerResult(op_id=store.outbox()[2].op.op_id, status="applied", server_seq=1),
            ServerResult(op_id=store.outbox()[1].op.op_id, status="applied", server_seq=3),
            ServerResult(
                op_id=top.op_id,
                status="rejected",
                code="card_not_active",
                params={"card_no": card, "status_zh": "已注销", "status_en": "cancelled"},
            ),
        ]
    )
    assert left is True
    [issue] = store.issues()
    assert issue["op_id"] == top.op_id
    assert issue["kind"] == "rejected" and issue["code"] == "card_not_active"
    assert issue["summary"]["kind"] == "top_up"
    assert issue["summary"]["payload"]["amount_fen"] == 30_000
    assert store.outbox_stats().open_issues == 1

    store.rebase()
    view = store.patient_view(patient_id)
    assert view is not None and view.balance_fen == 2_000
    assert store.transfer_by_receipt(top.command.receipt_no) is None  # type: ignore[attr-defined]
    assert count(store, "pending_effects", f"op_id = '{top.op_id}'") == 0
    state, answer = store.op_answer(top.op_id)
    assert state == "rejected" and answer is not None and answer["code"] == "card_not_active"
    assert top.op_id not in {e.op.op_id for e in store.ops_to_push(10)}
    # the acked ops stay in view (their rows are not pulled yet)
    assert store.outbox_stats().pending == 2
    assert count(store, "cards", "pending_op IS NOT NULL") == 1


def test_deferred_result_stays_pending(store: LocalStore) -> None:
    register(store)
    op = store.outbox()[0].op
    left = store.record_results(
        [ServerResult(op_id=op.op_id, status="deferred", code="sequence_gap")]
    )
    assert left is False
    assert store.op_answer(op.op_id)[0] == "pending"
    assert store.issues() == []


def test_replay_conflict_after_pull_lands_in_sync_issues(store: LocalStore) -> None:
    patient_id = register(store)
    card = issue_card(store, patient_id).decision.result["card_no"]
    top = store.execute(CASHIER, top_up_builder(card, 7_000))
    rows = [(t, r, k) for t, r, k in _rows_in_replica(store) if t in ("patients", "cards")]
    # the server says the card was cancelled meanwhile
    cancelled = [(t, {**r, "status": "cancelled"} if t == "cards" else r, k) for t, r, k in rows]
    store.apply_pull(cancelled, next_cursor=3, epoch="E1", device_last_seq=2)
    [issue] = store.issues()
    assert issue["op_id"] == top.op_id
    assert issue["kind"] == "replay_conflict" and issue["code"] == "card_not_active"
    assert store.patient_view(patient_id).balance_fen == 0  # type: ignore[union-attr]


# -- search -------------------------------------------------------------------


@pytest.fixture
def people(store: LocalStore) -> dict[str, str]:
    zhang = register(store)
    shan = register(
        store,
        name="单田芳",
        doc_no=MALE_EXAMPLE,
        sex="M",
        birth_date="1880-01-01",
        phone="13912345678",
    )
    zeng = register(
        store,
        name="曾国藩",
        doc_no=ZENG_ID,
        sex="M",
        birth_date="1990-01-01",
        phone="010-87654321",
    )
    card = issue_card(store, zhang).decision.result["card_no"]
    return {"zhang": zhang, "shan": shan, "zeng": zeng, "card": card}


def found(store: LocalStore, query: str) -> set[str]:
    return {hit.patient_id for hit in store.search(query)}


@pytest.mark.parametrize(
    ("query", "who"),
    [
        ("zsf", "zhang"),
        ("ZSF", "zhang"),
        ("zs", "zhang"),
        ("zhangsanfeng", "zhang"),
        ("zhangsan", "zhang"),
        ("张三丰", "zhang"),
        ("张三", "zhang"),
        ("三丰", "zhang"),
        ("shantianfang", "shan"),
        ("dantianfang", "shan"),
        ("stf", "shan"),
        ("dtf", "shan"),
        ("单田", "shan"),
        ("田芳", "shan"),
        ("zengguofan", "zeng"),
        ("cengguofan", "zeng"),
        ("zgf", "zeng"),
        ("cgf", "zeng"),
        ("曾国", "zeng"),
        ("国藩", "zeng"),
    ],
)
def test_search_by_name_and_pinyin(
    store: LocalStore, people: dict[str, str], query: str, who: str
) -> None:
    assert found(store, query) == {people[who]}


def test_search_by_id_prefix(store: LocalStore, people: dict[str, str]) -> None:
    assert found(store, "110105") == {people["zhang"]}
    assert found(store, "4401") == set()
    assert found(store, "440524") == {people["shan"]}
    assert found(store, GB_EXAMPLE.lower()) == {people["zhang"]}  # full number, lower-case x
    [hit] = store.search("110105")
    assert hit.matched == "id"


def test_search_by_phone_prefix(store: LocalStore, people: dict[str, str]) -> None:
    assert found(store, "1381234") == {people["zhang"]}
    assert found(store, "139") == {people["shan"]}
    [hit] = store.search("1391")
    assert hit.matched == "phone"


def test_search_by_landline_prefix_as_typed_in_digits(
    store: LocalStore, people: dict[str, str]
) -> None:
    # 曾国藩 was registered with "010-87654321"; at the window the clerk types digits
    assert found(store, "010876") == {people["zeng"]}


def test_search_by_card_number(store: LocalStore, people: dict[str, str]) -> None:
    [hit] = store.search(people["card"])
    assert hit.patient_id == people["zhang"]
    assert hit.matched == "card"
    assert hit.card_no == people["card"]
    assert hit.pending is True  # registered here, not yet confirmed


def test_search_finds_a_number_in_its_one_form(store: LocalStore, people: dict[str, str]) -> None:
    """Full-width digits (a Chinese input method) find the number; digits of
    another script find nothing (``domain.numbers.canonical_number``)."""
    wide = "".join(chr(ord(c) + 0xFEE0) for c in people["card"])
    [hit] = store.search(wide)
    assert hit.card_no == people["card"]
    arabic = "".join("٠١٢٣٤٥٦٧٨٩"[int(c)] for c in people["card"])
    assert store.search(arabic) == []
    assert store.search(arabic[:6]) == []


def test_search_hit_carries_the_patient(store: LocalStore, people: dict[str, str]) -> None:
    [hit] = store.search("stf")
    assert hit.name == "单田芳" and hit.doc_no == MALE_EXAMPLE and hit.phone == "13912345678"
    assert hit.card_no is None and hit.matched == "pinyin"


def test_search_no_match_and_empty(store: LocalStore, people: dict[str, str]) -> None:
    assert store.search("wxyz") == []
    assert store.search("") == []
    assert store.search("   ") == []
    assert store.search('"*') == []  # FTS syntax is not passed through


def test_search_respects_limit(store: LocalStore, people: dict[str, str]) -> None:
    other = register(
        store,
        name="张三",
        doc_no="11010519800101001" + check_char("11010519800101001"),
        sex="M",
        birth_date="1980-01-01",
        phone="13812345679",
    )
    assert found(store, "1381234567") == {people["zhang"], other}
    assert len(store.search("1381234567", limit=1)) == 1
    assert found(store, "zs") == {people["zhang"], other}
    assert len(store.search("zs", limit=1)) == 1


def test_search_index_follows_the_rebase(store: LocalStore) -> None:
    patient_id = register(store)
    op = store.outbox()[0].op
    store.record_results([ServerResult(op_id=op.op_id, status="rejected", code="x")])
    store.rebase()
    assert get_patient(store.state, patient_id) is None
    assert store.search("zsf") == []
    assert count(store, "patient_search") == 0


# -- pinyin -------------------------------------------------------------------


def test_name_terms_for_a_simple_name() -> None:
    terms = name_terms("张三丰").split()
    assert terms == ["张三丰", "三丰", "zhangsanfeng", "zsf"]


def test_name_terms_every_reading_of_a_polyphonic_surname() -> None:
    shan = set(name_terms("单田芳").split())
    assert {"shantianfang", "dantianfang", "stf", "dtf", "田芳"} <= shan
    zeng = set(name_terms("曾国藩").split())
    assert {"zengguofan", "cengguofan", "zgf", "cgf", "国藩"} <= zeng
    assert {"shan", "dan"} <= set(readings("单"))
    assert set(readings("曾")) == {"zeng", "ceng"}


def test_name_terms_strip_dots_and_spaces() -> None:
    terms = name_terms("阿依古丽·买买提").split()
    assert terms[0] == "阿依古丽买买提"
    assert all("·" not in t and " " not in t for t in terms)
    assert "ayglmmt" in terms


def test_name_terms_latin_name_is_lower_case() -> None:
    assert name_terms("John Smith").split()[0] == "johnsmith"


def test_name_terms_empty() -> None:
    assert name_terms("") == ""
    assert name_terms(" · ") == ""


def test_name_terms_combinations_are_capped() -> None:
    # a name of many polyphonic characters must not blow up the index
    terms = name_terms("单" * 8).split()
    assert len(terms) <= 2 + 2 * 64


def test_a_read_within_a_read_does_not_wait_for_a_waiting_swap() -> None:
    """A swap waits for the reads in progress; a read that reads again (the
    policy, a meta value) must not then wait for the swap: that would be a
    deadlock."""
    import threading

    from local_db.readers import SwapLock

    lock = SwapLock()
    inner_done = threading.Event()
    swap_waiting = threading.Event()

    def reader() -> None:
        with lock.shared():
            swap_waiting.wait(2)
            with lock.shared():  # must not wait for the swap that waits for us
                inner_done.set()

    def swapper() -> None:
        with lock.exclusive():
            pass

    first = threading.Thread(target=reader)
    first.start()
    second = threading.Thread(target=swapper)
    second.start()
    while not lock._swaps_waiting:  # the swap is waiting for the reader
        pass
    swap_waiting.set()
    assert inner_done.wait(2), "the read within a read waited for the swap"
    first.join(2)
    second.join(2)
    assert not first.is_alive() and not second.is_alive()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.sampled_from(["top_up", "refused_top_up", "answer", "refuse", "rebase", "resolve"]),
        max_size=25,
    ),
    clock_steps=st.lists(st.integers(min_value=-3_600, max_value=3_600), min_size=25, max_size=25),
)
def test_the_status_figures_kept_in_memory_are_the_counted_ones(
    tmp_path_factory: pytest.TempPathFactory, steps: list[str], clock_steps: list[int]
) -> None:
    """The status bar reads figures the store keeps in memory: after any mix
    of commits, answers, rebases and handled issues they equal a count."""
    moment = [datetime(2026, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=8)))]
    store = LocalStore(tmp_path_factory.mktemp("figures") / "replica.db", clock=lambda: moment[0])
    store.set_meta("device_id", DEVICE)
    granted = "2024-01-01T00:00:00+00:00"
    store.add_lease(number_block("L-card", "card", 100_000_000, 100_000_099, DEVICE, granted))
    store.add_lease(number_block("L-receipt", "receipt", 1, 1_000, DEVICE, granted))
    card = issue_card(store, register(store)).decision.result["card_no"]
    try:
        for step, shift in zip(steps, clock_steps, strict=False):
            moment[0] += timedelta(seconds=shift)  # the PC clock may step back too
            waiting = [e.op for e in store.outbox(1000) if e.state in ("pending", "acked")]
            if step == "top_up":
                with contextlib.suppress(CommandRejected):  # the card's issue may be refused
                    store.execute(CASHIER, top_up_builder(card))
            elif step == "refused_top_up":
                with pytest.raises(CommandRejected):
                    store.execute(CASHIER, top_up_builder(card, amount_fen=0))
            elif step in ("answer", "refuse") and waiting:
                status = "applied" if step == "answer" else "rejected"
                store.record_results([ServerResult(waiting[0].op_id, status, code="x")])
            elif step == "rebase":  # as after a pull: what the server refused leaves the view
                store.rebase()
            elif step == "resolve" and store.issues():
                store.resolve_issue(int(store.issues()[0]["issue_id"]), "clerk", "handled")
            assert store.outbox_stats() == store._count_figures(), step
    finally:
        store.close()
