"""Upgrading a site of release 0.1.0 (tests/fixtures/release_0_1_0): its
central database, on SQLite and on PostgreSQL, is migrated with nothing lost
and served again; its workstation's replica opens with its outbox, Sync issues,
leases and cached clerks, and the work it held pending reaches the upgraded
server."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from domain.areas import ROW_TYPES
from domain.ledger import balance, deposit_account
from domain.numbers import Series
from local_db.schema import MIGRATION_SQL, schema_version
from local_db.store import LocalStore
from server.app import create_app
from server.db import (
    REPLICATED,
    cards,
    change_log,
    counters,
    make_engine,
    meta,
    patients,
    transfers,
)
from server.migrate import BASELINE, SchemaNotCurrent, head_revision, migrate, migrate_command
from server.verify import verify_audit
from tests.old_releases import (
    INFO_0_1_0,
    RELEASE_0_1_0,
    blocks_as_leases,
    load_pg_dump,
    table_contents,
)
from workstation.builder import SyncTiming, build_workstation
from workstation.cli import main
from workstation.desk import DeskSettings

# The replica's own tables, which a new release must keep as they are.
LOCAL_TABLES = ("outbox", "sync_issues", "leases", "clerk_cache", "sync_state", "pending_effects")
WANG_DOC_NO = "G87654321"  # registered offline, pending in the fixture's outbox


@dataclass
class Site:
    kind: str
    url: str
    replica: Path
    info: dict[str, Any]
    directory: Path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Site:
    """A copy of the release-0.1.0 site: central database and the replica of
    its workstation "收费窗口 1"."""
    kind = request.param
    replica = tmp_path / "replica.db"
    shutil.copy(RELEASE_0_1_0 / f"replica-{'sqlite' if kind == 'sqlite' else 'pg'}.db", replica)
    if kind == "sqlite":
        shutil.copy(RELEASE_0_1_0 / "central.db", tmp_path / "central.db")
        url = f"sqlite:///{tmp_path / 'central.db'}"
    else:
        new_pg_database: Callable[[str], str] = request.getfixturevalue("new_pg_database")
        url = new_pg_database("release_0_1_0")
        load_pg_dump(url, RELEASE_0_1_0 / "central-pg.sql")
    return Site(kind, url, replica, INFO_0_1_0[kind], tmp_path)


@pytest.fixture
def central(site: Site) -> Iterator[Engine]:
    engine = make_engine(site.url)
    yield engine
    engine.dispose()


def balances(engine: Engine) -> dict[str, int]:
    """Every account's credits minus debits, in fen."""
    result: dict[str, int] = {}
    with engine.connect() as conn:
        for account, amount in conn.execute(
            select(transfers.c.credit_account, func.sum(transfers.c.amount_fen)).group_by(
                transfers.c.credit_account
            )
        ):
            result[account] = result.get(account, 0) + int(amount)
        for account, amount in conn.execute(
            select(transfers.c.debit_account, func.sum(transfers.c.amount_fen)).group_by(
                transfers.c.debit_account
            )
        ):
            result[account] = result.get(account, 0) - int(amount)
    return result


def conn_max_seq(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.max(change_log.c.seq))).scalar_one())


def read_local_tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with closing(sqlite3.connect(path)) as conn:
        return {
            t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in LOCAL_TABLES
        }


async def test_migrating_keeps_every_row_and_the_server_starts(site: Site, central: Engine) -> None:
    before = table_contents(central)
    money = balances(central)
    with central.connect() as conn:
        head = conn.execute(
            select(counters.c.value).where(counters.c.name == "change_seq")
        ).scalar()
        epoch = conn.execute(select(meta.c.value).where(meta.c.key == "epoch")).scalar()
    assert head == conn_max_seq(central) and head and head > 0
    assert sum(len(rows) for rows in before.values()) > 50

    done = migrate(central)  # what `workstation admin --db URL migrate` runs
    assert (done.before, done.after, done.state) == (None, head_revision(), "release-0.1.0")
    assert done.describe().startswith(f"database of release 0.1.0: stamped at {BASELINE}")

    after = table_contents(central)
    # revision 0002: number blocks became leases, shifts came (empty)
    moved = before.pop("number_blocks")
    assert after.pop("leases") == blocks_as_leases(moved) and len(moved) == 4
    assert after.pop("shifts") == []
    assert after.pop("login_failures") == []  # revision 0005: failed logins by workstation
    # revision 0009: clerks' signing keys come (empty); devices of 0.1 have not
    # said yet how far their unsigned ops go
    assert after.pop("clerk_keys") == []
    assert [row[-1] for row in after["devices"]] == [None] * len(before["devices"])
    after["devices"] = [row[:-1] for row in after["devices"]]
    # revision 0003: the change log's entries get a nonce from the next one on
    assert after["change_log"] == [(*row, None) for row in before["change_log"]]
    before["change_log"] = after["change_log"]
    assert after.pop("lease_tallies") == []  # revision 0008: lease limits, counted from now on
    # revision 0006: the audit and the op log are chained, every record kept as it was
    heads = dict((chain, seq) for chain, seq, _ in after.pop("chain_heads"))
    for table in ("audit", "ops"):
        width, kept = len(before[table][0]), {row[0] for row in before[table]}
        assert sorted(r[:width] for r in after[table] if r[0] in kept) == sorted(before[table])
        new = [r for r in after[table] if r[0] not in kept]
        if table == "audit":  # the chain's start, and the migration itself
            assert sorted(r[4] for r in new) == ["chain_start", "migrate"]
            assert heads["audit"] == max(r[0] for r in after[table])
        else:
            assert new == [] and heads["ops"] == len(before["ops"]) > 0
        after[table] = before[table]
    report = verify_audit(central)
    assert report.clean, report.problems
    assert report.ops == len(before["ops"]) and report.transfers == len(before["transfers"])
    assert {t: len(r) for t, r in after.items()} == {t: len(r) for t, r in before.items()}
    assert after == before  # every other row, every value
    assert balances(central) == money
    with central.connect() as conn:
        assert (
            conn.execute(select(counters.c.value).where(counters.c.name == "change_seq")).scalar()
            == head
        )
        assert conn.execute(select(meta.c.value).where(meta.c.key == "epoch")).scalar() == epoch
    assert migrate(central).describe() == f"already at revision {head_revision()}; nothing to do"

    app = create_app(central)  # no migration of its own: the database is at the head
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://central"
    ) as http:
        health = await http.get("/health")
    assert health.status_code == 200 and health.json()["epoch"] == epoch


def test_the_server_refuses_the_database_until_it_is_migrated(
    site: Site, central: Engine, capsys: pytest.CaptureFixture
) -> None:
    before = table_contents(central)
    with pytest.raises(SchemaNotCurrent) as refused:
        create_app(site.url)
    assert "was made by release 0.1.0" in str(refused.value)
    assert f"run: {migrate_command(site.url)}" in str(refused.value)
    # `workstation server` leaves with that message (before it listens)
    with pytest.raises(SystemExit) as exited:
        main(["server", "--db", site.url, "--port", "1"])
    assert exited.value.code == f"error: {refused.value}"
    assert table_contents(central) == before  # refusing changed nothing

    main(["admin", "--db", site.url, "migrate"])
    assert capsys.readouterr().out == (
        f"{site.url}: database of release 0.1.0: stamped at {BASELINE}"
        + (
            "; nothing else to do\n"
            if head_revision() == BASELINE
            else f", upgraded {BASELINE} -> {head_revision()}\n"
        )
    )
    create_app(site.url).state.engine.dispose()
    main(["admin", "--db", site.url, "list-clerks"])
    assert "cash" in capsys.readouterr().out


def test_the_replica_of_0_1_0_opens_with_all_its_own_tables(site: Site) -> None:
    before = read_local_tables(site.replica)
    store = LocalStore(site.replica)
    try:
        assert schema_version(store.conn) == list(MIGRATION_SQL)
        states = dict(store.conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"))
        assert states == site.info["outbox"]  # 6 confirmed, 1 rejected, 4 pending
        issues = store.conn.execute("SELECT kind, status FROM sync_issues ORDER BY issue_id")
        assert [tuple(r) for r in issues] == [("rejected", "open"), ("modified", "open")]
        assert [tuple(r) for r in store.conn.execute("SELECT username FROM clerk_cache")] == [
            ("cash",)
        ]
        # number blocks are leases now, granted to this workstation, with what is used kept
        blocks = before.pop("leases")
        leases = store.conn.execute(
            "SELECT lease_id, resource, first, last, next, granted_at, kind, device_id "
            "FROM leases ORDER BY rowid"
        ).fetchall()
        assert [tuple(r) for r in leases] == [
            (*block, "number_block", site.info["device_id"]) for block in blocks
        ]
        assert store.numbers_left(Series.CARD) == sum(
            last - nxt + 1 for _, series, _, last, nxt, _ in blocks if series == "card"
        )
    finally:
        store.close()
    after = read_local_tables(site.replica)
    del after["leases"]
    # the outbox gained columns: withdrawn (m004), 0 for every op it held; the
    # signing key, signature and key certificate (m005), none: made before ops
    # were signed
    assert [row[-4:] for row in after["outbox"]] == [(0, None, None, None)] * len(before["outbox"])
    after["outbox"] = [row[:-4] for row in after["outbox"]]
    assert after == before


async def test_the_upgraded_server_takes_the_work_the_replica_held(
    site: Site, central: Engine
) -> None:
    migrate(central)
    app = create_app(central)
    station = build_workstation(
        site.replica,
        "http://central",
        device_token=site.info["device_token"],
        settings=DeskSettings(receipts_dir=site.directory / "receipts", ack_wait_s=0),
        transport=httpx.ASGITransport(app=app),
        timing=SyncTiming(interval_s=0.05, base_delay_s=0.01, max_delay_s=0.05),
    )
    store, engine, desk = station.store, station.engine, station.desk
    try:
        session = await desk.login(site.info["clerk"], site.info["password"])
        await desk.current_shift()  # opened in the background at login
        assert session is not None
        before = dict(store.conn.execute("SELECT client_seq, state FROM outbox"))
        # the four made offline before the upgrade, and the shift the login opened
        assert sorted(seq for seq, state in before.items() if state == "pending") == [
            8,
            9,
            10,
            11,
            12,
        ]
        assert store.outbox(1)[0].op.kind == "open_shift"
        await engine.sync_once()

        # the pending ops were applied; the answered ones are as they were
        after = dict(store.conn.execute("SELECT client_seq, state FROM outbox"))
        assert after == {
            seq: "confirmed" if state == "pending" else state for seq, state in before.items()
        }
        assert sorted(after.values()).count("rejected") == 1
        cards_no = site.info["cards"]
        with central.connect() as conn:
            wang = conn.execute(select(patients).where(patients.c.doc_no == WANG_DOC_NO)).one()
            card = conn.execute(select(cards).where(cards.c.card_no == cards_no["wang"])).one()
            assert wang.name == "王芳"
            assert card.patient_id == wang.patient_id and card.status == "active"
            zhang_id = conn.execute(
                select(cards.c.patient_id).where(cards.c.card_no == cards_no["zhang"])
            ).scalar_one()
            li_id = conn.execute(
                select(cards.c.patient_id).where(cards.c.card_no == cards_no["li"])
            ).scalar_one()
        money = balances(central)
        expected = {
            zhang_id: 5_000 + 12_050 + 500,  # 50 cash, 120.50 WeChat; 5 by bank card (pending)
            wang.patient_id: 20_000 + 1_000,  # 200 Alipay with the card, 10 cash (pending)
            li_id: 0,  # the 30 top-up to a card cancelled meanwhile was rejected
        }
        for patient_id, fen in expected.items():
            assert money.get(deposit_account(patient_id), 0) == fen
            assert balance(store.state, deposit_account(patient_id)).fen == fen
        assert sum(money.values()) == 0  # every fen that came in sits in a deposit
        assert replica_rows(store) == server_rows(central)
        # the Sync issues the clerk has not handled yet are still open
        issues = store.conn.execute("SELECT kind, status FROM sync_issues ORDER BY issue_id")
        assert [tuple(r) for r in issues] == [("rejected", "open"), ("modified", "open")]

        # and new work goes through
        view = desk.patient_by_card(cards_no["wang"])
        done = await station.cashier.commit(
            station.cashier.top_up_draft(view, cards_no["wang"], "1.00", "cash")
        )
        assert done.receipt is not None
        await engine.sync_once()
        assert (
            store.conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
            == 0
        )
        assert balances(central)[deposit_account(wang.patient_id)] == 21_100
        # the old records and the new ones form one chain; the ledger matches the op log
        report = verify_audit(central)
        assert report.clean and report.transfers == 6, report.problems
    finally:
        await station.aclose()


def replica_rows(store: LocalStore) -> dict[str, list[tuple[Any, ...]]]:
    result = {}
    for row_type in ROW_TYPES:
        cols = ", ".join(row_type.model_fields)
        result[row_type.table] = [
            tuple(r)
            for r in store.conn.execute(
                f"SELECT {cols} FROM {row_type.table} ORDER BY {row_type.key}"
            )
        ]
    return result


def server_rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    result = {}
    with engine.connect() as conn:
        for row_type in ROW_TYPES:
            table = REPLICATED[row_type.table]
            result[row_type.table] = [
                tuple(r) for r in conn.execute(select(table).order_by(table.c[row_type.key]))
            ]
    return result
