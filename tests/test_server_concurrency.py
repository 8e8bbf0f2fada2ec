"""Pushes at the same time, on SQLite and PostgreSQL: two of one device
(applied one after the other, each op once, in order), pushes of other
devices (side by side on PostgreSQL, meeting only where a uniqueness the
rules rely on is at stake), and what a push reads that another server
process may change meanwhile (devices, sessions, clerks, the epoch): read in
the push's own transaction, never cached."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, text, update
from sqlalchemy.engine import Connection
from ulid import ULID

from domain.cashier.issue_card import IssueCard
from domain.cashier.top_up import TopUp
from domain.numbers import card_no_for, receipt_no_for
from domain.signing import SigningKey
from server.app import create_app
from server.db import clerks, devices, is_sqlite, make_engine, ops, writer
from server.site import start_new_epoch
from sync.protocol import DEVICE_HEADER
from tests.conftest import PG_URL
from tests.test_server_api import (
    GB_EXAMPLE,
    Server,
    Window,
    _serve,
    assert_error_body,
    lease,
    now,
    open_window,
    patient_with_card,
    push,
    register_cmd,
    wire,
)
from tests.test_server_api import cheap_password_hashing as cheap_password_hashing  # autouse

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Server]:
    """The server on SQLite and on PostgreSQL, in-process."""
    async for s in _serve(db_url):
        yield s


def _post_push(server: Server, window: Window, wire_ops: list[dict[str, Any]]) -> Any:
    return server.http.post(
        "/sync/push",
        json={"device_time": now(), "ops": wire_ops},
        headers=window.headers,
    )


@contextlib.contextmanager
def holding(engine: Engine, lock: str, *params: Any) -> Iterator[Connection]:
    """A transaction of another connection that holds what ``lock`` takes
    (PostgreSQL: a row lock; SQLite: the write lock, BEGIN IMMEDIATE, whatever
    ``lock`` is) until the block ends, then commits."""
    conn = writer(engine)
    try:
        with conn.begin():
            if not is_sqlite(engine):
                conn.exec_driver_sql(lock, params)
            yield conn
    finally:
        conn.close()


async def waiting_on_locks(engine: Engine, count: int) -> None:
    """Until ``count`` other transactions wait on a lock (PostgreSQL), or a
    moment (SQLite, where a waiting writer cannot be seen)."""
    if is_sqlite(engine):
        await asyncio.sleep(0.3)
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            waiting = conn.execute(
                text(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        if waiting >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} transactions never waited on a lock")


async def top_ups(server: Server, window: Window, count: int) -> tuple[list[dict[str, Any]], str]:
    """``count`` top-ups on a new patient's card, as wire ops (not pushed)."""
    _, card, receipt = await patient_with_card(server, window)
    first, _ = await lease(server, window, "receipt", count)
    return [
        wire(
            window,
            TopUp(
                transfer_id=str(ULID()),
                card_no=card,
                amount_fen=1_000,
                method="cash",
                receipt_no=receipt_no_for(first + i),
            ),
        )
        for i in range(count)
    ], card


async def test_two_pushes_of_one_device_at_once_apply_each_op_once_in_order(
    api: Server,
) -> None:
    """A workstation resends its outbox (with more in it) while the server
    still applies the first push: the second push waits for the first and
    answers its ops from what the first stored. Either may come first."""
    window = await open_window(api)
    wire_ops, _ = await top_ups(api, window, 10)
    # another push, taking its change-log numbers: both of these get as far as they can
    lock = "SELECT value FROM counters WHERE name = %s FOR UPDATE"
    with holding(api.engine, lock, "change_seq"):
        first = asyncio.ensure_future(_post_push(api, window, wire_ops[:5]))
        second = asyncio.ensure_future(_post_push(api, window, wire_ops))
        await waiting_on_locks(api.engine, 2)
    answers = [await first, await second]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    short, full = (a.json()["results"] for a in answers)
    assert {r["status"] for r in short + full} == {"applied"}
    # the five ops both pushes carried: one answer, the one stored
    assert short == full[:5]
    with api.engine.connect() as conn:
        recorded = conn.execute(
            select(ops.c.client_seq, ops.c.change_seq)
            .where(ops.c.device_id == window.device_id)
            .order_by(ops.c.client_seq)
        ).all()
    assert [seq for seq, _ in recorded] == list(range(1, 13))  # patient, card, ten top-ups
    applied_order = [seq for seq, _ in sorted(recorded, key=lambda r: r[1])]
    assert applied_order == list(range(1, 13))
    servers = [r["server_seq"] for r in full]
    assert servers == sorted(servers) and len(set(servers)) == 10


@pytest.mark.postgres
async def test_pushes_of_other_devices_go_on_while_one_device_waits(api: Server) -> None:
    """No push waits for another device's push until their very end (the
    change-log numbers), so one slow device does not hold up the others."""
    if PG_URL is None or is_sqlite(api.engine):
        pytest.skip("PostgreSQL only: SQLite's writers take turns")
    slow = await open_window(api, name="slow")
    other = await open_window(api, "cash2", name="other")
    lock = "SELECT 1 FROM devices WHERE device_id = %s FOR UPDATE"
    with holding(api.engine, lock, slow.device_id):
        waiting = asyncio.ensure_future(_post_push(api, slow, [wire(slow, register_cmd())]))
        await waiting_on_locks(api.engine, 1)
        answered = await asyncio.wait_for(push(api, other, wire(other, register_cmd())), 10)
        assert [r["status"] for r in answered] == ["applied"]
        assert not waiting.done()
    assert (await waiting).json()["results"][0]["status"] == "applied_modified"  # the same person


async def test_a_registration_racing_another_device_is_mapped_not_refused(
    api: Server,
) -> None:
    """Two windows register one person at the same moment: the second is
    mapped to the first (applied_modified), as if one after the other, never
    refused as a conflict nor registered twice."""
    window = await open_window(api)
    first_id = str(ULID())
    insert = (
        "INSERT INTO patients (patient_id, name, sex, birth_date, doc_type, doc_no, phone, "
        "address, registered_at, registered_by, registered_device) "
        "VALUES (%s, '张三丰', 'F', '1949-12-31', 'resident_id', %s, '13812345678', '', "
        "%s, 'c', 'elsewhere')"
    )
    with holding(api.engine, insert, first_id, GB_EXAMPLE, now()) as other:
        if is_sqlite(api.engine):  # SQLite: the other window's insert under its write lock
            other.exec_driver_sql(insert.replace("%s", "?"), (first_id, GB_EXAMPLE, now()))
        racing = asyncio.ensure_future(_post_push(api, window, [wire(window, register_cmd())]))
        await waiting_on_locks(api.engine, 1)
    [result] = (await racing).json()["results"]
    assert (result["status"], result["code"]) == ("applied_modified", "patient_mapped")
    assert result["result"] == {"patient_id": first_id, "mapped": True}


async def test_a_card_issued_to_one_patient_at_two_windows_at_once_is_refused_once(
    api: Server,
) -> None:
    """A patient holds one active card: two windows issuing one at the same
    moment, the second is refused as if it came after the first."""
    window = await open_window(api)
    reg = register_cmd()
    [registered] = await push(api, window, wire(window, reg))
    assert registered["status"] == "applied"
    card_first, _ = await lease(api, window, "card", 2)
    insert = (
        "INSERT INTO cards (card_no, patient_id, status, issued_at, issued_by, issued_device, "
        "status_changed_at) VALUES (%s, %s, 'active', %s, 'c', 'elsewhere', %s)"
    )
    elsewhere = (card_no_for(card_first + 1), reg.patient_id, now(), now())
    with holding(api.engine, insert, *elsewhere) as other:
        if is_sqlite(api.engine):
            other.exec_driver_sql(insert.replace("%s", "?"), elsewhere)
        issue = IssueCard(card_no=card_no_for(card_first), patient_id=reg.patient_id)
        racing = asyncio.ensure_future(_post_push(api, window, [wire(window, issue)]))
        await waiting_on_locks(api.engine, 1)
    [result] = (await racing).json()["results"]
    assert (result["status"], result["code"]) == ("rejected", "patient_has_active_card")


# -- what another server process may change: seen at once -------------------


@contextlib.asynccontextmanager
async def two_processes(db_url: str) -> AsyncIterator[tuple[Server, Server]]:
    """Two apps over one database, each with its own engine and pool, as two
    ``workstation server --workers`` processes are."""
    first = make_engine(db_url)
    second = make_engine(db_url)
    apps = [create_app(first, migrate=True), create_app(second)]
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[0]), base_url="http://a") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[1]), base_url="http://b") as b,
    ):
        yield Server(apps[0], first, a), Server(apps[1], second, b)
    first.dispose()
    second.dispose()


async def test_a_session_ended_through_one_process_is_refused_by_another_at_once(
    db_url: str,
) -> None:
    async with two_processes(db_url) as (a, b):
        window = await open_window(a)
        assert (await push(b, window, wire(window, register_cmd())))[0]["status"] == "applied"
        assert (await a.http.post("/auth/logout", headers=window.headers)).status_code == 204
        assert_error_body(
            await _post_push(b, window, [wire(window, register_cmd())]), 401, "session_invalid"
        )
        assert_error_body(
            await b.http.get("/sync/pull", headers=window.headers), 401, "session_invalid"
        )


async def test_a_disabled_device_and_an_inactive_clerk_are_refused_at_once(db_url: str) -> None:
    async with two_processes(db_url) as (a, b):
        window = await open_window(a)
        other = await open_window(a, "cash2", name="w2")
        for server in (a, b):
            assert (await push(server, window, wire(window, register_cmd())))[0]["status"]
        with a.engine.begin() as conn:
            conn.execute(
                update(devices).where(devices.c.device_id == window.device_id).values(active=0)
            )
            conn.execute(update(clerks).where(clerks.c.clerk_id == other.clerk_id).values(active=0))
        for server in (a, b):
            assert_error_body(
                await _post_push(server, window, [wire(window, register_cmd())]),
                401,
                "device_unknown",
            )
            assert_error_body(
                await _post_push(server, other, [wire(other, register_cmd())]),
                401,
                "clerk_disabled",  # the session is over, and the clerk told why
            )


async def test_a_new_epoch_is_in_the_next_answer_of_every_process(db_url: str) -> None:
    """``admin new-epoch`` while the server runs: no process answers with the
    old epoch afterwards (the epoch is read with each answer, not kept)."""
    async with two_processes(db_url) as (a, b):
        window = await open_window(a)
        response = await _post_push(b, window, [wire(window, register_cmd())])
        old = response.json()["epoch"]
        epoch = start_new_epoch(a.engine)
        assert epoch != old
        for server in (a, b):
            response = await _post_push(server, window, [])
            assert response.json()["epoch"] == epoch
            assert (await server.http.get("/health")).json()["epoch"] == epoch


# -- several server processes ------------------------------------------------------


def test_several_workers_are_refused_on_sqlite(sqlite_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "workstation.cli", "server", "--db", sqlite_url, "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "error: SQLite is served by one process: leave out --workers"


@pytest.mark.postgres
def test_workers_serve_one_device_s_pushes_in_order(db_url: str, tmp_path: Path) -> None:
    """``workstation server --workers 3``: a device's pushes, whichever process
    takes them, make one gap-free sequence; replica images go to one directory."""
    if db_url.startswith("sqlite"):
        pytest.skip("several workers are for PostgreSQL")
    engine = make_engine(db_url)
    create_app(engine, migrate=True)
    from server.auth import AuthService

    auth = AuthService(engine)
    auth.create_clerk("cash", "cash", ["cashier"], "secret-123")
    code = auth.create_enrollment_code("w1")
    port = _free_port()
    images = tmp_path / "images"
    server_process = subprocess.Popen(
        [sys.executable, "-m", "workstation.cli", "server", "--db", db_url, "--port", str(port)]
        + ["--workers", "3", "--pool-size", "2", "--snapshot-dir", str(images)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(base)
        with httpx.Client(base_url=base, timeout=30) as http:
            enrolled = http.post("/devices/enroll", json={"code": code, "device_name": "w1"})
            device_token = enrolled.json()["device_token"]
            key = SigningKey.generate()
            login = http.post(
                "/auth/login",
                json={
                    "username": "cash",
                    "password": "secret-123",
                    "signing_key": key.public_key.hex(),
                },
                headers={DEVICE_HEADER: device_token},
            ).json()
            window = Window(
                enrolled.json()["device_id"],
                device_token,
                login["session_token"],
                login["clerk"]["clerk_id"],
                key,
            )
            for _ in range(12):  # a new connection each: any worker may take it
                with httpx.Client(base_url=base, timeout=30) as one:
                    answer = one.post(
                        "/sync/push",
                        json={
                            "device_time": now(),
                            "ops": [wire(window, kind="nope", payload="{}")],
                        },
                        headers=window.headers,
                    )
                assert answer.status_code == 200, answer.text
                assert answer.json()["results"][0]["code"] == "command_unknown"
        with engine.connect() as conn:
            seqs = conn.execute(
                select(ops.c.client_seq).where(ops.c.device_id == window.device_id)
            ).scalars()
            assert sorted(seqs) == list(range(1, 13))
    finally:
        server_process.send_signal(signal.SIGINT)
        try:
            server_process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server_process.kill()
        engine.dispose()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError("the server did not start")
