"""Number leases are limited: only roles whose commands take numbers of a
series may lease it, a device gets so many grants a minute and so many
numbers a UTC day (the hospital's policy), under parallel requests on both
engines, and ``POST /leases/held`` re-records only numbers the server handed
out. The workstation keeps working with what it holds when refused."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from domain.commands import roles_for_numbers
from domain.leases import NUMBER_BLOCK
from domain.numbers import SERIES_START, Series
from domain.state import Policy
from server.db import audit, counters, leases, make_engine
from server.leases import LeaseRefused, grant_lease
from server.site import save_policy
from tests.harness import Central, cashier_station
from tests.test_server_api import (
    Server,
    Window,
    _serve,
    assert_error_body,
    open_window,
)
from tests.test_server_api import cheap_password_hashing as cheap_password_hashing


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[Server]:
    """The server on SQLite and on PostgreSQL."""
    async for s in _serve(db_url):
        yield s


async def ask(server: Server, window: Window, series: str, count: int = 10) -> Any:
    return await server.http.post(
        "/leases",
        json={"kind": NUMBER_BLOCK, "resource": series, "count": count},
        headers=window.headers,
    )


def limits(**values: int) -> Policy:
    """The default policy with these lease limits."""
    return Policy.from_dict(values)


def refusals(server: Server, action: str = "lease") -> list[Any]:
    with server.engine.connect() as conn:
        return list(
            conn.execute(
                select(audit.c.target, audit.c.detail).where(
                    audit.c.action == action, audit.c.outcome == "refused"
                )
            )
        )


def test_who_may_lease_a_series_comes_from_the_commands_that_use_it() -> None:
    assert roles_for_numbers(Series.CARD) == {"cashier", "supervisor"}
    assert roles_for_numbers(Series.RECEIPT) == {"cashier", "admission", "supervisor"}


async def test_a_registrar_or_an_admin_leases_no_numbers(server: Server) -> None:
    registrar = await open_window(server, "reg", ("registrar",), "w-reg")
    admin = await open_window(server, "adm", ("admin",), "w-adm")
    # the registrar's roles use no numbers; the administrator's session touches no data at all
    for window, code in ((registrar, "lease_role_forbidden"), (admin, "role_no_data")):
        for series in ("card", "receipt"):
            assert_error_body(await ask(server, window, series), 403, code)
        old = await server.http.post(
            "/leases/numbers", json={"series": "card", "count": 10}, headers=window.headers
        )
        assert_error_body(old, 403, code)
    admission = await open_window(server, "adms", ("admission",), "w-adms")
    assert (await ask(server, admission, "receipt")).status_code == 200
    assert_error_body(await ask(server, admission, "card"), 403, "lease_role_forbidden")
    with server.engine.connect() as conn:
        granted = conn.execute(select(leases.c.device_id)).scalars().all()
    assert granted == [admission.device_id]
    assert len(refusals(server)) == 4  # each refusal audited
    assert [path for path, _ in refusals(server, "access")] == [
        "/leases",
        "/leases",
        "/leases/numbers",
    ]  # the administrator's too


async def test_grants_a_minute_are_limited_with_retry_after(server: Server) -> None:
    save_policy(server.engine, limits(lease_grants_per_minute=3))
    window = await open_window(server)
    for _ in range(3):
        assert (await ask(server, window, "receipt")).status_code == 200
    refused = await ask(server, window, "card")
    assert_error_body(refused, 429, "lease_rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # another device has its own count
    other = await open_window(server, name="w2")
    assert (await ask(server, other, "card")).status_code == 200
    assert len(refusals(server)) == 1


async def test_numbers_a_day_have_a_ceiling(server: Server) -> None:
    save_policy(server.engine, limits(lease_numbers_per_day=100))
    window = await open_window(server)
    assert (await ask(server, window, "card", 60)).status_code == 200
    refused = await ask(server, window, "receipt", 60)
    assert_error_body(refused, 429, "lease_daily_ceiling")
    assert 1 <= int(refused.headers["Retry-After"]) <= 86_400
    assert "100" in refused.json()["message_zh"] and "100" in refused.json()["message_en"]
    assert (await ask(server, window, "receipt", 40)).status_code == 200  # up to the ceiling
    assert_error_body(await ask(server, window, "receipt", 1), 429, "lease_daily_ceiling")
    assert [t for t, _ in refusals(server)] == ["number_block:receipt:60", "number_block:receipt:1"]


@pytest.mark.parametrize("limit", ["minute", "day"])
def test_the_limits_hold_under_parallel_requests(db_url: str, limit: str) -> None:
    """Twelve requests at once, through two engines (two server processes):
    exactly as many granted as the policy allows."""
    central = Central(db_url)
    other = make_engine(db_url)
    try:
        policy = (
            limits(lease_grants_per_minute=5)
            if limit == "minute"
            else limits(lease_numbers_per_day=50, lease_grants_per_minute=100)
        )
        save_policy(central.engine, policy)
        granted: list[int] = []
        refused: list[int] = []
        start = threading.Barrier(12)

        def one(i: int) -> None:
            engine = central.engine if i % 2 else other
            start.wait()
            try:
                grant_lease(engine, "dev-1", NUMBER_BLOCK, "card", 10, "clerk", roles=("cashier",))
                granted.append(i)
            except LeaseRefused as exc:
                assert exc.status == 429, exc.en
                refused.append(i)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert (len(granted), len(refused)) == (5, 7)
        with central.engine.connect() as conn:
            assert len(conn.execute(select(leases.c.lease_id)).all()) == 5
    finally:
        other.dispose()
        central.close()


async def test_parallel_requests_over_http_get_exactly_the_limit(server: Server) -> None:
    save_policy(server.engine, limits(lease_grants_per_minute=5))
    window = await open_window(server)
    answers = await asyncio.gather(*(ask(server, window, "receipt") for _ in range(12)))
    assert sorted(a.status_code for a in answers) == [200] * 5 + [429] * 7
    firsts = sorted(a.json()["first"] for a in answers if a.status_code == 200)
    assert firsts == [1, 11, 21, 31, 41]  # one block each, none twice


async def test_leases_held_cannot_mint_numbers(server: Server) -> None:
    window = await open_window(server)
    first = (await ask(server, window, "card")).json()
    assert first["first"] == SERIES_START[Series.CARD]
    with server.engine.connect() as conn:
        counter = conn.execute(
            select(counters.c.value).where(counters.c.name == "series:card")
        ).scalar_one()
    made_up = {
        "lease_id": "01MADEUP0000000000000000AA",
        "kind": NUMBER_BLOCK,
        "resource": "card",
        "device_id": window.device_id,
        "granted_at": first["granted_at"],
        "first": counter + 100,
        "last": counter + 9_000,
    }
    answer = await server.http.post(
        "/leases/held", json={"leases": [made_up]}, headers=window.headers
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"kept": [], "refused": [made_up["lease_id"]]}
    with server.engine.connect() as conn:
        assert (
            conn.execute(
                select(counters.c.value).where(counters.c.name == "series:card")
            ).scalar_one()
            == counter
        )
    # a block the server handed out and forgot (a restore) is still told again
    with server.engine.begin() as conn:
        conn.execute(leases.delete().where(leases.c.lease_id == first["lease_id"]))
    answer = await server.http.post(
        "/leases/held",
        json={"leases": [first | {"device_id": window.device_id}]},
        headers=window.headers,
    )
    assert answer.json() == {"kept": [first["lease_id"]], "refused": []}


async def test_leases_held_count_against_the_daily_ceiling(server: Server) -> None:
    save_policy(server.engine, limits(lease_numbers_per_day=15))
    window = await open_window(server)
    block = (await ask(server, window, "card", 10)).json()
    with server.engine.begin() as conn:  # forgotten: as by a restore
        conn.execute(leases.delete().where(leases.c.lease_id == block["lease_id"]))
    told = await server.http.post(
        "/leases/held",
        json={"leases": [block | {"device_id": window.device_id}]},
        headers=window.headers,
    )
    assert_error_body(told, 429, "lease_daily_ceiling")
    assert told.headers["Retry-After"]
    assert len(refusals(server, "leases_held")) == 1


async def test_the_workstation_keeps_working_when_refused_numbers(
    central_sqlite: Central, tmp_path: Path
) -> None:
    station = await cashier_station(central_sqlite, tmp_path)
    left = station.store.numbers_left(Series.RECEIPT)
    assert left > 0
    # the server refuses more (the day's ceiling reached); all but one number used
    save_policy(central_sqlite.engine, limits(lease_numbers_per_day=1))
    with station.store.transaction():
        for _ in range(left - 1):
            station.store.take_number(Series.RECEIPT)
    report = await station.engine.sync_once()  # asks, is refused, carries on
    assert report.leased == []
    assert station.engine.status.error_code is None  # one number left: nothing to say yet
    asked = len(refusals_of(central_sqlite))
    await station.engine.sync_once()  # not asked again before Retry-After
    assert len(refusals_of(central_sqlite)) == asked
    with station.store.transaction():
        station.store.take_number(Series.RECEIPT)
    station.engine.lease_retry.clear()  # Retry-After has passed
    await station.engine.sync_once()
    status = station.engine.status
    assert status.error_code == "lease_daily_ceiling" and status.error_zh and status.error_en
    await station.close()


def refusals_of(central: Central) -> list[Any]:
    with central.engine.connect() as conn:
        return list(conn.execute(select(audit.c.target).where(audit.c.outcome == "refused")))


async def test_blocks_the_server_would_not_hear_yet_are_told_again_later(
    central_sqlite: Central, tmp_path: Path
) -> None:
    station = await cashier_station(central_sqlite, tmp_path)
    with central_sqlite.engine.begin() as conn:  # a restore forgot the device's grants
        conn.execute(leases.delete())
    save_policy(central_sqlite.engine, limits(lease_grants_per_minute=0))
    await station.engine._reload(0, {"reason": "lease_lost"}, restored=False)  # 429: not yet
    with central_sqlite.engine.connect() as conn:
        assert conn.execute(select(leases.c.lease_id)).all() == []
    save_policy(central_sqlite.engine, limits())
    await station.engine.sync_once()  # before Retry-After: nothing asked
    with central_sqlite.engine.connect() as conn:
        assert conn.execute(select(leases.c.lease_id)).all() == []
    station.engine._tell_after = 0.0  # Retry-After has passed
    await station.engine.sync_once()
    held = {lease.lease_id for lease in station.store.number_blocks_held()}
    with central_sqlite.engine.connect() as conn:
        assert set(conn.execute(select(leases.c.lease_id)).scalars()) == held != set()
    await station.close()
