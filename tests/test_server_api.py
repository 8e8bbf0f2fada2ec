"""The central server's HTTP API, in-process, on SQLite and PostgreSQL: auth,
input validation, push (dedup, ordering, rejections), pull paging, the
snapshot and number leases."""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from pydantic import ValidationError
from sqlalchemy import Engine, func, inspect, select
from ulid import ULID

from domain import ledger
from domain.areas import ROW_TYPES
from domain.cashier.cancel_card import CancelCard
from domain.cashier.issue_card import IssueCard, Prepayment
from domain.cashier.top_up import TopUp
from domain.commands import Command
from domain.hlc import HybridClock
from domain.identity import check_char
from domain.numbers import card_no_for, receipt_no_for
from domain.operation import Operation, args_hash
from domain.patients.register import RegisterPatient
from domain.signing import SigningKey
from server import auth as server_auth
from server import sync_service
from server.app import create_app
from server.db import (
    WAL_CHECKPOINT_PAGES,
    audit,
    change_log,
    counters,
    make_engine,
    ops,
)
from server.migrate import BASELINE, migrate
from sync.protocol import DEVICE_HEADER, MAX_BODY_BYTES, MAX_OPS_PER_PUSH, PULL_LIMIT_MAX
from sync.snapshot import read_snapshot

PASSWORD = "secret-123"
GB_EXAMPLE = "11010519491231002X"  # female, 1949-12-31
MALE_EXAMPLE = "440524188001010014"  # male, 1880-01-01


# -- fixtures and helpers -----------------------------------------------------


@dataclass
class Server:
    app: Any
    engine: Engine
    http: httpx.AsyncClient

    @property
    def auth(self) -> Any:
        return self.app.state.auth


@dataclass
class Window:
    """An enrolled device with a logged-in clerk."""

    device_id: str
    device_token: str
    session: str
    clerk_id: str
    key: SigningKey  # the clerk's signing key on this device, registered at login
    next_seq: int = 1

    @property
    def headers(self) -> dict[str, str]:
        return {DEVICE_HEADER: self.device_token, "Authorization": f"Bearer {self.session}"}


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 at production cost takes ~0.25 s a hash; the checks are the same."""
    monkeypatch.setattr(
        server_auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


async def _serve(url: str) -> AsyncIterator[Server]:
    engine = make_engine(url)
    app = create_app(engine, migrate=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        yield Server(app=app, engine=engine, http=http)
    engine.dispose()


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[Server]:
    """The server on SQLite and on PostgreSQL."""
    async for s in _serve(db_url):
        yield s


@pytest.fixture
async def sqlite_server(sqlite_url: str) -> AsyncIterator[Server]:
    """For checks of the client-side snapshot reader, where the backend makes no difference."""
    async for s in _serve(sqlite_url):
        yield s


async def enroll(server: Server, name: str = "window-1") -> tuple[str, str]:
    code = server.auth.create_enrollment_code(name)
    response = await server.http.post("/devices/enroll", json={"code": code, "device_name": name})
    assert response.status_code == 200, response.text
    body = response.json()
    return body["device_id"], body["device_token"]


async def login(
    server: Server, device_token: str, username: str, key: SigningKey | None = None
) -> httpx.Response:
    body = {"username": username, "password": PASSWORD}
    if key is not None:
        body["signing_key"] = key.public_key.hex()
    return await server.http.post("/auth/login", json=body, headers={DEVICE_HEADER: device_token})


async def open_window(
    server: Server, username: str = "cash", roles: tuple[str, ...] = ("cashier",), name: str = "w1"
) -> Window:
    with contextlib.suppress(ValueError):  # the clerk exists already (a second window)
        server.auth.create_clerk(username, username, list(roles), PASSWORD)
    device_id, token = await enroll(server, name)
    key = SigningKey.generate()
    response = await login(server, token, username, key)
    assert response.status_code == 200, response.text
    body = response.json()
    return Window(device_id, token, body["session_token"], body["clerk"]["clerk_id"], key)


async def login_on(server: Server, window: Window, username: str, roles: tuple[str, ...]) -> Window:
    """Another clerk on the same device (same device token and sequence)."""
    server.auth.create_clerk(username, username, list(roles), PASSWORD)
    key = SigningKey.generate()
    response = await login(server, window.device_token, username, key)
    assert response.status_code == 200, response.text
    body = response.json()
    return Window(
        window.device_id,
        window.device_token,
        body["session_token"],
        body["clerk"]["clerk_id"],
        key,
    )


async def lease(server: Server, window: Window, series: str, count: int = 10) -> tuple[int, int]:
    response = await server.http.post(
        "/leases/numbers", json={"series": series, "count": count}, headers=window.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return body["first"], body["last"]


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def wire(
    window: Window,
    command: Command | None = None,
    *,
    kind: str | None = None,
    payload: str | None = None,
    hash_: str | None = None,
    clerk_id: str | None = None,
    op_id: str | None = None,
    client_seq: int | None = None,
) -> dict[str, Any]:
    """An op as local_db's outbox sends it, signed with the window's clerk's
    key; advances the window's sequence."""
    kind = kind or (command.kind if command is not None else "register_patient")
    if payload is None:
        assert command is not None
        payload = command.model_dump_json()
    if client_seq is None:
        client_seq = window.next_seq
        window.next_seq += 1
    op = {
        "op_id": op_id or str(ULID()),
        "client_seq": client_seq,
        "kind": kind,
        "payload": payload,
        "args_hash": hash_ or args_hash(kind, payload),
        "clerk_id": clerk_id or window.clerk_id,
        "at": now(),
        "hlc": HybridClock().now(),
    }
    return signed(op, window.key, window.device_id)


def signed(op: dict[str, Any], key: SigningKey, device_id: str) -> dict[str, Any]:
    """``op`` (a wire dict) with ``key``'s signature (as it is, if it is not an op)."""
    try:
        signed_op = Operation.model_validate(op).signed_by(key, device_id)
    except ValidationError:
        return op
    return {**op, "key_id": signed_op.key_id, "signature": signed_op.signature}


async def push(server: Server, window: Window, *wire_ops: dict[str, Any]) -> list[dict[str, Any]]:
    response = await server.http.post(
        "/sync/push",
        json={"device_time": now(), "ops": list(wire_ops)},
        headers=window.headers,
    )
    assert response.status_code == 200, response.text
    return response.json()["results"]


def register_cmd(
    patient_id: str | None = None,
    *,
    doc_no: str = GB_EXAMPLE,
    name: str = "张三丰",
    sex: str = "F",
    birth_date: str = "1949-12-31",
) -> RegisterPatient:
    return RegisterPatient(
        patient_id=patient_id or str(ULID()),
        name=name,
        sex=sex,
        birth_date=birth_date,
        doc_type="resident_id",
        doc_no=doc_no,
        phone="13812345678",
    )


def male_cmd() -> RegisterPatient:
    return register_cmd(doc_no=MALE_EXAMPLE, name="李单", sex="M", birth_date="1880-01-01")


def count_rows(server: Server, table: Any) -> int:
    with server.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


async def patient_with_card(
    server: Server, window: Window, prepay_fen: int | None = 5_000
) -> tuple[str, str, int]:
    """Register and issue a card (with a prepayment); returns (patient, card, next receipt seq)."""
    card_first, _ = await lease(server, window, "card")
    receipt_first, _ = await lease(server, window, "receipt")
    reg = register_cmd()
    card = card_no_for(card_first)
    prepayment = None
    if prepay_fen is not None:
        prepayment = Prepayment(
            transfer_id=str(ULID()),
            amount_fen=prepay_fen,
            method="cash",
            receipt_no=receipt_no_for(receipt_first),
        )
    results = await push(
        server,
        window,
        wire(window, reg),
        wire(window, IssueCard(card_no=card, patient_id=reg.patient_id, prepayment=prepayment)),
    )
    assert [r["status"] for r in results] == ["applied", "applied"], results
    return reg.patient_id, card, receipt_first + 1


def assert_error_body(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"code", "message_zh", "message_en"}
    assert body["message_zh"] and body["message_en"]
    assert body["message_zh"] != body["message_en"]
    if code is not None:
        assert body["code"] == code


# -- health, OpenAPI, enrolment, authentication -------------------------------


async def test_health(server: Server) -> None:
    response = await server.http.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["epoch"]
    assert body["server_time"]


async def test_openapi_lists_the_sync_endpoints(server: Server) -> None:
    response = await server.http.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/sync/push", "/sync/pull", "/sync/snapshot"} <= set(paths)
    assert "post" in paths["/sync/push"] and "get" in paths["/sync/pull"]
    # the push answers with JSON it serialises itself; the document still names its shape
    answer = paths["/sync/push"]["post"]["responses"]["200"]["content"]["application/json"]
    assert answer["schema"]["$ref"].endswith("/PushResponse")


def test_sqlite_server_connection_settings(
    sqlite_url: str,
) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "temp_store", "wal_autocheckpoint")
            }
            mapped = conn.exec_driver_sql("PRAGMA mmap_size").scalar()
        assert pragma == {
            "journal_mode": "wal",
            "synchronous": 2,  # FULL: a commit is on disk when the push is answered
            "temp_store": 2,  # MEMORY
            "wal_autocheckpoint": WAL_CHECKPOINT_PAGES,
        }
        assert (
            mapped is not None and mapped >= 256 * 1024 * 1024
        )  # reads through a memory map (capped by the build)
    finally:
        engine.dispose()


def test_server_keeps_only_the_indexes_its_queries_use(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate(engine)
        names = {index["name"] for index in inspect(engine).get_indexes("transfers")}
        assert names == {"transfers_debit", "transfers_credit", "transfers_receipt"}
    finally:
        engine.dispose()


def test_a_database_from_before_0_1_0_loses_the_replica_only_index(db_url: str) -> None:
    """A server before release 0.1.0 kept an index only the replicas need; it
    goes when such a database (no revision recorded) is adopted."""
    engine = make_engine(db_url)
    try:
        migrate(engine, BASELINE)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE alembic_version")
            conn.exec_driver_sql("CREATE INDEX transfers_patient ON transfers (patient_id)")
        assert migrate(engine).state == "release-0.1.0"
        names = {index["name"] for index in inspect(engine).get_indexes("transfers")}
        assert names == {"transfers_debit", "transfers_credit", "transfers_receipt"}
    finally:
        engine.dispose()


async def test_enrolment_code_is_single_use(server: Server) -> None:
    code = server.auth.create_enrollment_code("window-1")
    first = await server.http.post("/devices/enroll", json={"code": code, "device_name": "w1"})
    assert first.status_code == 200
    assert first.json()["device_id"] and first.json()["device_token"]
    second = await server.http.post("/devices/enroll", json={"code": code, "device_name": "w2"})
    assert_error_body(second, 403, "enroll_code_invalid")


async def test_enrolment_code_is_case_and_space_insensitive(server: Server) -> None:
    code = server.auth.create_enrollment_code("window-1")
    response = await server.http.post(
        "/devices/enroll", json={"code": f"  {code.lower()} ", "device_name": "w1"}
    )
    assert response.status_code == 200


async def test_unknown_enrolment_code(server: Server) -> None:
    response = await server.http.post(
        "/devices/enroll", json={"code": "AAAA-BBBB-CCCC", "device_name": "w1"}
    )
    assert_error_body(response, 403, "enroll_code_invalid")


PROTECTED: list[tuple[str, str, Any]] = [
    ("POST", "/sync/push", {"device_time": "x", "ops": []}),
    ("GET", "/sync/pull", None),
    ("GET", "/sync/snapshot", None),
    ("POST", "/leases/numbers", {"series": "card", "count": 1}),
    ("POST", "/auth/logout", None),
]


async def test_requests_need_a_device_token_and_a_session(server: Server) -> None:
    window = await open_window(server)
    for method, path, body in PROTECTED:
        no_device = await server.http.request(method, path, json=body)
        assert_error_body(no_device, 401, "device_token_missing")
        bad_device = await server.http.request(
            method, path, json=body, headers={DEVICE_HEADER: "forged"}
        )
        assert_error_body(bad_device, 401, "device_unknown")
        no_session = await server.http.request(
            method, path, json=body, headers={DEVICE_HEADER: window.device_token}
        )
        assert_error_body(no_session, 401, "session_missing")
        bad_session = await server.http.request(
            method,
            path,
            json=body,
            headers={DEVICE_HEADER: window.device_token, "Authorization": "Bearer forged"},
        )
        assert_error_body(bad_session, 401, "session_invalid")


async def test_session_is_bound_to_its_device(server: Server) -> None:
    a = await open_window(server, name="a")
    _, other_token = await enroll(server, "b")
    response = await server.http.get(
        "/sync/pull",
        headers={DEVICE_HEADER: other_token, "Authorization": f"Bearer {a.session}"},
    )
    assert_error_body(response, 401, "session_invalid")


async def test_logout_ends_the_session(server: Server) -> None:
    window = await open_window(server)
    assert (await server.http.post("/auth/logout", headers=window.headers)).status_code == 204
    response = await server.http.get("/sync/pull", headers=window.headers)
    assert_error_body(response, 401, "session_invalid")


async def test_login_needs_an_enrolled_device(server: Server) -> None:
    server.auth.create_clerk("cash", "cash", ["cashier"], PASSWORD)
    response = await server.http.post(
        "/auth/login", json={"username": "cash", "password": PASSWORD}
    )
    assert_error_body(response, 401, "device_token_missing")


async def test_login_returns_the_clerk_and_the_policy(server: Server) -> None:
    server.auth.create_clerk("cash", "Cashier One", ["cashier"], PASSWORD)
    _, token = await enroll(server)
    response = await login(server, token, "cash")
    assert response.status_code == 200
    body = response.json()
    assert body["clerk"]["roles"] == ["cashier"] and body["clerk"]["name"] == "Cashier One"
    assert body["policy"]["login_attempts"] == 5
    assert body["session_token"]


async def test_login_wrong_password_and_unknown_user(server: Server) -> None:
    server.auth.create_clerk("cash", "cash", ["cashier"], PASSWORD)
    _, token = await enroll(server)
    wrong = await server.http.post(
        "/auth/login",
        json={"username": "cash", "password": "wrong-password"},
        headers={DEVICE_HEADER: token},
    )
    assert_error_body(wrong, 401, "login_failed")
    nobody = await server.http.post(
        "/auth/login",
        json={"username": "nobody", "password": PASSWORD},
        headers={DEVICE_HEADER: token},
    )
    assert_error_body(nobody, 401, "login_failed")
    # the same answer either way: the server does not reveal who exists
    assert wrong.json()["message_en"] == nobody.json()["message_en"]


async def test_login_locks_after_five_failures_even_with_the_right_password(
    server: Server,
) -> None:
    server.auth.create_clerk("cash", "cash", ["cashier"], PASSWORD)
    _, token = await enroll(server)
    statuses = []
    for _ in range(5):
        response = await server.http.post(
            "/auth/login",
            json={"username": "cash", "password": "wrong-password"},
            headers={DEVICE_HEADER: token},
        )
        statuses.append(response.status_code)
    assert statuses[:4] == [401, 401, 401, 401]
    assert statuses[4] in (401, 423)
    locked = await login(server, token, "cash")
    assert_error_body(locked, 423, "login_locked")


async def test_a_successful_login_resets_the_failure_count(server: Server) -> None:
    server.auth.create_clerk("cash", "cash", ["cashier"], PASSWORD)
    _, token = await enroll(server)
    for _ in range(4):
        await server.http.post(
            "/auth/login",
            json={"username": "cash", "password": "wrong-password"},
            headers={DEVICE_HEADER: token},
        )
    assert (await login(server, token, "cash")).status_code == 200
    for _ in range(4):
        await server.http.post(
            "/auth/login",
            json={"username": "cash", "password": "wrong-password"},
            headers={DEVICE_HEADER: token},
        )
    assert (await login(server, token, "cash")).status_code == 200


# -- malformed and oversized requests -----------------------------------------


def _good_op() -> dict[str, Any]:
    payload = register_cmd("P-1").model_dump_json()
    return {
        "op_id": "op-1",
        "client_seq": 1,
        "kind": "register_patient",
        "payload": payload,
        "args_hash": args_hash("register_patient", payload),
        "clerk_id": "c",
        "at": now(),
        "hlc": HybridClock().now(),
    }


def _push_with(**op_changes: Any) -> dict[str, Any]:
    return {"device_time": now(), "ops": [{**_good_op(), **op_changes}]}


def _op_without(field: str) -> dict[str, Any]:
    op = _good_op()
    del op[field]
    return {"device_time": now(), "ops": [op]}


MALFORMED: list[tuple[str, str, str, Any]] = [
    ("push-missing-device-time", "POST", "/sync/push", {"ops": []}),
    ("push-missing-ops", "POST", "/sync/push", {"device_time": now()}),
    ("push-ops-not-list", "POST", "/sync/push", {"device_time": now(), "ops": "x"}),
    ("push-device-time-int", "POST", "/sync/push", {"device_time": 5, "ops": []}),
    ("op-missing-args-hash", "POST", "/sync/push", _op_without("args_hash")),
    ("op-missing-payload", "POST", "/sync/push", _op_without("payload")),
    ("args-hash-pattern", "POST", "/sync/push", _push_with(args_hash="XYZ")),
    ("args-hash-upper", "POST", "/sync/push", _push_with(args_hash="A" * 64)),
    ("client-seq-0", "POST", "/sync/push", _push_with(client_seq=0)),
    ("client-seq-negative", "POST", "/sync/push", _push_with(client_seq=-3)),
    ("client-seq-text", "POST", "/sync/push", _push_with(client_seq="one")),
    ("client-seq-huge", "POST", "/sync/push", _push_with(client_seq=2**63)),
    ("op-id-empty", "POST", "/sync/push", _push_with(op_id="")),
    ("op-id-too-long", "POST", "/sync/push", _push_with(op_id="x" * 41)),
    ("kind-empty", "POST", "/sync/push", _push_with(kind="")),
    ("payload-too-long", "POST", "/sync/push", _push_with(payload="x" * 16_385)),
    ("payload-not-text", "POST", "/sync/push", _push_with(payload={"a": 1})),
    ("op-extra-field", "POST", "/sync/push", _push_with(surprise=1)),
    ("push-extra-field", "POST", "/sync/push", {"device_time": now(), "ops": [], "x": 1}),
    ("push-body-is-list", "POST", "/sync/push", []),
    ("push-no-body", "POST", "/sync/push", None),
    (
        "push-501-ops",
        "POST",
        "/sync/push",
        {
            "device_time": now(),
            "ops": [{**_good_op(), "op_id": f"op-{i}", "client_seq": i + 1} for i in range(501)],
        },
    ),
    ("pull-negative-cursor", "GET", "/sync/pull?cursor=-1", None),
    ("pull-cursor-text", "GET", "/sync/pull?cursor=abc", None),
    ("pull-cursor-float", "GET", "/sync/pull?cursor=1e3", None),
    ("pull-cursor-huge", "GET", f"/sync/pull?cursor={2**64}", None),
    ("pull-limit-0", "GET", "/sync/pull?limit=0", None),
    ("pull-limit-negative", "GET", "/sync/pull?limit=-1", None),
    ("pull-limit-too-large", "GET", f"/sync/pull?limit={PULL_LIMIT_MAX + 1}", None),
    ("lease-series", "POST", "/leases/numbers", {"series": "cards", "count": 1}),
    ("lease-count-0", "POST", "/leases/numbers", {"series": "card", "count": 0}),
    ("lease-count-large", "POST", "/leases/numbers", {"series": "card", "count": 10_001}),
    ("lease-missing-count", "POST", "/leases/numbers", {"series": "card"}),
    ("login-missing-password", "POST", "/auth/login", {"username": "cash"}),
    ("login-empty-user", "POST", "/auth/login", {"username": "", "password": "x"}),
    ("login-types", "POST", "/auth/login", {"username": 1, "password": ["x"]}),
    ("enroll-code-short", "POST", "/devices/enroll", {"code": "AB", "device_name": "w"}),
    ("enroll-missing-name", "POST", "/devices/enroll", {"code": "ABCD-EFGH"}),
    ("enroll-empty", "POST", "/devices/enroll", {}),
]

NON_JSON: list[tuple[str, bytes]] = [
    ("broken-json", b"{not json"),
    ("form-encoded", b"device_time=now&ops="),
    ("binary", b"\xff\xfe\x00garbage"),
    ("empty", b""),
    ("deeply-nested-truncated", b'{"device_time": "x", "ops": [' * 200),
]


def _error_body_problem(response: httpx.Response, status: int, code: str) -> str | None:
    """What is wrong with an error answer, or None."""
    if response.status_code != status:
        return f"status {response.status_code}: {response.text[:200]}"
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.text[:200]}"
    if body.get("code") != code or not body.get("message_zh") or not body.get("message_en"):
        return f"body {body}"
    return None


async def test_malformed_requests_get_422_never_500(server: Server) -> None:
    window = await open_window(server)
    problems = {}
    for case, method, path, body in MALFORMED:
        kwargs: dict[str, Any] = {"headers": window.headers}
        if body is not None:
            kwargs["json"] = body
        response = await server.http.request(method, path, **kwargs)
        problem = _error_body_problem(response, 422, "request_malformed")
        if problem is None and not response.json()["detail"]:
            problem = "no detail"
        if problem:
            problems[case] = problem
    assert problems == {}


async def test_non_json_push_body_gets_422(server: Server) -> None:
    window = await open_window(server)
    problems = {}
    for case, content in NON_JSON:
        response = await server.http.post(
            "/sync/push",
            content=content,
            headers={**window.headers, "Content-Type": "application/json"},
        )
        problem = _error_body_problem(response, 422, "request_malformed")
        if problem:
            problems[case] = problem
    assert problems == {}


async def test_push_of_exactly_500_ops_is_accepted(server: Server) -> None:
    window = await open_window(server)
    # kinds the server does not know: cheap to decide, each one rejected and recorded
    wire_ops = [wire(window, kind="nothing", payload="{}") for _ in range(MAX_OPS_PER_PUSH)]
    results = await push(server, window, *wire_ops)
    assert len(results) == MAX_OPS_PER_PUSH
    assert {r["code"] for r in results} == {"command_unknown"}


async def test_oversized_body_with_content_length_gets_413(server: Server) -> None:
    window = await open_window(server)
    content = b'{"device_time": "' + b"x" * (MAX_BODY_BYTES + 10) + b'", "ops": []}'
    response = await server.http.post(
        "/sync/push",
        content=content,
        headers={**window.headers, "Content-Type": "application/json"},
    )
    assert_error_body(response, 413, "request_too_large")


async def test_oversized_streamed_body_without_content_length_gets_413(server: Server) -> None:
    window = await open_window(server)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"device_time": "'
        for _ in range(25):
            yield b"x" * 100_000  # 2.5 MB in all, no Content-Length
        yield b'", "ops": []}'

    response = await server.http.post(
        "/sync/push",
        content=chunks(),
        headers={**window.headers, "Content-Type": "application/json"},
    )
    assert_error_body(response, 413, "request_too_large")


async def test_body_just_under_the_limit_is_not_refused_as_too_large(server: Server) -> None:
    window = await open_window(server)
    content = b'{"device_time": "' + b"x" * (MAX_BODY_BYTES - 100) + b'", "ops": []}'
    assert len(content) <= MAX_BODY_BYTES
    response = await server.http.post(
        "/sync/push",
        content=content,
        headers={**window.headers, "Content-Type": "application/json"},
    )
    # device_time is too long for the model: a 422, never a 413 or a 500
    assert_error_body(response, 422, "request_malformed")


# -- push ---------------------------------------------------------------------


async def test_push_applies_and_answers_per_op(server: Server) -> None:
    window = await open_window(server)
    patient_id, card, _ = await patient_with_card(server, window)
    with server.engine.connect() as conn:
        stored = {r.op_id: r for r in conn.execute(select(ops))}
    assert len(stored) == 2
    assert {r.status for r in stored.values()} == {"applied"}
    assert {r.clerk_id for r in stored.values()} == {window.clerk_id}
    assert count_rows(server, change_log) == 3  # patient, card, first prepayment


async def test_bad_ops_are_rejected_and_the_sequence_still_advances(server: Server) -> None:
    window = await open_window(server)
    good = register_cmd()
    bad_hash_payload = register_cmd().model_dump_json()
    wire_ops = [
        wire(window, kind="register_patient", payload="{this is not json"),
        wire(window, kind="register_patient", payload="[1, 2, 3]"),
        wire(window, kind="register_patient", payload=bad_hash_payload, hash_="0" * 64),
        wire(window, kind="refund_everything", payload="{}"),
        wire(window, kind="register_patient", payload='{"patient_id": "x"}'),
        wire(window, register_cmd(), clerk_id="nobody"),
        wire(window, good),  # seq 7: accepted after six rejections
    ]
    results = await push(server, window, *wire_ops)
    assert [(r["status"], r["code"]) for r in results] == [
        ("rejected", "command_malformed"),
        ("rejected", "command_malformed"),
        ("rejected", "command_malformed"),
        ("rejected", "command_unknown"),
        ("rejected", "command_malformed"),
        ("rejected", "signature_invalid"),  # the window's clerk cannot act as another
        ("applied", None),
    ]
    for result in results[:-1]:
        assert result["message_zh"] and result["message_en"]
        assert result["message_zh"] != result["message_en"]
    assert results[5]["params"] == {"clerk_id": "nobody"}
    assert count_rows(server, ops) == 7  # rejections are recorded too
    assert count_rows(server, change_log) == 1  # only the accepted registration wrote a row
    # the next push continues at seq 8
    results = await push(server, window, wire(window, male_cmd()))
    assert results[0]["status"] == "applied"


async def test_rejected_ops_in_separate_pushes_advance_the_sequence(server: Server) -> None:
    window = await open_window(server)
    [result] = await push(server, window, wire(window, kind="nope", payload="{}"))
    assert result["status"] == "rejected" and result["code"] == "command_unknown"
    [result] = await push(server, window, wire(window, register_cmd()))
    assert result["status"] == "applied"


async def test_op_with_a_naive_timestamp_is_malformed(server: Server) -> None:
    window = await open_window(server)
    op = wire(window, register_cmd())
    op = signed({**op, "at": "2024-06-01T10:00:00"}, window.key, window.device_id)  # no offset
    [result] = await push(server, window, op)
    assert result["status"] == "rejected" and result["code"] == "command_malformed"


async def _mixed_push(server: Server, window: Window) -> list[dict[str, Any]]:
    """Four ops: registration, card with prepayment, an unknown kind, registration."""
    card_first, _ = await lease(server, window, "card")
    receipt_first, _ = await lease(server, window, "receipt")
    reg = register_cmd()
    return [
        wire(window, reg),
        wire(
            window,
            IssueCard(
                card_no=card_no_for(card_first),
                patient_id=reg.patient_id,
                prepayment=Prepayment(
                    transfer_id=str(ULID()),
                    amount_fen=5_000,
                    method="cash",
                    receipt_no=receipt_no_for(receipt_first),
                ),
            ),
        ),
        wire(window, kind="nope", payload="{}"),
        wire(window, male_cmd()),
    ]


async def test_replayed_push_writes_nothing_and_answers_applied_ops_the_same(
    server: Server,
) -> None:
    window = await open_window(server)
    wire_ops = await _mixed_push(server, window)
    first = await push(server, window, *wire_ops)
    assert [r["status"] for r in first] == ["applied", "applied", "rejected", "applied"]
    counts = (count_rows(server, ops), count_rows(server, change_log))
    assert counts == (4, 4)

    second = await push(server, window, *wire_ops)
    assert [(r["op_id"], r["status"], r["code"]) for r in second] == [
        (r["op_id"], r["status"], r["code"]) for r in first
    ]
    assert [second[i] for i in (0, 1, 3)] == [first[i] for i in (0, 1, 3)]
    assert (count_rows(server, ops), count_rows(server, change_log)) == counts

    # a replay of a part, in a different order, too
    third = await push(server, window, wire_ops[3], wire_ops[1])
    assert third == [first[1], first[3]]
    assert (count_rows(server, ops), count_rows(server, change_log)) == counts


async def test_replayed_rejection_returns_exactly_the_original_answer(server: Server) -> None:
    window = await open_window(server)
    wire_ops = await _mixed_push(server, window)
    first = await push(server, window, *wire_ops)
    second = await push(server, window, *wire_ops)
    assert first[2]["status"] == "rejected"
    assert second[2] == first[2]
    assert second == first


async def test_an_op_breaking_a_uniqueness_the_rules_missed_is_refused_alone(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The push is made again op by op; the others of the batch are applied,
    the one refused (``conflict``), nothing written twice."""
    window = await open_window(server)
    _, card, receipt = await patient_with_card(server, window)
    await lease(server, window, "receipt", 5)
    monkeypatch.setattr(ledger, "check_receipt", lambda *_args: None)  # a rule gone missing

    def top_up(seq: int) -> dict[str, Any]:
        return wire(
            window,
            TopUp(
                transfer_id=str(ULID()),
                card_no=card,
                amount_fen=1_000,
                method="cash",
                receipt_no=receipt_no_for(seq),
            ),
        )

    before = count_rows(server, change_log)
    results = await push(server, window, top_up(receipt), top_up(receipt), top_up(receipt + 1))
    assert [(r["status"], r["code"]) for r in results] == [
        ("applied", None),
        ("rejected", "conflict"),
        ("applied", None),
    ]
    assert count_rows(server, change_log) == before + 2
    assert count_rows(server, ops) == 5
    assert [r["server_seq"] for r in results] == [before + 1, None, before + 2]


async def test_registration_of_a_known_document_is_mapped(server: Server) -> None:
    window = await open_window(server)
    first = register_cmd()
    second = register_cmd()  # same document, another provisional id
    results = await push(server, window, wire(window, first), wire(window, second))
    assert results[0]["status"] == "applied"
    assert results[1]["status"] == "applied_modified"
    assert results[1]["code"] == "patient_mapped"
    assert results[1]["result"] == {"patient_id": first.patient_id, "mapped": True}
    assert "张三丰" in results[1]["message_zh"]


async def test_op_id_reused_with_different_arguments_is_a_conflict(server: Server) -> None:
    window = await open_window(server)
    original = wire(window, register_cmd())
    [result] = await push(server, window, original)
    assert result["status"] == "applied"
    counts = (count_rows(server, ops), count_rows(server, change_log))

    other = wire(window, male_cmd(), op_id=original["op_id"])
    [result] = await push(server, window, other)
    assert result["status"] == "rejected"
    assert result["code"] == "op_id_conflict"
    assert (count_rows(server, ops), count_rows(server, change_log)) == counts


async def test_op_id_of_another_device_is_a_conflict(server: Server) -> None:
    a = await open_window(server, name="a")
    b = await open_window(server, name="b")
    op = wire(a, register_cmd())
    assert (await push(server, a, op))[0]["status"] == "applied"
    replay_elsewhere = {**op, "client_seq": 1}
    [result] = await push(server, b, replay_elsewhere)
    assert result["code"] == "op_id_conflict"


async def test_gap_in_client_seq_is_deferred(server: Server) -> None:
    window = await open_window(server)
    [result] = await push(server, window, wire(window, register_cmd()))
    assert result["status"] == "applied"
    skipped = wire(window, male_cmd(), client_seq=3)  # seq 2 never arrived
    [result] = await push(server, window, skipped)
    assert result["status"] == "deferred"
    assert result["code"] == "sequence_gap"
    assert result["params"] == {"expected": 2}
    assert count_rows(server, ops) == 1
    # once seq 2 arrives, seq 3 goes through in the same push
    results = await push(
        server, window, skipped, wire(window, kind="nope", payload="{}", client_seq=2)
    )
    assert {r["op_id"]: r["status"] for r in results}[skipped["op_id"]] == "applied"
    assert count_rows(server, ops) == 3


async def test_reused_sequence_number_is_rejected(server: Server) -> None:
    window = await open_window(server)
    await push(server, window, wire(window, register_cmd()))
    [result] = await push(server, window, wire(window, male_cmd(), client_seq=1))
    assert result["status"] == "rejected" and result["code"] == "sequence_reused"


@pytest.mark.parametrize("one_statement", [True, False])
async def test_change_log_is_gap_free_after_several_pushes(
    server: Server, monkeypatch: pytest.MonkeyPatch, one_statement: bool
) -> None:
    if not one_statement:  # PostgreSQL: as for a batch of too many rows for one statement
        monkeypatch.setattr(sync_service, "_PG_MAX_PARAMS", 0)
    a = await open_window(server, name="a")
    b = await open_window(server, name="b")
    _, card, receipt_seq = await patient_with_card(server, a)
    await push(server, b, wire(b, male_cmd()), wire(b, kind="nope", payload="{}"))
    await push(
        server,
        a,
        wire(
            a,
            TopUp(
                transfer_id=str(ULID()),
                card_no=card,
                amount_fen=100,
                method="cash",
                receipt_no=receipt_no_for(receipt_seq),
            ),
        ),
        wire(a, kind="register_patient", payload="not json"),  # rejected: writes nothing
    )
    await push(server, b, wire(b, register_cmd()))  # mapped: an alias row
    with server.engine.connect() as conn:
        seqs = [r[0] for r in conn.execute(select(change_log.c.seq).order_by(change_log.c.seq))]
        head = conn.execute(
            select(counters.c.value).where(counters.c.name == "change_seq")
        ).scalar_one()
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) == 6  # patient, card, prepayment, patient, top-up, alias
    assert head == len(seqs)
    response = await server.http.get("/sync/pull", headers=a.headers)
    assert response.json()["head"] == len(seqs)


async def test_role_forbidden_for_a_registrars_top_up(server: Server) -> None:
    cashier = await open_window(server)
    _, card, receipt_seq = await patient_with_card(server, cashier)
    registrar = await login_on(server, cashier, "reg", ("registrar",))
    registrar.next_seq = cashier.next_seq
    top_up = TopUp(
        transfer_id=str(ULID()),
        card_no=card,
        amount_fen=10_000,
        method="cash",
        receipt_no=receipt_no_for(receipt_seq),
    )
    [result] = await push(server, registrar, wire(registrar, top_up))
    assert result["status"] == "rejected"
    assert result["code"] == "role_forbidden"
    assert "registrar" in result["message_en"]
    # the same top-up by the cashier goes through
    cashier.next_seq = registrar.next_seq
    [result] = await push(server, cashier, wire(cashier, top_up))
    assert result["status"] == "applied"


async def test_cancel_card_is_a_supervisors_decision(server: Server) -> None:
    cashier = await open_window(server)
    _, card, _ = await patient_with_card(server, cashier)
    cancel = CancelCard(card_no=card, reason="卡片损坏")
    [result] = await push(server, cashier, wire(cashier, cancel))
    assert result["code"] == "role_forbidden"
    boss = await login_on(server, cashier, "boss", ("supervisor",))
    boss.next_seq = cashier.next_seq
    [result] = await push(server, boss, wire(boss, cancel))
    assert result["status"] == "applied"


async def test_op_uses_the_roles_of_its_clerk_not_of_the_session(server: Server) -> None:
    cashier = await open_window(server)
    _, card, receipt_seq = await patient_with_card(server, cashier)
    server.auth.create_clerk("reg", "reg", ["registrar"], PASSWORD)
    registrar_key = SigningKey.generate()  # the registrar logged in on the cashier's device
    answer = await login(server, cashier.device_token, "reg", registrar_key)
    registrar_id = answer.json()["clerk"]["clerk_id"]
    top_up = TopUp(
        transfer_id=str(ULID()),
        card_no=card,
        amount_fen=10_000,
        method="cash",
        receipt_no=receipt_no_for(receipt_seq),
    )
    # pushed under the cashier's session, but made (and signed) by the registrar offline
    made = signed(wire(cashier, top_up, clerk_id=registrar_id), registrar_key, cashier.device_id)
    [result] = await push(server, cashier, made)
    assert result["code"] == "role_forbidden"


async def test_number_leased_to_another_device_is_refused(server: Server) -> None:
    a = await open_window(server, name="a")
    b = await open_window(server, name="b")
    first_b, _ = await lease(server, b, "card")
    await lease(server, a, "card")
    reg = register_cmd()
    results = await push(
        server,
        a,
        wire(a, reg),
        wire(a, IssueCard(card_no=card_no_for(first_b), patient_id=reg.patient_id)),
    )
    assert results[1]["code"] == "card_number_not_leased"


# -- pull ---------------------------------------------------------------------


async def test_pull_pages_never_split_an_op(server: Server) -> None:
    window = await open_window(server)
    _, card, receipt_seq = await patient_with_card(server, window)  # ops 1 (1 row), 2 (2 rows)
    top_up = TopUp(
        transfer_id=str(ULID()),
        card_no=card,
        amount_fen=100,
        method="cash",
        receipt_no=receipt_no_for(receipt_seq),
    )
    await push(server, window, wire(window, top_up))  # op 3 (1 row)

    async def page(cursor: int) -> dict[str, Any]:
        response = await server.http.get(
            "/sync/pull", params={"cursor": cursor, "limit": 1}, headers=window.headers
        )
        assert response.status_code == 200, response.text
        return response.json()

    p1 = await page(0)
    assert [c["seq"] for c in p1["changes"]] == [1]
    assert [c["table"] for c in p1["changes"]] == ["patients"]
    assert (p1["next_cursor"], p1["device_last_seq"], p1["has_more"], p1["head"]) == (1, 1, True, 4)

    p2 = await page(p1["next_cursor"])
    assert [c["seq"] for c in p2["changes"]] == [2, 3]  # card and prepayment together
    assert [c["table"] for c in p2["changes"]] == ["cards", "transfers"]
    assert (p2["next_cursor"], p2["device_last_seq"], p2["has_more"]) == (3, 2, True)

    p3 = await page(p2["next_cursor"])
    assert [c["seq"] for c in p3["changes"]] == [4]
    assert (p3["next_cursor"], p3["device_last_seq"], p3["has_more"]) == (4, 3, False)
    assert p3["changes"][0]["row"]["amount_fen"] == 100

    p4 = await page(p3["next_cursor"])
    assert p4["changes"] == [] and p4["next_cursor"] == 4 and not p4["has_more"]
    assert p4["device_last_seq"] == 3


async def test_pull_with_a_mid_op_cursor_still_returns_whole_rows(server: Server) -> None:
    window = await open_window(server)
    await patient_with_card(server, window)
    response = await server.http.get(
        "/sync/pull", params={"cursor": 0, "limit": 2}, headers=window.headers
    )
    body = response.json()
    # the page ends inside op 2: it is extended to the end of that op
    assert [c["seq"] for c in body["changes"]] == [1, 2, 3]
    assert body["device_last_seq"] == 2


async def test_device_last_seq_is_per_device(server: Server) -> None:
    a = await open_window(server, name="a")
    b = await open_window(server, name="b")
    await push(server, a, wire(a, register_cmd()))
    await push(server, b, wire(b, male_cmd()))
    body_a = (await server.http.get("/sync/pull", headers=a.headers)).json()
    body_b = (await server.http.get("/sync/pull", headers=b.headers)).json()
    assert body_a["device_last_seq"] == 1 and body_b["device_last_seq"] == 1
    assert len(body_a["changes"]) == 2 == len(body_b["changes"])
    # through seq 1 only a's op is in: b's device_last_seq is still 0 there
    body_b1 = (await server.http.get("/sync/pull", params={"limit": 1}, headers=b.headers)).json()
    assert body_b1["device_last_seq"] == 0


async def test_device_last_seq_counts_rejected_ops(server: Server) -> None:
    window = await open_window(server)
    await push(server, window, wire(window, register_cmd()), wire(window, kind="x", payload="{}"))
    body = (await server.http.get("/sync/pull", headers=window.headers)).json()
    assert body["device_last_seq"] == 2


async def test_pull_beyond_the_head(server: Server) -> None:
    window = await open_window(server)
    await push(server, window, wire(window, register_cmd()))
    response = await server.http.get("/sync/pull", params={"cursor": 50}, headers=window.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["changes"] == [] and body["next_cursor"] == 50 and body["head"] == 1


# -- snapshot -----------------------------------------------------------------


async def _snapshot_bytes(server: Server, window: Window) -> bytes:
    response = await server.http.get("/sync/snapshot", headers=window.headers)
    assert response.status_code == 200
    return response.content


async def test_snapshot_decodes_and_matches_the_database(server: Server) -> None:
    window = await open_window(server)
    patient_id, card, _ = await patient_with_card(server, window)
    await push(server, window, wire(window, male_cmd()))
    data = await _snapshot_bytes(server, window)
    items = list(read_snapshot([data]))
    header, *middle, end = items
    assert header["type"] == "header"
    assert header["cursor"] == 4
    assert header["device_last_seq"] == 3
    assert header["tables"] == [row_type.table for row_type in ROW_TYPES]
    assert header["tables"][:3] == ["patients", "patient_aliases", "cards"]
    assert end["type"] == "end" and end["count"] == 4
    rows: dict[str, list[dict[str, Any]]] = {}
    for item in middle:
        assert item["type"] == "rows"
        rows.setdefault(item["table"], []).extend(item["rows"])
    assert {r["patient_id"] for r in rows["patients"]} >= {patient_id}
    assert len(rows["patients"]) == 2
    assert [r["card_no"] for r in rows["cards"]] == [card]
    assert [r["amount_fen"] for r in rows["transfers"]] == [5_000]


async def test_snapshot_decodes_in_small_chunks(sqlite_server: Server) -> None:
    server = sqlite_server
    window = await open_window(server)
    await patient_with_card(server, window)
    data = await _snapshot_bytes(server, window)
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    assert [i["type"] for i in read_snapshot(chunks)][0] == "header"


async def test_empty_snapshot(server: Server) -> None:
    window = await open_window(server)
    items = list(read_snapshot([await _snapshot_bytes(server, window)]))
    assert [i["type"] for i in items] == ["header", "end"]
    assert items[0]["cursor"] == 0 and items[-1]["count"] == 0


async def test_truncated_snapshot_raises_value_error(sqlite_server: Server) -> None:
    server = sqlite_server
    window = await open_window(server)
    await patient_with_card(server, window)
    data = await _snapshot_bytes(server, window)
    for cut in (len(data) // 2, len(data) - 12, 10):
        with pytest.raises(ValueError):
            list(read_snapshot([data[:cut]]))


async def test_snapshot_without_its_end_line_raises_value_error(sqlite_server: Server) -> None:
    server = sqlite_server
    window = await open_window(server)
    await patient_with_card(server, window)
    text = gzip.decompress(await _snapshot_bytes(server, window))
    without_end = b"".join(text.splitlines(keepends=True)[:-1])
    with pytest.raises(ValueError, match="truncated"):
        list(read_snapshot([gzip.compress(without_end)]))


async def test_altered_snapshot_content_raises_value_error(sqlite_server: Server) -> None:
    server = sqlite_server
    window = await open_window(server)
    await patient_with_card(server, window)
    text = gzip.decompress(await _snapshot_bytes(server, window))
    assert b'"amount_fen":5000' in text
    forged = text.replace(b'"amount_fen":5000', b'"amount_fen":9000')
    with pytest.raises(ValueError, match="hash"):
        list(read_snapshot([gzip.compress(forged)]))


async def test_corrupted_snapshot_bytes_raise_value_error(sqlite_server: Server) -> None:
    server = sqlite_server
    window = await open_window(server)
    await patient_with_card(server, window)
    data = bytearray(await _snapshot_bytes(server, window))
    middle = len(data) // 2
    data[middle] ^= 0xFF
    with pytest.raises(ValueError):
        list(read_snapshot([bytes(data)]))


def test_not_a_snapshot_raises_value_error() -> None:
    with pytest.raises(ValueError):
        list(read_snapshot([b"this is not gzip at all"]))


# -- number leases ------------------------------------------------------------


async def test_number_leases_never_overlap_across_devices(server: Server) -> None:
    a = await open_window(server, name="a")
    b = await open_window(server, name="b")
    for series in ("card", "receipt"):
        blocks = []
        for window, size in [(a, 10), (b, 7), (a, 1), (b, 100), (a, 3)]:
            blocks.append(await lease(server, window, series, size))
        for first, last in blocks:
            assert first <= last
        ordered = sorted(blocks)
        for (_, last), (next_first, _) in zip(ordered, ordered[1:], strict=False):
            assert last < next_first
        # a block's size is what was asked for
        assert [last - first + 1 for first, last in blocks] == [10, 7, 1, 100, 3]


async def test_card_numbers_start_at_the_series_start(server: Server) -> None:
    window = await open_window(server)
    first, last = await lease(server, window, "card", 5)
    assert (first, last) == (100_000_000, 100_000_004)
    first, _ = await lease(server, window, "receipt", 5)
    assert first == 1


async def test_an_op_naming_another_device_is_refused(server: Server) -> None:
    """The envelope names the device that made the op; the server holds it to
    the device token that pushes it (release 0.1's ops name none)."""
    window = await open_window(server)
    other = await open_window(server, "cash2", name="w2")
    made_elsewhere = wire(window, register_cmd()) | {"device_id": other.device_id}
    [result] = await push(server, window, made_elsewhere)
    assert result["status"] == "rejected" and result["code"] == "command_malformed"
    assert result["params"] == {"detail": "device_id"}
    made_here = wire(window, male_cmd()) | {"device_id": window.device_id}
    zeng = "43010219900101123" + check_char("43010219900101123")
    unnamed = wire(
        window, register_cmd(doc_no=zeng, name="曾小明", sex="M", birth_date="1990-01-01")
    )
    assert "device_id" not in unnamed
    results = await push(server, window, made_here, unnamed)
    assert [r["status"] for r in results] == ["applied", "applied"]


async def test_a_push_saying_where_its_replica_stands_is_checked_first(server: Server) -> None:
    """Malformed replica headers get 422; a replica of another epoch, or one
    ahead of this server (a cursor past the head, a lease it never granted),
    gets 409 and nothing is applied; the audit keeps who found it behind."""
    window = await open_window(server)
    epoch = (await server.http.get("/health")).json()["epoch"]

    async def pushed(**replica: str) -> httpx.Response:
        return await server.http.post(
            "/sync/push",
            json={"device_time": "2026-03-02T08:00:00+08:00", "ops": []},
            headers={**window.headers, **replica},
        )

    base = {"X-Replica-Epoch": epoch, "X-Replica-Cursor": "0"}
    assert (await pushed(**base)).status_code == 200
    for bad in (
        {"X-Replica-Cursor": "-1"},
        {"X-Replica-Cursor": "1e3"},
        {"X-Change-Mark": "not-a-mark"},
        {"X-Replica-Confirmed": "x"},
    ):
        response = await pushed(**(base | bad))
        assert response.status_code == 422, (bad, response.text)
    response = await pushed(**(base | {"X-Replica-Epoch": "an-old-epoch"}))
    assert (response.status_code, response.json()["code"]) == (409, "epoch_changed")
    for ahead, reason in (
        ({"X-Replica-Cursor": "999999"}, "cursor_beyond_head"),
        ({"X-Newest-Lease": "01NEVERGRANTED0000000000000"}, "lease_lost"),
    ):
        response = await pushed(**(base | ahead))
        body = response.json()
        assert (response.status_code, body["code"]) == (409, "server_behind")
        assert body["detail"]["reason"] == reason
    with server.engine.connect() as conn:
        found = conn.execute(
            select(audit.c.device_id, audit.c.target).where(audit.c.action == "server_behind")
        ).all()
    assert sorted(found) == sorted(
        [(window.device_id, "cursor_beyond_head"), (window.device_id, "lease_lost")]
    )
