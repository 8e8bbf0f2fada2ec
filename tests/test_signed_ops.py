"""An operation runs as the clerk who signed it (domain.signing), whoever's
session pushes it: a colleague's session, another device's, or a clerk id
read from a pull cannot stand in for anyone; ops a clerk made offline still
go through under the next clerk's session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import delete, select, update
from ulid import ULID

from domain.cashier.cancel_card import CancelCard
from domain.cashier.top_up import TopUp
from domain.ledger import balance, deposit_account
from domain.numbers import receipt_no_for
from domain.signing import SigningKey
from local_db.keys import seal, unseal
from server.chain import GENESIS, OPS, OPS_FIELDS, op_hash_values, record_hash
from server.db import audit, chain_heads, clerk_keys, clerks, devices, ops
from server.verify import verify_audit
from tests.harness import Central, Station, back_up, restore
from tests.test_server_api import (
    PASSWORD,
    Server,
    _serve,
    count_rows,
    enroll,
    login,
    open_window,
    patient_with_card,
    push,
    register_cmd,
    signed,
    wire,
)
from tests.test_server_api import cheap_password_hashing as cheap_password_hashing  # autouse
from tests.test_sync_end_to_end import LI, ZHANG


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[Server]:
    async for s in _serve(db_url):
        yield s


def _device(server: Server, device_id: str) -> Any:
    with server.engine.connect() as conn:
        return conn.execute(select(devices).where(devices.c.device_id == device_id)).one()


async def test_a_session_cannot_act_as_another_clerk(server: Server) -> None:
    """Found: a cashier's session cancelled a card as the supervisor, a
    registrar's booked a top-up as the cashier, and a supervisor who never
    logged in on device B was used from device B."""
    cashier = await open_window(server)
    patient_id, card, receipt_seq = await patient_with_card(server, cashier)
    boss_elsewhere = await open_window(server, "boss", ("supervisor",), name="b")
    registrar = await open_window(server, "reg", ("registrar",), name="r")
    cancel = CancelCard(card_no=card, reason="lost")
    top_up = TopUp(
        transfer_id=str(ULID()),
        card_no=card,
        amount_fen=77_700,
        method="cash",
        receipt_no=receipt_no_for(receipt_seq),
    )
    by_cashier = wire(cashier, cancel, clerk_id=boss_elsewhere.clerk_id)  # the cashier's key
    unsigned = wire(cashier, cancel, clerk_id=boss_elsewhere.clerk_id)
    unsigned.pop("key_id"), unsigned.pop("signature")
    foreign_key = signed(  # the supervisor's own key, but on device b
        wire(cashier, cancel, clerk_id=boss_elsewhere.clerk_id),
        boss_elsewhere.key,
        cashier.device_id,
    )
    made_up_key = signed(
        wire(cashier, cancel, clerk_id=boss_elsewhere.clerk_id),
        SigningKey.generate(),
        cashier.device_id,
    )
    results = await push(server, cashier, by_cashier, unsigned, foreign_key, made_up_key)
    assert [(r["status"], r["code"]) for r in results] == [
        ("rejected", "signature_invalid"),
        ("rejected", "op_unsigned"),
        ("rejected", "signature_invalid"),
        ("rejected", "signature_invalid"),
    ]
    assert all(r["message_zh"] and r["message_en"] for r in results)
    # the registrar's session, naming the cashier
    [result] = await push(server, registrar, wire(registrar, top_up, clerk_id=cashier.clerk_id))
    assert (result["status"], result["code"]) == ("rejected", "signature_invalid")
    with server.engine.connect() as conn:
        assert ledger_balance(conn, patient_id) == 5_000  # the card's prepayment only
    # the refused ops were recorded and the cashier's sequence goes on
    [result] = await push(server, cashier, wire(cashier, register_cmd()))
    assert result["status"].startswith("applied")
    # the supervisor, logged in at the cashier's window, may cancel it
    boss_here_key = SigningKey.generate()
    assert (await login(server, cashier.device_token, "boss", boss_here_key)).status_code == 200
    [result] = await push(
        server,
        cashier,  # still the cashier's session: the op was made by the supervisor
        signed(
            wire(cashier, cancel, clerk_id=boss_elsewhere.clerk_id),
            boss_here_key,
            cashier.device_id,
        ),
    )
    assert result["status"] == "applied", result


def ledger_balance(conn: Any, patient_id: str) -> int:
    from server.db import transfers

    account = deposit_account(patient_id)
    rows = conn.execute(
        select(transfers.c.debit_account, transfers.c.credit_account, transfers.c.amount_fen)
    )
    return sum(
        (amount if credit == account else 0) - (amount if debit == account else 0)
        for debit, credit, amount in rows
    )


async def test_a_key_belongs_to_one_clerk_on_one_device(server: Server) -> None:
    cashier = await open_window(server)
    other = await open_window(server, "cash2", name="w2")
    # another clerk presenting the cashier's public key
    answer = await login(server, other.device_token, "cash2", cashier.key)
    assert answer.status_code == 409 and answer.json()["code"] == "key_taken"
    assert answer.json()["message_zh"] and answer.json()["message_en"]
    # the same clerk, the same key, another device
    answer = await login(server, other.device_token, "cash", cashier.key)
    assert answer.status_code == 409
    # again on its own device: nothing new
    assert (await login(server, cashier.device_token, "cash", cashier.key)).status_code == 200
    with server.engine.connect() as conn:
        keys = conn.execute(select(clerk_keys.c.clerk_id, clerk_keys.c.device_id)).all()
    assert sorted(keys) == sorted(
        [(cashier.clerk_id, cashier.device_id), (other.clerk_id, other.device_id)]
    )


async def test_unsigned_ops_only_from_before_the_device_signed(server: Server) -> None:
    """A device enrolled before ops were signed (release 0.1) has NULL: its
    unsigned ops are taken until its first login with a key says how far
    they go; a device enrolled since signs everything."""
    fresh = await open_window(server, name="new")
    assert _device(server, fresh.device_id).unsigned_through == 0
    device_id, token = await enroll(server, "old")
    with server.engine.begin() as conn:  # as migration 0009 leaves a device of 0.1
        conn.execute(
            update(devices).where(devices.c.device_id == device_id).values(unsigned_through=None)
        )
    answer = (await login(server, token, "cash")).json()  # a 0.1 workstation: no key
    old = type(fresh)(
        device_id, token, answer["session_token"], answer["clerk"]["clerk_id"], fresh.key
    )

    def bare(op: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in op.items() if k not in ("key_id", "signature")}

    [result] = await push(server, old, bare(wire(old, register_cmd())))
    assert result["status"] == "applied"  # release 0.1 goes on working
    key = SigningKey.generate()
    body = {
        "username": "cash",
        "password": PASSWORD,
        "signing_key": key.public_key.hex(),
        "unsigned_through": 2,
    }
    headers = {"X-Device-Token": token}
    assert (await server.http.post("/auth/login", json=body, headers=headers)).status_code == 200
    assert _device(server, device_id).unsigned_through == 2
    body["unsigned_through"] = 1_000  # said once only
    assert (await server.http.post("/auth/login", json=body, headers=headers)).status_code == 200
    assert _device(server, device_id).unsigned_through == 2
    old.key = key
    results = await push(
        server,
        old,
        bare(wire(old, register_cmd())),  # seq 2: made before the upgrade
        bare(wire(old, register_cmd())),  # seq 3: made after, unsigned
        wire(old, register_cmd()),  # seq 4: signed
    )
    assert [r["status"].split("_")[0] for r in results] == ["applied", "rejected", "applied"]
    assert results[1]["code"] == "op_unsigned"
    # and the new device never takes an unsigned op
    [result] = await push(server, fresh, bare(wire(fresh, register_cmd())))
    assert (result["status"], result["code"]) == ("rejected", "op_unsigned")
    assert count_rows(server, ops) == 5


# -- the workstation's side ----------------------------------------------------


def test_a_sealed_key_opens_only_with_its_password_clerk_and_device() -> None:
    key = SigningKey.generate()
    sealed = seal(key, "correct horse", "clerk-1", "device-1")
    assert key.private_bytes() not in sealed.sealed
    opened = unseal(sealed, "correct horse", "clerk-1", "device-1")
    assert opened is not None and opened.key_id == key.key_id
    assert unseal(sealed, "correct horsE", "clerk-1", "device-1") is None
    assert unseal(sealed, "correct horse", "clerk-2", "device-1") is None  # copied to another
    assert unseal(sealed, "correct horse", "clerk-1", "device-2") is None  # another replica


@pytest.fixture
async def station(central: Central, tmp_path: Path) -> AsyncIterator[Station]:
    central.clerk("cash", ["cashier"])
    central.clerk("boss", ["cashier", "supervisor"])
    station = Station(central, tmp_path / "a", "a")
    await station.enroll_and_login("cash")
    yield station
    await station.close()


async def test_offline_work_is_signed_by_its_clerk_and_taken_under_another_session(
    central: Central, station: Station
) -> None:
    """The cashier logs in online (a key sealed, its public half registered),
    works offline after an offline login of the supervisor too; the
    supervisor's session pushes both clerks' work, each applied as its own."""
    desk, store = station.desk, station.store
    cash_id = desk.clerk.clerk_id  # type: ignore[union-attr]
    sealed = store.sealed_key(cash_id)
    assert sealed is not None
    await desk.logout()
    await desk.login("boss", PASSWORD)  # online: the supervisor's key here too
    boss_id = desk.clerk.clerk_id  # type: ignore[union-attr]
    await desk.current_shift()
    await desk.logout()
    station.offline()
    await desk.login("cash", PASSWORD)
    assert desk.clerk is not None and desk.clerk.mode == "offline"
    await desk.current_shift()
    done = await station.register(ZHANG)
    await desk.logout()
    await desk.login("boss", PASSWORD)
    await desk.current_shift()
    await station.register(LI)
    rows = store.conn.execute(
        "SELECT clerk_id, key_id, signature FROM outbox WHERE state = 'pending' ORDER BY client_seq"
    ).fetchall()
    assert {row["clerk_id"] for row in rows} == {cash_id, boss_id}
    assert all(row["signature"] for row in rows)
    assert {row["key_id"] for row in rows if row["clerk_id"] == cash_id} == {sealed.key_id}
    station.online()
    await station.engine.sync_once()
    states = store.conn.execute("SELECT DISTINCT state FROM outbox").fetchall()
    assert [s[0] for s in states] == ["confirmed"]
    with central.engine.connect() as conn:
        made = conn.execute(
            select(ops.c.clerk_id, ops.c.pushed_by).where(ops.c.op_id == done.op_id)
        ).one()
    assert made == (cash_id, boss_id)  # made by the cashier, pushed by the supervisor's session
    assert balance(store.state, deposit_account(done.patient_id)).fen == 0


async def test_a_new_password_gets_a_new_key_and_old_work_still_counts(
    central: Central, station: Station
) -> None:
    desk, store = station.desk, station.store
    cash_id = desk.clerk.clerk_id  # type: ignore[union-attr]
    first = store.sealed_key(cash_id)
    assert first is not None
    station.offline()
    done = await station.register(ZHANG)  # signed with the first key, pending
    await desk.logout()
    with central.engine.begin() as conn:  # the password changed at the server
        conn.execute(
            update(clerks)
            .where(clerks.c.username == "cash")
            .values(password_hash=PasswordHasher().hash("another-pass-9"))
        )
    station.online()
    await desk.login("cash", "another-pass-9")
    await desk.current_shift()  # what the login keeps is written in the background
    await station.engine.sync_once()
    second = store.sealed_key(cash_id)
    assert second is not None and second.key_id != first.key_id
    assert unseal(second, "another-pass-9", cash_id, store.device_id) is not None
    state = store.conn.execute("SELECT state FROM outbox WHERE op_id = ?", (done.op_id,))
    assert state.fetchone()[0] == "confirmed"


async def test_a_clerk_cached_before_the_upgrade_cannot_work_offline_until_an_online_login(
    station: Station,
) -> None:
    desk, store = station.desk, station.store
    await desk.logout()
    store.conn.execute("DELETE FROM clerk_keys")  # as a replica of release 0.1 holds it
    store.conn.commit()
    station.offline()
    with pytest.raises(Exception) as refused:
        await desk.login("cash", PASSWORD)
    assert getattr(refused.value, "code", None) == "offline_no_key"
    station.online()
    await desk.login("cash", PASSWORD)
    await desk.current_shift()  # what the login keeps is written in the background
    assert store.sealed_key(desk.clerk.clerk_id) is not None  # type: ignore[union-attr]


def _rechain_ops(engine: Any) -> None:
    """What someone who can rewrite the whole database would do after editing
    ops: hash the op log's chain again, head included."""
    with engine.begin() as conn:
        prev = GENESIS
        for row in conn.execute(select(ops).order_by(ops.c.chain_seq)).all():
            values = op_hash_values(
                [getattr(row, f) for f in OPS_FIELDS], row.key_id, row.signature
            )
            digest = record_hash(prev, values)
            conn.execute(
                update(ops).where(ops.c.op_id == row.op_id).values(prev_hash=prev, hash=digest)
            )
            prev = digest
        conn.execute(update(chain_heads).where(chain_heads.c.chain == OPS).values(hash=prev))


async def test_verify_audit_names_an_op_whose_clerk_was_rewritten_with_its_chain(
    server: Server,
) -> None:
    """The hash chains prove records unchanged unless the whole database was
    rewritten; a signature holds even then: only the clerk's workstation can
    make it."""
    cashier = await open_window(server)
    boss = await open_window(server, "boss", ("supervisor",), name="b")
    patient_id, card, _ = await patient_with_card(server, cashier)
    assert verify_audit(server.engine).clean
    with server.engine.begin() as conn:  # the cashier's card issue, said to be the supervisor's
        issued = conn.execute(select(ops.c.op_id).where(ops.c.kind == "issue_card")).scalar_one()
        conn.execute(update(ops).where(ops.c.op_id == issued).values(clerk_id=boss.clerk_id))
    _rechain_ops(server.engine)
    report = verify_audit(server.engine)
    assert [(p.table, p.record.split()[0]) for p in report.problems] == [("ops", issued)]
    assert "not of clerk" in report.problems[0].what
    # its arguments edited, its signature and clerk left alone
    with server.engine.begin() as conn:
        conn.execute(update(ops).where(ops.c.op_id == issued).values(clerk_id=cashier.clerk_id))
        row = conn.execute(select(ops).where(ops.c.op_id == issued)).one()
        payload = row.payload.replace(patient_id, "someone-else")
        conn.execute(update(ops).where(ops.c.op_id == issued).values(payload=payload))
    _rechain_ops(server.engine)
    [problem] = verify_audit(server.engine).problems
    assert problem.record.startswith(issued) and "arguments" in problem.what
    # the signature removed: an op of a device that signs everything
    with server.engine.begin() as conn:
        conn.execute(
            update(ops)
            .where(ops.c.op_id == issued)
            .values(payload=row.payload, key_id=None, signature=None)
        )
    _rechain_ops(server.engine)
    [problem] = verify_audit(server.engine).problems
    assert "without a signature" in problem.what


# -- a server restored from a backup that lost a key's registration --------------


async def test_a_key_lost_by_a_restore_is_recorded_again_from_its_certificate(
    server: Server,
) -> None:
    """Found in review: a server restored from a backup taken before a clerk's
    first login at a window lost the key's registration, and refused every op
    the clerk had made offline (their money lost to Sync issues). The login
    hands the workstation the server's certificate of the key; each op
    carries it; an unknown key certified by this server is recorded again."""
    cashier = await open_window(server)
    boss_key = SigningKey.generate()
    server.auth.create_clerk("boss", "boss", ["supervisor", "cashier"], PASSWORD)
    answer = (await login(server, cashier.device_token, "boss", boss_key)).json()
    boss_id, cert = answer["clerk"]["clerk_id"], answer["key_certificate"]
    assert cert.startswith(boss_key.public_key.hex() + ":")
    with server.engine.begin() as conn:  # the backup restored knew nothing of it
        conn.execute(delete(clerk_keys).where(clerk_keys.c.key_id == boss_key.key_id))

    def made_by_boss(certificate: str | None) -> dict[str, Any]:
        op = wire(cashier, register_cmd(), clerk_id=boss_id)
        return signed_with_cert(op, boss_key, cashier.device_id, certificate)

    forged = cert[:-1] + ("0" if cert[-1] != "0" else "1")
    other_clerk = signed_with_cert(  # the boss's key certificate, claimed for the cashier
        wire(cashier, register_cmd()), boss_key, cashier.device_id, cert
    )
    results = await push(
        server,
        cashier,  # the cashier's session pushes what the supervisor made offline
        made_by_boss(None),  # no certificate: nothing to record the key from
        made_by_boss(forged),
        other_clerk,
        made_by_boss(cert),
    )
    assert [(r["status"].split("_")[0], r["code"]) for r in results] == [
        ("rejected", "signature_invalid"),
        ("rejected", "signature_invalid"),
        ("rejected", "signature_invalid"),
        ("applied", results[3]["code"]),
    ]
    with server.engine.connect() as conn:
        keys = conn.execute(select(clerk_keys.c.clerk_id, clerk_keys.c.device_id)).all()
        again = conn.execute(
            select(audit.c.outcome).where(
                audit.c.action == "register_key", audit.c.target == boss_key.key_id
            )
        ).scalars()
        assert (boss_id, cashier.device_id) in keys
        assert list(again) == ["ok", "recorded_again"]
    report = verify_audit(server.engine)
    assert report.clean, report.problems


def signed_with_cert(
    op: dict[str, Any], key: SigningKey, device_id: str, certificate: str | None
) -> dict[str, Any]:
    made = signed(op, key, device_id)
    return {**made, "key_cert": certificate} if certificate else made


async def test_work_done_offline_by_a_clerk_whose_key_a_restore_lost_still_counts(
    central_sqlite: Central, tmp_path: Path
) -> None:
    """End to end: the supervisor's first login at the window (after the
    night's backup), work offline, the server restored from the backup; the
    cashier's session pushes the supervisor's work: applied, as the supervisor."""
    central = central_sqlite
    central.clerk("cash", ["cashier"])
    central.clerk("boss", ["cashier", "supervisor"])
    station = Station(central, tmp_path / "a", "a")
    await station.enroll_and_login("cash")
    db = Path(central.url.removeprefix("sqlite:///"))
    back_up(db, tmp_path / "backup.db")
    desk, store = station.desk, station.store
    await desk.logout()
    await desk.login("boss", PASSWORD)
    boss_id = desk.clerk.clerk_id  # type: ignore[union-attr]
    await desk.current_shift()
    await station.engine.sync_once()
    station.offline()
    done = await station.register(ZHANG)
    await desk.logout()
    restore(central, db, tmp_path / "backup.db")
    station.online()
    await desk.login("cash", PASSWORD)
    for _ in range(4):
        await station.engine.sync_once()
    state = store.conn.execute("SELECT state FROM outbox WHERE op_id = ?", (done.op_id,))
    assert state.fetchone()[0] == "confirmed"
    with central.engine.connect() as conn:
        made = conn.execute(select(ops.c.clerk_id).where(ops.c.op_id == done.op_id)).scalar_one()
    assert made == boss_id
    assert verify_audit(central.engine).clean
    await station.close()


async def test_a_clerks_first_login_at_a_window_is_one_login_at_the_server(
    central: Central, station: Station
) -> None:
    """The new key goes with the first login (found in review: a second login
    was made for it, a second password check and a session left open)."""
    with central.engine.connect() as conn:
        logins = conn.execute(
            select(audit.c.target).where(audit.c.action == "login", audit.c.outcome == "ok")
        ).scalars()
        assert list(logins) == ["cash"]
