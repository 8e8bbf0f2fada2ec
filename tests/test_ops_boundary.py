"""What a workstation pushes is checked at the server's boundary (security
review, issue 10): an op the server cannot take is refused with a reason and
the device's sequence goes on, never held forever; numbers have one form;
dates are judged against the server's clock. On SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from ulid import ULID

from domain.errors import Rejection
from domain.numbers import receipt_no_for
from domain.patients.register import RegisterPatient
from server import sync_service
from server.db import audit, change_log, ops, transfers
from server.state import ServerState
from server.verify import verify_audit
from tests.harness import Central, Station
from tests.test_numbers_canonical import arabic_indic, full_width
from tests.test_server_api import (
    MALE_EXAMPLE,
    Server,
    Window,
    _serve,
    count_rows,
    male_cmd,
    now,
    open_window,
    patient_with_card,
    push,
    register_cmd,
    signed,
    wire,
)
from tests.test_server_api import cheap_password_hashing as cheap_password_hashing  # autouse
from tests.test_sync_end_to_end import ZHANG


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[Server]:
    """The server on SQLite and on PostgreSQL."""
    async for s in _serve(db_url):
        yield s


def raw_op(window: Window, kind: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """An op whose payload is ``arguments`` as they are, not as a command
    model would write them (what a broken or hostile client can send)."""
    return wire(window, kind=kind, payload=json.dumps(arguments, ensure_ascii=False))


def top_up_args(card: str, receipt: str, amount: Any = 1_000) -> dict[str, Any]:
    return {
        "transfer_id": str(ULID()),
        "card_no": card,
        "amount_fen": amount,
        "method": "cash",
        "receipt_no": receipt,
    }


def statuses(results: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(r["status"], r["code"]) for r in results]


# -- item 10: one form for a number ------------------------------------------


async def test_a_receipt_number_in_full_width_is_the_same_receipt_number(
    server: Server,
) -> None:
    """Before: "R０００…" was a receipt number nobody had used (another
    string), so the top-up was applied as a second use of R…."""
    window = await open_window(server)
    _, card, receipt = await patient_with_card(server, window)
    used = receipt_no_for(receipt - 1)  # the card's first prepayment printed it
    again = "R" + full_width(used[1:])
    results = await push(server, window, raw_op(window, "top_up", top_up_args(card, again)))
    assert statuses(results) == [("rejected", "receipt_number_used")]
    # a full-width card number is the card itself
    fresh = receipt_no_for(receipt)
    results = await push(
        server, window, raw_op(window, "top_up", top_up_args(full_width(card), fresh))
    )
    assert statuses(results) == [("applied", None)]
    assert results[0]["result"]["card_no"] == card
    assert results[0]["result"]["receipt_no"] == fresh
    assert count_rows(server, transfers) == 2
    # digits of another script are refused with the reason, the sequence goes on
    results = await push(
        server,
        window,
        raw_op(window, "top_up", top_up_args(arabic_indic(card), receipt_no_for(receipt + 1))),
        wire(window, male_cmd()),
    )
    assert statuses(results) == [("rejected", "number_digits"), ("applied", None)]
    assert results[0]["message_zh"] and results[0]["message_en"]


# -- item 9: an op the server cannot take is refused, the sequence goes on ----


async def test_amounts_of_the_wrong_type_are_refused_not_applied(server: Server) -> None:
    """Before: "1000", 1000.0 and true were taken for 1000, 1000 and 1 fen."""
    window = await open_window(server)
    _, card, receipt = await patient_with_card(server, window)
    wrong = ["1000", 1000.0, True, None, [1000]]
    results = await push(
        server,
        window,
        *(
            raw_op(window, "top_up", top_up_args(card, receipt_no_for(receipt + i), amount))
            for i, amount in enumerate(wrong)
        ),
        wire(window, male_cmd()),
    )
    assert statuses(results) == [("rejected", "command_malformed")] * len(wrong) + [
        ("applied", None)
    ]
    assert all("amount_fen" in r["params"]["detail"] for r in results[:-1])
    assert count_rows(server, transfers) == 1  # the card's first prepayment only


NUL = "\x00"


def nested(window: Window, arguments: dict[str, Any], depth: int) -> dict[str, Any]:
    """An op whose arguments hold a list ``depth`` deep (written by hand:
    Python's json cannot write it)."""
    text = json.dumps(arguments)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    return wire(window, kind="top_up", payload=text)


async def test_payloads_the_server_failed_on_are_refused_and_the_sequence_goes_on(
    server: Server,
) -> None:
    """Before: each of these was answered ``deferred server_error`` (or, NUL on
    SQLite, applied) and held every later op of the device behind it."""
    window = await open_window(server)
    _, card, receipt = await patient_with_card(server, window)
    cases = {
        "nul in an id": raw_op(
            window, "top_up", {**top_up_args(card, receipt_no_for(receipt)), "transfer_id": NUL}
        ),
        "nul in a patient id": raw_op(
            window,
            "register_patient",
            {**register_cmd().model_dump(), "patient_id": f"P{NUL}1"},
        ),
        "nul in a shift": raw_op(
            window,
            "top_up",
            {**top_up_args(card, receipt_no_for(receipt + 1)), "shift_id": f"S{NUL}"},
        ),
        "nested 5000 deep": nested(window, top_up_args(card, receipt_no_for(receipt + 2)), 5000),
        "arabic-indic card": raw_op(
            window, "top_up", top_up_args(arabic_indic(card), receipt_no_for(receipt + 3))
        ),
    }
    results = await push(server, window, *cases.values(), wire(window, male_cmd()))
    got = dict(zip([*cases, "next op"], statuses(results), strict=True))
    assert got == {
        "nul in an id": ("rejected", "field_control"),
        "nul in a patient id": ("rejected", "field_control"),
        "nul in a shift": ("rejected", "field_control"),
        "nested 5000 deep": ("rejected", "command_malformed"),
        "arabic-indic card": ("rejected", "number_digits"),
        "next op": ("applied", None),
    }
    assert all(r["message_zh"] and r["message_en"] for r in results[:-1])
    # recorded: pushed again, the same answers; the device's sequence moved past them
    assert await push(server, window, *cases.values()) == results[:-1]
    assert count_rows(server, ops) == 2 + len(cases) + 1


async def test_an_op_a_rule_fails_on_is_refused_and_what_follows_is_applied(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in one op's rule (any unexpected exception): it is refused
    (``op_failed``, with the error's kind for IT), recorded, and the device's
    later ops are applied. Before: deferred ``server_error`` with every op
    after it, until the server was fixed."""
    window = await open_window(server)
    first, broken, last = register_cmd(), male_cmd(), register_cmd()  # last: mapped to first
    wire_ops = [wire(window, first), wire(window, broken), wire(window, last)]
    decide = RegisterPatient.decide

    def failing(self: RegisterPatient, state: Any, ctx: Any) -> Any:
        if self.patient_id == broken.patient_id:
            raise IndexError("a bug")
        return decide(self, state, ctx)

    monkeypatch.setattr(RegisterPatient, "decide", failing)
    results = await push(server, window, *wire_ops)
    assert statuses(results) == [
        ("applied", None),
        ("rejected", "op_failed"),
        ("applied_modified", "patient_mapped"),
    ]
    assert results[1]["params"] == {"error": "IndexError"}
    assert "IndexError" in results[1]["message_en"] and "信息科" in results[1]["message_zh"]
    assert (count_rows(server, ops), count_rows(server, change_log)) == (3, 2)
    monkeypatch.setattr(RegisterPatient, "decide", decide)
    assert await push(server, window, *wire_ops) == results  # recorded as it was answered


async def test_a_database_gone_meanwhile_is_retried_not_refused(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database failing under an op (connection lost, deadlock) says
    nothing about the op: the push answers 503, nothing is recorded, and the
    workstation sends it again."""
    window = await open_window(server)
    op = wire(window, register_cmd())
    decide = RegisterPatient.decide
    dbapi = server.engine.dialect.loaded_dbapi

    def gone(self: RegisterPatient, state: Any, ctx: Any) -> Any:
        raise dbapi.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(RegisterPatient, "decide", gone)
    response = await server.http.post(
        "/sync/push", json={"device_time": now(), "ops": [op]}, headers=window.headers
    )
    assert response.status_code == 503 and response.json()["code"] == "database_unavailable"
    assert count_rows(server, ops) == 0
    monkeypatch.setattr(RegisterPatient, "decide", decide)
    assert statuses(await push(server, window, op)) == [("applied", None)]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        ("POST", "/auth/login", {"username": f"cash{NUL}", "password": "x"}, {}),
        ("POST", "/auth/login", {"username": "cash", "password": f"x{NUL}"}, {}),
        ("POST", "/devices/enroll", {"code": f"ABCD{NUL}", "device_name": "w"}, None),
        ("POST", "/devices/enroll", {"code": "ABCD-EFGH", "device_name": f"w{NUL}"}, None),
        ("POST", "/leases", {"kind": f"number{NUL}", "resource": "card", "count": 1}, {}),
        ("POST", "/leases", {"kind": "number_block", "resource": f"card{NUL}", "count": 1}, {}),
        ("GET", "/sync/snapshot/image?schema=x%00", None, {}),
        ("GET", "/sync/pull?epoch=e%00&mark=0000000000000000&confirmed=0", None, {}),
        ("POST", "/sync/push", {"device_time": now(), "ops": []}, {"X-Newest-Lease": "L"}),
    ],
)
async def test_nul_anywhere_in_a_request_gets_a_4xx(
    server: Server, method: str, path: str, body: Any, headers: dict[str, str] | None
) -> None:
    """PostgreSQL refuses NUL in text: before, these reached it and answered
    500 or 503 (database unavailable, retry) on PostgreSQL."""
    window = await open_window(server)
    send = {} if headers is None else {**window.headers, **headers}
    if "X-Newest-Lease" in send:
        epoch = (await server.http.get("/health")).json()["epoch"]
        send |= {"X-Replica-Epoch": epoch, "X-Replica-Cursor": "0", "X-Newest-Lease": f"L{NUL}"}
    response = await server.http.request(method, path, json=body, headers=send)
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert body["code"] and body["message_zh"] and body["message_en"]


async def test_an_op_the_server_failed_on_lands_in_the_clerks_sync_issues(
    central: Central, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workstation side of ``op_failed``: the op leaves the clerk's view
    and opens a Sync issue that says what happened in both languages; the
    work after it is confirmed."""
    central.clerk("cash_a", ["cashier"])
    a = Station(central, tmp_path / "a", "window-a")
    await a.enroll_and_login("cash_a")
    decide = RegisterPatient.decide

    def failing_on_the_server(self: RegisterPatient, state: Any, ctx: Any) -> Any:
        if isinstance(state, ServerState) and self.name == ZHANG.name:
            raise KeyError("a bug")
        return decide(self, state, ctx)

    monkeypatch.setattr(RegisterPatient, "decide", failing_on_the_server)
    a.offline()
    failed = await a.register(ZHANG)
    kept = await a.register(
        replace(ZHANG, name="李单", sex="M", birth_date="1880-01-01", doc_no=MALE_EXAMPLE)
    )
    a.online()
    report = await a.engine.sync_once()
    assert report.rejected == 1 and report.waits_for is None
    [issue] = a.desk.issues()
    assert (issue["kind"], issue["code"], issue["params"]) == (
        "rejected",
        "op_failed",
        {"error": "KeyError"},
    )
    message = Rejection(code=issue["code"], params=issue["params"])
    assert "KeyError" in message.message("en") and "信息科" in message.message("zh")
    assert message.message("zh") != "操作被拒绝：op_failed"  # not the catalogue's fallback
    assert a.store.outbox_stats().pending == 0
    assert a.view(kept.patient_id).patient.name == "李单"
    left = a.store.conn.execute(
        "SELECT COUNT(*) FROM patients WHERE patient_id = ?", (failed.patient_id,)
    ).fetchone()[0]
    assert left == 0  # left the view
    await a.close()


# -- item 11: business time, judged by the server's clock ----------------------


def dated(window: Window, op: dict[str, Any], at: str) -> dict[str, Any]:
    """``op`` made at ``at`` (by the workstation's clock), signed as made."""
    return signed({**op, "at": at}, window.key, window.device_id)


_PASSPORTS = itertools.count(10_000_000)


def passport_cmd(birth_date: str) -> RegisterPatient:
    return RegisterPatient(
        patient_id=str(ULID()),
        name="王五",
        sex="M",
        birth_date=birth_date,
        doc_type="passport",
        doc_no=f"E{next(_PASSPORTS)}",
        phone="13812345678",
    )


async def test_an_op_dated_far_from_the_servers_clock_is_booked_and_flagged(
    server: Server,
) -> None:
    """Offline workstations can have wrong clocks: an op dated 2099 or 1970
    is applied if otherwise valid, but flagged in its answer and audited.
    Before: booked silently."""
    window = await open_window(server)
    future, past, today = (
        dated(window, wire(window, passport_cmd("1980-01-01")), "2099-01-01T10:00:00+08:00"),
        dated(window, wire(window, passport_cmd("1980-01-01")), "1970-01-02T10:00:00+08:00"),
        wire(window, passport_cmd("1980-01-01")),
    )
    results = await push(server, window, future, past, today)
    assert statuses(results) == [("applied", None)] * 3
    assert [r["result"].get("flags") for r in results] == [
        [{"code": "op_time_future", "params": {"at": "2099-01-01T10:00:00+08:00"}}],
        [{"code": "op_time_before_enrolment", "params": {"at": "1970-01-02T10:00:00+08:00"}}],
        None,
    ]
    with server.engine.connect() as conn:
        flagged = conn.execute(
            select(audit.c.target, audit.c.outcome, audit.c.device_id).where(
                audit.c.action == "op_time_flagged"
            )
        ).all()
    assert sorted(flagged) == sorted(
        [
            (future["op_id"], "op_time_future", window.device_id),
            (past["op_id"], "op_time_before_enrolment", window.device_id),
        ]
    )
    # the answer stored is the answer given
    assert await push(server, window, future, past) == results[:2]
    report = verify_audit(server.engine)  # the flags are links of the audit's chain
    assert report.clean, report.problems


async def test_a_birth_date_is_judged_by_the_servers_clock(server: Server) -> None:
    """Before: judged by the op's own date, so an op dated 2099 registered a
    patient born in 2098."""
    window = await open_window(server)
    results = await push(
        server,
        window,
        dated(window, wire(window, passport_cmd("2098-05-01")), "2099-01-01T10:00:00+08:00"),
        dated(window, wire(window, passport_cmd("2020-05-01")), "1970-01-02T10:00:00+08:00"),
    )
    assert statuses(results) == [("rejected", "birth_date_impossible"), ("applied", None)]


@pytest.mark.parametrize(
    "hlc",
    ["0", "abc", "-000000000001.00000", "1e12.00000", "١٧٧٢٣٢٨٦٠٠٠٠٠.00000", "1772328600000"],
)
async def test_an_hlc_that_is_not_an_hlc_is_refused_alone(server: Server, hlc: str) -> None:
    """Refused (the op recorded as such), not the whole push: the device's
    sequence goes on. Before: stored as it came."""
    window = await open_window(server)
    results = await push(
        server,
        window,
        signed(
            {**wire(window, passport_cmd("1980-01-01")), "hlc": hlc}, window.key, window.device_id
        ),
        wire(window, male_cmd()),
    )
    assert statuses(results) == [("rejected", "command_malformed"), ("applied", None)]
    assert results[0]["params"] == {"detail": "hlc"}


async def test_a_flagged_op_lands_in_the_clerks_sync_issues(
    central: Central, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workstation whose clock runs two days ahead of the server's: its op
    is confirmed, and a Sync issue tells the clerk (and IT) in both languages."""
    central.clerk("cash_a", ["cashier"])
    a = Station(central, tmp_path / "a", "window-a")
    await a.enroll_and_login("cash_a")
    monkeypatch.setattr(sync_service, "server_clock", lambda: datetime.now(UTC) - timedelta(days=2))
    done = await a.register(ZHANG)
    await a.engine.sync_once()
    assert a.store.outbox_stats().pending == 0
    assert a.view(done.patient_id).patient.name == ZHANG.name  # booked
    [issue] = a.desk.issues()
    assert (issue["kind"], issue["code"]) == ("flagged", "op_time_future")
    message = Rejection(code=issue["code"], params=issue["params"])
    assert issue["params"]["at"][:4] in message.message("en")
    assert "时钟" in message.message("zh") and "clock" in message.message("en")
    await a.close()
