"""The sync engine: backoff, status, restore from backup (epoch change),
the policy handed down by the server, offline login windows."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from domain.operation import Operation
from domain.patients.register import RegisterPatient
from domain.state import Policy
from local_db.store import OutboxEntry
from server.db import patients, transfers
from server.site import save_policy
from sync.client import Offline, ReplicaMark
from sync.engine import SyncEngine, SyncStatus, wire_bytes_bound, within_bytes
from sync.protocol import PushRequest, PushResponse
from tests.harness import (
    PASSWORD,
    Central,
    Station,
    cashier_station,
    restore,
    work_a_restore_will_lose,
)
from workstation.desk import LoginFailed, RegistrationDraft

ZHANG = RegistrationDraft("张三丰", "", "", "resident_id", "11010519491231002X", "13812345678")


def test_backoff_is_exponential_with_full_jitter(tmp_path: Path) -> None:
    engine = SyncEngine.__new__(SyncEngine)
    engine.base_delay_s, engine.max_delay_s = 1.0, 60.0
    engine.rng = random.Random(7)
    ceilings = {1: 1.0, 2: 2.0, 3: 4.0, 7: 60.0, 30: 60.0}
    for failures, ceiling in ceilings.items():
        delays = [engine.backoff_delay(failures) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # spread over the whole range, not a fixed step
        assert min(delays) < ceiling * 0.2


async def test_run_loop_goes_offline_and_comes_back(
    central_sqlite: Central, tmp_path: Path
) -> None:
    station = await cashier_station(central_sqlite, tmp_path)
    statuses: list[SyncStatus] = []
    station.engine.on_status = statuses.append
    station.offline()
    await station.register(ZHANG)
    task = asyncio.create_task(station.engine.run())
    try:
        for _ in range(200):
            if station.engine.status.failures >= 2:
                break
            await asyncio.sleep(0.01)
        assert (
            station.engine.status.online is False and station.engine.status.error_code == "offline"
        )
        assert station.store.outbox_stats().pending == 1
        station.online()
        station.engine.poke()
        for _ in range(300):
            if station.store.outbox_stats().pending == 0 and station.engine.status.failures == 0:
                break
            await asyncio.sleep(0.01)
        assert station.store.outbox_stats().pending == 0
        assert station.engine.status.online is True and station.engine.status.failures == 0
        assert any(s.online is False for s in statuses) and statuses[-1].online is True
    finally:
        station.engine.stop()
        await task
        await station.close()


async def test_server_restored_from_backup_gets_lost_work_back(tmp_path: Path) -> None:
    lost = await work_a_restore_will_lose(tmp_path, ZHANG)
    central, station = lost.central, lost.station
    assert station.store.outbox_stats().pending == 0  # the server had them...

    # ...then its disk died; restore last night's backup
    restore(central, lost.db, lost.backup)

    report = await station.engine.sync_once()  # sees the new epoch: re-bootstraps
    assert report.bootstrapped
    assert station.store.outbox_stats().pending == 2  # the two top-ups the backup lost
    report = await station.engine.sync_once()
    assert report.pushed == 2 and station.store.outbox_stats().pending == 0
    with central.engine.connect() as conn:
        assert (
            conn.execute(select(func.sum(transfers.c.amount_fen))).scalar() == 5000 + 10000 + 3000
        )
    view = station.desk.patient(lost.patient_id)
    assert view is not None and view.balance_fen == view.confirmed_balance_fen == 18000
    await station.close()
    central.close()


async def test_policy_comes_from_the_server(central_sqlite: Central, tmp_path: Path) -> None:
    save_policy(central_sqlite.engine, Policy(min_first_prepayment_fen=2000, offline_login_days=1))
    station = await cashier_station(central_sqlite, tmp_path)
    assert station.desk.policy.min_first_prepayment_fen == 2000
    reg = await station.register(ZHANG)
    from workstation.desk import CommandRejected

    with pytest.raises(CommandRejected) as refused:
        await station.issue_card(reg.patient_id, "15", "cash")
    assert refused.value.rejection.code == "amount_below_minimum"
    assert "20.00" in refused.value.rejection.message("zh")

    # offline login is allowed within the window the policy sets, and not after it
    await station.desk.logout()
    station.offline()
    clerk = await station.desk.login("cash", PASSWORD)
    assert clerk.mode == "offline"
    await station.desk.logout()
    later = station.store.clock() + timedelta(days=2)
    station.store.clock = lambda: later
    with pytest.raises(LoginFailed) as expired:
        await station.desk.login("cash", PASSWORD)
    assert expired.value.code == "offline_expired"
    await station.close()


async def test_unknown_clerk_cannot_log_in_offline(central_sqlite: Central, tmp_path: Path) -> None:
    station = Station(central_sqlite, tmp_path / "a", "a")
    station.offline()
    with pytest.raises(LoginFailed) as refused:
        await station.desk.login("nobody", "whatever")
    assert refused.value.code == "offline_unknown"
    with pytest.raises(Offline):
        await station.engine.client.health()
    await station.close()


async def test_offline_login_gets_a_server_session_when_the_network_returns(
    central_sqlite: Central, tmp_path: Path
) -> None:
    station = await cashier_station(central_sqlite, tmp_path)
    await station.desk.logout()
    station.offline()
    clerk = await station.desk.login("cash", PASSWORD)
    assert clerk.mode == "offline" and station.client.session_token is None
    await station.register(ZHANG)
    station.online()
    report = await station.engine.sync_once()  # logs in by itself, then pushes
    assert report.pushed == 1 and station.store.outbox_stats().pending == 0
    assert station.desk.clerk is not None and station.desk.clerk.mode == "online"
    await station.close()


def test_push_batches_are_cut_by_an_upper_bound_of_their_size() -> None:
    payload = RegisterPatient(
        patient_id="01J",
        name='张"三\\丰',
        sex="M",
        birth_date="1980-01-01",
        doc_type="passport",
        doc_no="E1234567",
        phone="13812345678",
        address='"碧水湾"\t' * 9,
    ).model_dump_json()  # as the outbox holds it: quotes, backslashes, a tab escaped once
    worst: dict[str, str] = {
        "op_id": "\x01" * 40,
        "device_id": "\\" * 40,
        "kind": "register_patient",
        "clerk_id": "丰" * 40,
        "at": "2026-11-30T10:00:00.000+08:00",
        "hlc": '"' * 40,
    }
    wire = Operation(client_seq=2**62, payload=payload, args_hash="a" * 64, withdrawn=True, **worst)
    op = OutboxEntry(
        wire, clerk_roles=frozenset(), state="pending", local_outcome="applied", attempts=0
    )
    assert len(wire.model_dump_json().encode()) <= wire_bytes_bound(op)
    batch = [op] * 5
    assert within_bytes(batch, 2 * wire_bytes_bound(op)) == batch[:2]
    assert within_bytes(batch, wire_bytes_bound(op) - 1) == batch[:1]  # one op always goes
    assert within_bytes(batch, 5 * wire_bytes_bound(op)) == batch


async def test_large_ops_are_pushed_in_several_requests_all_applied(
    central_sqlite: Central, tmp_path: Path
) -> None:
    station = await cashier_station(central_sqlite, tmp_path)
    station.offline()
    for i in range(5):
        form = RegistrationDraft(
            "张三丰",
            "M",
            "1980-01-01",
            "passport",
            f"E{i:07d}",
            "13812345678",
            address="湖北省武汉市" + '"碧水湾"' * 10,
        )
        await station.register(form)
    sent: list[int] = []
    push = station.client.push

    async def counted(request: PushRequest, replica: ReplicaMark | None = None) -> PushResponse:
        sent.append(len(request.ops))
        assert len(request.ops) == 1 or len(request.model_dump_json()) <= station.engine.push_bytes
        return await push(request, replica)

    station.client.push = counted  # type: ignore[method-assign]
    pending = station.store.ops_to_push(10)
    station.engine.push_bytes = 2 * wire_bytes_bound(pending[0]) + 100
    station.online()
    try:
        await station.engine.sync_once()
        assert sum(sent) == 5 and len(sent) >= 3 and max(sent) <= 2
        assert station.store.outbox_stats().pending == 0
        with central_sqlite.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(patients)).scalar_one() == 5
    finally:
        await station.close()


async def test_actions_in_quick_succession_are_all_confirmed_at_the_window(
    central_sqlite: Central, tmp_path: Path
) -> None:
    """A commit made while a sync cycle runs pokes the engine again, and its
    op leaves at once: with syncs otherwise 3 s apart, each of five top-ups
    made one after another is confirmed within the window's wait."""
    station = await cashier_station(central_sqlite, tmp_path)
    reg = await station.register(ZHANG)
    card = await station.issue_card(reg.patient_id, "", "cash")
    await station.engine.sync_once()
    station.engine.interval_s = 3.0
    station.desk.settings.ack_wait_s = 2.0
    runner = asyncio.create_task(station.engine.run())
    try:
        await asyncio.sleep(0.1)  # the first cycle has run; the engine waits 3 s now
        done = [await station.top_up(str(card.card_no), f"{i + 1}", "cash") for i in range(5)]
        assert [d.confirmed for d in done] == [True] * 5
        assert all(d.receipt is not None and not d.receipt.provisional for d in done)
    finally:
        station.engine.stop()
        await runner
        await station.close()


async def test_a_link_that_comes_back_is_noticed_within_seconds_whatever_was_done_offline(
    central_sqlite: Central, tmp_path: Path
) -> None:
    """Offline, a clerk's commits poke a cheap probe of the link, not another
    failed cycle: the retry never backs off towards its cap, and the work made
    offline converges within a few probe intervals of the link returning."""
    station = await cashier_station(central_sqlite, tmp_path)
    reg = await station.register(ZHANG)
    card = await station.issue_card(reg.patient_id, "", "cash")
    await station.engine.sync_once()
    engine = station.engine
    # timings scaled down 10x from a real window's: cycles 0.3 s, backoff 0.1 s
    # doubling to 6 s, a probe every 0.3 s
    engine.interval_s, engine.base_delay_s, engine.max_delay_s = 0.3, 0.1, 6.0
    engine.probe_interval_s = 0.3
    engine.rng = random.Random(11)
    runner = asyncio.create_task(engine.run())
    probes = 0
    reachable = station.client.reachable

    async def counted(timeout_s: float) -> bool:
        nonlocal probes
        probes += 1
        return await reachable(timeout_s)

    station.client.reachable = counted  # type: ignore[method-assign]
    try:
        await asyncio.sleep(0.1)
        station.offline()
        for i in range(12):  # a busy offline hour, at a window's pace
            await station.top_up(str(card.card_no), str(i + 1), "cash")
            await asyncio.sleep(0.1)
        assert engine.status.online is False
        assert engine.status.retry_in_s is not None and engine.status.retry_in_s <= 0.45
        assert engine.status.failures <= 2  # probes and pokes are not failures
        assert probes >= 5
        station.online()
        back = time.monotonic()
        # converged: every op answered and the cycle that sent them ended well
        while station.store.outbox_stats().pending or engine.status.failures:
            assert time.monotonic() - back < 1.5, "the link came back unnoticed"
            await asyncio.sleep(0.02)
        assert engine.status.online is True
    finally:
        engine.stop()
        await runner
        await station.close()


def test_probes_are_spread_over_half_to_one_and_a_half_intervals() -> None:
    engine = SyncEngine.__new__(SyncEngine)
    engine.probe_interval_s = 3.0
    engine.rng = random.Random(3)
    delays = [engine.probe_delay() for _ in range(1000)]
    assert 1.5 <= min(delays) < 1.7 and 4.3 < max(delays) <= 4.5
