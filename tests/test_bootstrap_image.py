"""Bootstrap from a replica image (GET /sync/snapshot/image), on SQLite and
PostgreSQL: the workstation ends with exactly the server's rows and its own
outbox; a damaged download changes nothing; a workstation of another schema
gets the row snapshot; images are reused, and rebuilt once stale."""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from domain.numbers import Series
from local_db.image import SCHEMA_ID, build_image
from local_db.pinyin import readings
from local_db.store import LocalStore
from server.bulk import bulk_load
from server.db import audit, change_log, leases, ops, transfers
from server.site import start_new_epoch
from server.snapshots import SnapshotImages
from sync.client import ServerBusy
from sync.protocol import DEVICE_HEADER
from tests.harness import (
    PASSWORD,
    Central,
    Station,
    back_up,
    cashier_station,
    restore,
    work_a_restore_will_lose,
)
from tests.test_sync_end_to_end import LI, ZHANG, replica_rows, server_rows
from workstation.demo.seed import demo_rows

IMAGE_PATH = "/sync/snapshot/image"


@pytest.fixture
def images(central: Central, tmp_path: Path) -> SnapshotImages:
    """The server's images, in this test's own directory (on PostgreSQL the
    default is one directory for the whole test process)."""
    snapshots: SnapshotImages = central.app.state.snapshots
    snapshots.directory = tmp_path / "images"
    return snapshots


def seed(central: Central, patients: int = 300) -> None:
    bulk_load(central.engine, demo_rows(central.engine, patients, seed=11))


def bootstraps(central: Central) -> list[tuple[str, str, str]]:
    """(action, target, outcome) of every snapshot request, in order."""
    with central.engine.connect() as conn:
        rows = conn.execute(
            select(audit.c.action, audit.c.target, audit.c.outcome)
            .where(audit.c.action.in_(["snapshot", "snapshot_image"]))
            .order_by(audit.c.audit_id)
        )
        return [(r.action, r.target, r.outcome) for r in rows]


def image_files(images: SnapshotImages) -> list[str]:
    return sorted(p.name for p in images.directory.glob("replica-*.db.gz"))


def files_beside(store: LocalStore) -> list[str]:
    return sorted(p.name for p in Path(store.path).parent.iterdir() if p.is_file())


def initials(name: str) -> str:
    return "".join(readings(ch)[0][0] for ch in name)


class FlipByte(httpx.AsyncBaseTransport):
    """Damages answers on the way: one byte in the middle of the body of a
    successful answer to any of ``paths`` is flipped."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.paths: set[str] = set()
        self.flipped = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path not in self.paths or response.status_code != 200:
            return response
        body = bytearray(await response.aread())
        body[len(body) // 2] ^= 0xFF
        self.flipped += 1
        return httpx.Response(200, headers=response.headers, stream=httpx.ByteStream(bytes(body)))


async def test_workstation_from_an_image_has_the_server_rows_and_finds_patients(
    central: Central, images: SnapshotImages, tmp_path: Path
) -> None:
    seed(central)
    station = await cashier_station(central, tmp_path)
    store = station.store

    [(action, target, outcome)] = bootstraps(central)
    assert (action, outcome) == ("snapshot_image", "ok")
    server = server_rows(central)
    assert replica_rows(store) == server
    assert len(server["patients"]) == 300 and server["cards"] and server["transfers"]
    epoch, cursor = target.split(":")
    assert store.get_meta("epoch") == epoch == central.sync.epoch()
    # the image, then the row of the shift the login opened, pushed and pulled
    assert store.get_meta("cursor") == str(int(cursor) + 1)
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert files_beside(store) == ["replica.db", "replica.db-shm", "replica.db-wal"]

    patient = server["patients"][123]
    card = next(c for c in server["cards"] if c["patient_id"] != patient["patient_id"])
    found = {
        "name": store.search(patient["name"], limit=1000),
        "pinyin": store.search(initials(patient["name"]), limit=1000),
        "id": store.search(patient["doc_no"][:10], limit=1000),
    }
    for how, hits in found.items():
        assert patient["patient_id"] in {h.patient_id for h in hits}, how
    [by_card] = store.search(card["card_no"])
    assert by_card.patient_id == card["patient_id"] and by_card.matched == "card"

    # the replica works on: commands decide against it, its search index follows
    reg = await station.register(ZHANG)
    assert [h.patient_id for h in store.search("张三丰")] == [reg.patient_id]
    await station.issue_card(reg.patient_id, "50", "cash")
    await station.engine.sync_once()
    assert store.outbox_stats().pending == 0
    assert replica_rows(store) == server_rows(central)
    await station.close()


async def test_rebootstrap_after_a_restore_keeps_the_outbox_and_pushes_what_was_lost(
    tmp_path: Path,
) -> None:
    lost = await work_a_restore_will_lose(tmp_path, ZHANG)  # the server had the top-ups...
    central, station = lost.central, lost.station
    station.offline()
    await station.top_up(lost.card_no, "7", "cash")  # ...and this one never left
    outbox = [(e.op.client_seq, e.op.op_id) for e in station.store.outbox()]
    receipts_left = station.store.numbers_left(Series.RECEIPT)

    # the server's disk died; restore last night's backup
    epoch = restore(central, lost.db, lost.backup)

    station.online()
    # the push comes first: the server waits for the first op the restore lost
    # (sequence_gap), the workstation sends again from there; then the pull
    # sees the new epoch and re-bootstraps from a new image
    report = await station.engine.sync_once()
    assert report.bootstrapped
    assert bootstraps(central)[-1][0] == "snapshot_image"
    assert station.store.get_meta("epoch") == epoch
    assert [(e.op.client_seq, e.op.op_id) for e in station.store.outbox()] == outbox
    assert station.store.numbers_left(Series.RECEIPT) == receipts_left
    assert report.pushed == 3  # two lost by the restore, one never sent
    await station.engine.sync_once()
    assert station.store.outbox_stats().pending == 0
    view = station.desk.patient(lost.patient_id)
    assert view is not None and view.balance_fen == 5000 + 10000 + 3000 + 700
    assert view.confirmed_balance_fen == view.balance_fen
    with central.engine.connect() as conn:
        assert conn.execute(select(func.sum(transfers.c.amount_fen))).scalar() == 18700
    assert replica_rows(station.store) == server_rows(central)

    # the cached clerk came along: offline login still works
    await station.desk.logout()
    station.offline()
    assert (await station.desk.login("cash", PASSWORD)).mode == "offline"
    await station.close()
    central.close()


async def test_a_damaged_download_changes_nothing_and_the_rows_are_used_instead(
    central: Central, images: SnapshotImages, tmp_path: Path
) -> None:
    seed(central, 50)
    central.clerk("cash", ["cashier"])
    faulty = FlipByte(central.transport())
    station = Station(central, tmp_path / "a", "a", transport=faulty)
    await station.enroll_and_login("cash")
    store = station.store
    reg = await station.register(ZHANG)
    await station.engine.sync_once()
    station.offline()
    await station.issue_card(reg.patient_id, "20", "cash")

    def replica() -> tuple[object, ...]:
        return (
            replica_rows(store),
            store.outbox(),
            store.get_meta("cursor"),
            store.get_meta("epoch"),
            files_beside(store),
        )

    before = replica()
    start_new_epoch(central.engine)
    station.online()
    faulty.paths = {IMAGE_PATH, "/sync/snapshot"}
    with pytest.raises(ValueError):
        await station.engine.bootstrap()
    assert faulty.flipped == 2  # the image, then the row snapshot
    assert replica() == before

    faulty.paths = {IMAGE_PATH}
    await station.engine.bootstrap()  # a damaged image, then the rows
    assert [a[0] for a in bootstraps(central)[-2:]] == ["snapshot_image", "snapshot"]
    assert store.get_meta("epoch") == central.sync.epoch()
    assert store.outbox_stats().pending == 1
    await station.engine.sync_once()
    assert replica_rows(store) == server_rows(central)
    assert files_beside(store) == before[-1]  # no temporary file left behind
    await station.close()


async def test_another_schema_gets_409_and_the_row_snapshot(
    central: Central, images: SnapshotImages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(central, 50)
    central.clerk("cash", ["cashier"])
    monkeypatch.setattr("sync.engine.SCHEMA_ID", "0123456789abcdef")  # an older workstation
    station = Station(central, tmp_path / "a", "a")
    await station.enroll_and_login("cash")
    assert [(a, o) for a, _, o in bootstraps(central)] == [
        ("snapshot_image", "refused"),
        ("snapshot", "ok"),
    ]
    assert replica_rows(station.store) == server_rows(central)
    assert image_files(images) == []  # a refusal builds nothing

    headers = {
        DEVICE_HEADER: station.client.device_token or "",
        "Authorization": f"Bearer {station.client.session_token}",
    }
    async with httpx.AsyncClient(transport=central.transport(), base_url="http://t") as http:
        refused = await http.get(IMAGE_PATH, params={"schema": "0123"}, headers=headers)
        assert refused.status_code == 409
        body = refused.json()
        assert body["code"] == "snapshot_schema_mismatch"
        assert body["message_zh"] and body["message_en"]
        assert body["detail"] == {"server_schema": SCHEMA_ID}
        unauthorised = await http.get(IMAGE_PATH, params={"schema": SCHEMA_ID})
        assert unauthorised.status_code == 401
    await station.close()


async def test_an_image_is_reused_and_rebuilt_once_stale(
    central: Central, images: SnapshotImages, tmp_path: Path
) -> None:
    seed(central, 50)
    central.clerk("cash", ["cashier"])
    a = Station(central, tmp_path / "a", "a")
    b = Station(central, tmp_path / "b", "b")
    await a.enroll_and_login("cash")
    [first] = image_files(images)
    await b.enroll_and_login("cash")
    assert image_files(images) == [first]  # reused, not rebuilt
    old = bootstraps(central)[0][1]
    assert [t for _, t, _ in bootstraps(central)] == [old, old]

    images.stale_changes = 2
    reg = await a.register(ZHANG)
    await a.issue_card(reg.patient_id, "50", "cash")  # 3 more rows: stale
    await a.engine.sync_once()
    c = Station(central, tmp_path / "c", "c")
    await c.enroll_and_login("cash")  # the stale image, then a pull of the rest
    assert bootstraps(central)[-1][1] == old
    assert replica_rows(c.store) == server_rows(central)
    assert images._builder is not None
    images._builder.join(30)  # the rebuild it started
    assert len(image_files(images)) == 2

    d = Station(central, tmp_path / "d", "d")
    await d.enroll_and_login("cash")
    new = bootstraps(central)[-1][1]
    assert int(new.split(":")[1]) > int(old.split(":")[1])
    assert replica_rows(d.store) == server_rows(central)
    for station in (a, b, c, d):
        await station.close()


async def test_while_the_first_image_is_built_the_workstation_is_told_to_retry(
    central: Central, images: SnapshotImages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    central.clerk("cash", ["cashier"])
    release = threading.Event()
    build = images.build

    def slow_build() -> object:
        release.wait(30)
        return build()

    monkeypatch.setattr(images, "build", slow_build)
    images.wait_s = 0.05
    station = Station(central, tmp_path / "a", "a")
    with pytest.raises(ServerBusy) as busy:
        await station.enroll_and_login("cash")
    assert busy.value.code == "snapshot_preparing"
    assert station.store.get_meta("epoch") is None
    release.set()
    assert images._builder is not None
    images._builder.join(30)
    report = await station.engine.sync_once()
    assert report.bootstrapped and bootstraps(central)[-1][0] == "snapshot_image"
    await station.close()


def test_an_image_is_not_installed_over_a_replica_open_elsewhere(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "replica.db")
    store.set_meta("device_id", "dev-1")
    image = tmp_path / "image.db"
    build_image(image, [], cursor=0, epoch="e1")
    with pytest.raises(ValueError):
        store.install_image(image, cursor=1, epoch="e1", device_last_seq=0)  # not what it says
    other = sqlite3.connect(tmp_path / "replica.db")
    other.execute("SELECT 1 FROM sync_state").fetchall()
    with pytest.raises(RuntimeError):
        store.install_image(image, cursor=0, epoch="e1", device_last_seq=0)
    other.close()
    assert store.get_meta("epoch") is None and store.device_id == "dev-1"  # still usable
    store.install_image(image, cursor=0, epoch="e1", device_last_seq=0)
    assert store.get_meta("epoch") == "e1" and store.device_id == "dev-1"
    assert not image.exists()
    store.close()


def test_a_build_removes_work_files_a_dead_build_left_and_spares_a_live_ones(
    central: Central, images: SnapshotImages
) -> None:
    seed(central, 20)
    images.directory.mkdir(parents=True)
    dead = images.directory / ".building-dead.db"
    live = images.directory / ".building-live.db"
    for work in (dead, live):
        work.write_bytes(b"half an image")
    long_ago = time.time() - 2 * 3600
    os.utime(dead, (long_ago, long_ago))
    image = images.build()
    assert not dead.exists()
    assert live.exists()  # another process may still be writing it
    assert (images.directory / image.file).exists()


async def test_a_refusal_the_restore_lost_is_withdrawn_and_nothing_is_stuck(
    tmp_path: Path,
) -> None:
    """The backup lacks an op the server had refused: the re-bootstrapped
    workstation sends it withdrawn (recorded as refused again, never applied:
    the clerk was told and may have handed the money back), and the device's
    later ops are applied instead of deferred for ever."""
    lost = await work_a_restore_will_lose(tmp_path, ZHANG)
    central, station = lost.central, lost.station
    central.clerk("boss", ["supervisor"])
    other = Station(central, tmp_path / "b", "b")
    await other.enroll_and_login("boss")
    await other.cancel_card(lost.card_no, "damaged")
    await other.engine.sync_once()
    refused = await station.top_up(lost.card_no, "77", "cash")  # to a card cancelled meanwhile
    await station.engine.sync_once()
    assert station.store.op_answer(refused.op_id)[0] == "rejected"
    [issue] = station.desk.issues()
    assert issue["code"] == "card_not_active"
    station.desk.resolve_issue(int(issue["issue_id"]), "gave the 77.00 back in cash")
    await other.close()

    restore(central, lost.db, lost.backup)  # the top-ups, the cancel and the refusal: all lost
    await station.engine.sync_once()  # new epoch: re-bootstrap
    await station.engine.sync_once()
    assert station.store.op_answer(refused.op_id)[0] == "rejected"
    assert station.store.outbox_stats().pending == 0
    assert station.engine.status.error_code is None
    # not applied: the server recorded it as withdrawn; the clerk's issue stays handled
    with central.engine.connect() as conn:
        row = conn.execute(
            select(ops.c.status, ops.c.code).where(ops.c.op_id == refused.op_id)
        ).one()
        assert tuple(row) == ("rejected", "withdrawn")
        assert (
            conn.execute(select(func.sum(transfers.c.amount_fen))).scalar() == 5000 + 10000 + 3000
        )
    assert [i["status"] for i in station.desk.issues(None)] == ["resolved"]

    # and the device's sequence goes on
    after = await station.top_up(lost.card_no, "5", "cash")
    await station.engine.sync_once()
    assert station.store.op_answer(after.op_id)[0] in ("acked", "confirmed")
    assert replica_rows(station.store) == server_rows(central)
    await station.close()
    central.close()


async def test_a_restore_without_a_new_epoch_is_healed_when_the_server_waits(
    tmp_path: Path,
) -> None:
    """Nobody ran `new-epoch` after the restore: the server answers the next
    op `deferred sequence_gap`, and the workstation sends again, from the one
    the server waits for, what the restore lost."""
    lost = await work_a_restore_will_lose(tmp_path, ZHANG)
    central, station = lost.central, lost.station
    central.engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{lost.db}{suffix}").unlink(missing_ok=True)
    shutil.copy(lost.backup, lost.db)  # no new epoch
    later = await station.top_up(lost.card_no, "9", "cash")
    await station.engine.sync_once()
    assert station.store.op_answer(later.op_id)[0] in ("acked", "confirmed")
    with central.engine.connect() as conn:
        total = conn.execute(select(func.sum(transfers.c.amount_fen))).scalar()
    assert total == 5000 + 10000 + 3000 + 900  # the lost top-ups sent again, and the new one
    await station.close()
    central.close()


async def test_a_device_the_server_waits_for_in_vain_raises_the_alarm(
    central_sqlite: Central, tmp_path: Path
) -> None:
    """If the workstation cannot send what the server waits for (its own
    record of the op is gone), the status bar and Sync issues say so."""
    station = await cashier_station(central_sqlite, tmp_path)
    reg = await station.register(ZHANG)
    station.offline()
    card = await station.issue_card(reg.patient_id, "50", "cash")
    top_up = await station.top_up(card.card_no, "10", "cash")
    # the issue's record is lost (a replica restored from an old copy, a disk fault)
    with station.store.transaction() as conn:
        conn.execute("DELETE FROM outbox WHERE op_id = ?", (card.op_id,))
    station.online()
    for _ in range(6):
        await station.engine.sync_once()
    assert station.store.op_answer(top_up.op_id)[0] == "pending"
    assert station.engine.status.error_code == "ops_stuck"
    assert "第" in (station.engine.status.error_zh or "")
    [issue] = [i for i in station.desk.issues() if i["kind"] == "stuck"]
    assert issue["op_id"] == top_up.op_id and issue["code"] == "sequence_gap"
    await station.close()


async def test_a_server_behind_the_replica_is_noticed_and_recovered_from(
    tmp_path: Path,
) -> None:
    """Restored without a new epoch, the server's change log ends before this
    replica's cursor: the workstation notices on its next pull, re-bootstraps,
    sends again what the restore lost, and tells the clerk (a Sync issue)."""
    lost = await work_a_restore_will_lose(tmp_path, ZHANG)
    central, station = lost.central, lost.station
    central.engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{lost.db}{suffix}").unlink(missing_ok=True)
    shutil.copy(lost.backup, lost.db)  # no new epoch
    report = await station.engine.sync_once()
    assert report.bootstrapped
    [issue] = station.desk.issues()
    assert (issue["kind"], issue["code"]) == ("server_restored", "server_restored")
    await station.engine.sync_once()
    assert station.store.outbox_stats().pending == 0
    with central.engine.connect() as conn:
        total = conn.execute(select(func.sum(transfers.c.amount_fen))).scalar()
    assert total == 5000 + 10000 + 3000  # the top-ups the restore lost, sent again once
    assert replica_rows(station.store) == server_rows(central)
    await station.close()
    central.close()


async def test_a_restore_the_log_has_grown_past_is_noticed_by_its_changes(
    tmp_path: Path,
) -> None:
    """Restored without a new epoch, and written anew past this replica's
    cursor before it pulls: neither the head nor this device's sequence gives
    the restore away, only the change at the cursor, which is another one
    now. The server refuses the pull (``server_behind``, audited), the
    workstation loads the data again and misses nothing registered since."""
    db, backup = tmp_path / "central.db", tmp_path / "backup.db"
    central = Central(f"sqlite:///{db}")
    a = await cashier_station(central, tmp_path)
    await a.register(ZHANG)
    await a.engine.sync_once()
    central.engine.dispose()
    back_up(db, backup)
    b = Station(central, tmp_path / "b", "b")
    await b.enroll_and_login("cash")
    await b.register(LI)
    await b.engine.sync_once()
    await a.engine.sync_once()  # a has b's patient: its cursor is past the backup's head
    cursor = int(a.store.get_meta("cursor") or 0)

    central.engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, db)  # no new epoch
    c = Station(central, tmp_path / "c", "c")
    await c.enroll_and_login("cash")
    for n, name in enumerate(("王一", "王二", "王三")):
        await c.register(
            replace(
                LI, name=name, doc_type="passport", doc_no=f"E1234567{n}", birth_date="1980-01-01"
            )
        )
    await c.engine.sync_once()
    with central.engine.connect() as conn:
        head = conn.execute(select(func.max(change_log.c.seq))).scalar()
    assert head is not None and head >= cursor  # the head alone does not tell

    report = await a.engine.sync_once()
    assert report.bootstrapped
    [issue] = a.desk.issues()
    assert issue["kind"] == "server_restored"
    with central.engine.connect() as conn:
        [found] = conn.execute(select(audit).where(audit.c.action == "server_behind")).all()
    assert (found.device_id, found.target) == (a.store.get_meta("device_id"), "change_differs")
    for _ in range(2):  # and from now on, pulls as usual
        report = await a.engine.sync_once()
        assert not report.bootstrapped and a.desk.issues() == [issue]
    assert replica_rows(a.store) == server_rows(central)  # c's patients are there
    for station in (a, b, c):
        await station.close()
    central.close()


@pytest.mark.parametrize("new_epoch", [True, False])
async def test_a_number_block_the_restore_forgot_is_told_again_before_anything_is_pushed(
    tmp_path: Path, new_epoch: bool
) -> None:
    """A block of receipt numbers leased after the backup, used offline: the
    restored server does not know it. The push meets a server of another
    epoch (or behind the replica) and is refused before anything is applied;
    the workstation loads the data again, tells its blocks again, and the
    top-up goes through, its receipt number its own."""
    db, backup = tmp_path / "central.db", tmp_path / "backup.db"
    central = Central(f"sqlite:///{db}")
    station = await cashier_station(central, tmp_path)
    reg = await station.register(ZHANG)
    card = await station.issue_card(reg.patient_id, "50", "cash")
    await station.engine.sync_once()
    central.engine.dispose()
    back_up(db, backup)

    old = [b.lease_id for b in station.store.number_blocks_held() if b.resource == "receipt"]
    block = await station.client.lease("number_block", "receipt", 10)
    station.store.add_lease(block)
    station.store.stop_using(old)  # the next receipt comes from the new block
    station.offline()
    top_up = await station.top_up(card.card_no, "100", "cash")
    assert top_up.receipt is not None
    receipt_no = top_up.receipt.receipt_no

    central.engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, db)
    if new_epoch:
        start_new_epoch(central.engine)
    station.online()
    report = await station.engine.sync_once()
    assert report.bootstrapped and report.rejected == 0
    await station.engine.sync_once()
    state, answer = station.store.op_answer(top_up.op_id)
    assert state == "confirmed" and answer is not None and answer["status"] == "applied"
    # nothing refused; a restore found without a new epoch is said, once
    kinds = [i["kind"] for i in station.desk.issues()]
    assert kinds == ([] if new_epoch else ["server_restored"])
    with central.engine.connect() as conn:
        got = conn.execute(select(transfers.c.receipt_no).where(transfers.c.op_id == top_up.op_id))
        assert [r[0] for r in got] == [receipt_no]
        held = conn.execute(select(leases.c.device_id).where(leases.c.lease_id == block.lease_id))
        assert [r[0] for r in held] == [station.store.device_id]
    await station.close()
    central.close()


async def test_numbers_granted_after_a_restore_do_not_collide_with_blocks_it_forgot(
    tmp_path: Path,
) -> None:
    """The counters live in the database, which the restore took back; where
    they have been is kept beside the replica images too, so a block granted
    after the restore starts past every block granted before it."""
    db, backup = tmp_path / "central.db", tmp_path / "backup.db"
    central = Central(f"sqlite:///{db}")
    a = await cashier_station(central, tmp_path)
    central.engine.dispose()
    back_up(db, backup)
    forgotten = await a.client.lease("number_block", "receipt", 10)
    central.engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, db)  # no new epoch; nobody has noticed yet
    b = Station(central, tmp_path / "b", "b")
    await b.enroll_and_login("cash")
    await b.client.lease("number_block", "receipt", 10)
    blocks = [x for x in b.store.number_blocks_held() if x.resource == "receipt"]
    blocks.append(await b.client.lease("number_block", "receipt", 10))
    assert forgotten.first is not None and forgotten.last is not None
    for block in blocks:  # b's first block (at its enrolment) and the one asked for
        assert block.first is not None and block.first > forgotten.last
    await a.close()
    await b.close()
    central.close()
