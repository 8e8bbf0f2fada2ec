"""The audit trail and the op log: complete and able to prove themselves.

Every write, login, logout, pull, snapshot, lease, policy change and clerk or
device change leaves an audit record saying who (clerk and session), where
(device), when, what, how it ended and, for ``workstation admin``, the
operator. The audit and the op log are hash chains, and ``workstation admin
verify-audit`` checks both and the ledger against the op log, naming the
first broken record."""

from __future__ import annotations

import getpass
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from ulid import ULID

from domain.cashier.top_up import TopUp
from domain.hlc import HybridClock
from domain.numbers import receipt_no_for
from domain.operation import args_hash
from domain.signing import SigningKey
from server.app import create_app
from server.auth import token_hash
from server.db import audit, make_engine, ops
from server.keys import register_key
from server.raw import RawSql
from sync.protocol import DEVICE_HEADER
from tests.test_server_api import (
    PASSWORD,
    Server,
    _serve,
    login,
    now,
    open_window,
    patient_with_card,
    push,
    register_cmd,
    signed,
    wire,
)
from tests.test_server_api import cheap_password_hashing as cheap_password_hashing  # autouse
from workstation.cli import main

OPERATOR = "Dr Li"


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[Server]:
    async for s in _serve(db_url):
        yield s


def audit_rows(engine: Engine, action: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(select(audit).where(audit.c.action == action).order_by(audit.c.audit_id))
        )


def verify(url: str, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """``workstation admin verify-audit``: its exit code and what it printed."""
    try:
        main(["admin", "--db", url, "verify-audit"])
        code = 0
    except SystemExit as exited:
        code = exited.code if isinstance(exited.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def url_of(server: Server) -> str:
    return server.engine.url.render_as_string(hide_password=False).replace(
        "postgresql+psycopg://", "postgresql://"
    )


async def test_every_kind_of_event_is_audited_with_who_where_when_what_and_outcome(
    server: Server, capsys: pytest.CaptureFixture
) -> None:
    url = url_of(server)
    me = getpass.getuser()
    main(
        ["admin", "--db", url, "--operator", OPERATOR, "create-clerk", "cash"]
        + ["--name", "Cash", "--roles", "cashier", "--password", PASSWORD]
    )
    main(["admin", "--db", url, "enroll-code", "--device-name", "w1"])
    code = capsys.readouterr().out.strip().splitlines()[-1]
    refused = await server.http.post("/devices/enroll", json={"code": "NOPE", "device_name": "x"})
    assert refused.status_code == 403
    enrolled = await server.http.post("/devices/enroll", json={"code": code, "device_name": "w1"})
    device_id, token = enrolled.json()["device_id"], enrolled.json()["device_token"]
    wrong = await server.http.post(
        "/auth/login",
        json={"username": "cash", "password": "wrong-one"},
        headers={DEVICE_HEADER: token},
    )
    assert wrong.status_code == 401
    key = SigningKey.generate()
    body = (await login(server, token, "cash", key)).json()
    session, clerk_id = body["session_token"], body["clerk"]["clerk_id"]
    ref = token_hash(session)[:16]
    headers = {DEVICE_HEADER: token, "Authorization": f"Bearer {session}"}
    assert (await server.http.get("/sync/pull", headers=headers)).status_code == 200
    assert (await server.http.get("/sync/snapshot", headers=headers)).status_code == 200
    image = await server.http.get("/sync/snapshot/image?schema=other", headers=headers)
    assert image.status_code == 409
    leased = await server.http.post(
        "/leases", json={"kind": "number_block", "resource": "card", "count": 5}, headers=headers
    )
    assert leased.status_code == 200, leased.text
    told = await server.http.post("/leases/held", json={"leases": [leased.json()]}, headers=headers)
    assert told.json()["kept"] == [leased.json()["lease_id"]]
    reg = register_cmd()
    op = {
        "op_id": str(ULID()),
        "client_seq": 1,
        "kind": reg.kind,
        "payload": reg.model_dump_json(),
        "clerk_id": clerk_id,
        "at": "2026-01-02T03:04:05+08:00",
        "hlc": HybridClock().now(),
    }
    op["args_hash"] = args_hash(op["kind"], op["payload"])
    op = signed(op, key, device_id)
    pushed = await server.http.post(
        "/sync/push", json={"device_time": now(), "ops": [op]}, headers=headers
    )
    assert pushed.json()["results"][0]["status"] == "applied"
    # a pull is recorded when it hands something out (the one above had nothing to)
    pulled = await server.http.get("/sync/pull", headers=headers)
    assert pulled.json()["changes"]
    records = len(audit_rows(server.engine, "pull"))
    cursor = pulled.json()["next_cursor"]
    empty = await server.http.get(f"/sync/pull?cursor={cursor}", headers=headers)
    assert empty.json()["changes"] == [] and len(audit_rows(server.engine, "pull")) == records
    main(["admin", "--db", url, "--operator", OPERATOR, "set-policy", "offline_login_days=3"])
    main(["admin", "--db", url, "new-epoch"])
    assert (await server.http.post("/auth/logout", headers=headers)).status_code == 204

    def one(action: str, outcome: str = "ok", **fields: Any) -> Any:
        rows = [r for r in audit_rows(server.engine, action) if r.outcome == outcome]
        assert rows, f"no {action} record with outcome {outcome}"
        row = rows[-1]
        assert row.at and row.hash and row.prev_hash, row
        for name, value in fields.items():
            assert getattr(row, name) == value, (action, name, row)
        return row

    assert one("migrate").target  # the schema made at the server's start
    assert one("create_clerk", operator=f"{OPERATOR} (OS user {me})").target == "cash"
    assert one("create_enrollment_code", operator=me).target == "w1"
    one("enroll", "refused", device_id=None)
    one("enroll", device_id=device_id)
    one("login", "wrong_password", clerk_id=clerk_id, device_id=device_id, session=None)
    one("login", clerk_id=clerk_id, device_id=device_id, session=ref)
    for action in ("pull", "snapshot", "lease", "leases_held", "logout"):
        one(action, clerk_id=clerk_id, device_id=device_id, session=ref)
    one("snapshot_image", "refused", clerk_id=clerk_id, device_id=device_id, session=ref)
    policy = one("set_policy", operator=f"{OPERATOR} (OS user {me})")
    assert policy.target == "offline_login_days"
    assert json.loads(policy.detail) == {"offline_login_days": [7, 3]}  # old, new
    one("new_epoch", operator=me)
    with server.engine.connect() as conn:
        [recorded] = conn.execute(select(ops)).all()
    assert (recorded.pushed_by, recorded.session, recorded.device_id) == (clerk_id, ref, device_id)
    assert recorded.client_at == "2026-01-02T03:04:05+08:00" and recorded.applied_at
    assert (recorded.status, recorded.chain_seq) == ("applied", 1) and recorded.hash
    # the token itself is nowhere in the trail
    with server.engine.connect() as conn:
        trail = [tuple(r) for r in conn.execute(select(audit))] + [tuple(recorded)]
    assert session not in repr(trail) and token_hash(session) not in repr(trail)


async def ledger_activity(server: Server) -> dict[str, str]:
    """Pushes that move money, logins and leases; returns a transfer, an op and
    an audit record (neither first nor last) to tamper with."""
    window = await open_window(server)
    _, card, receipt = await patient_with_card(server, window)
    transfer_id = str(ULID())
    top_up = TopUp(
        transfer_id=transfer_id,
        card_no=card,
        amount_fen=2_500,
        method="cash",
        receipt_no=receipt_no_for(receipt),
    )
    [result] = await push(server, window, wire(window, top_up))
    assert result["status"] == "applied"
    await open_window(server, "cash2", name="w2")
    with server.engine.connect() as conn:
        op_id = conn.execute(select(ops.c.op_id).where(ops.c.kind == "top_up")).scalar_one()
        ids = list(conn.execute(select(audit.c.audit_id).order_by(audit.c.audit_id)).scalars())
    return {"transfer": transfer_id, "op": op_id, "audit": str(ids[len(ids) // 2])}


async def test_verify_audit_is_clean_then_names_each_tampered_record(
    server: Server, capsys: pytest.CaptureFixture
) -> None:
    url = url_of(server)
    target = await ledger_activity(server)
    code, out = verify(url, capsys)
    assert code == 0, out
    assert "clean" in out

    def tampered(sql: str, undo: str | None = None, **params: Any) -> str:
        """What verify-audit says after ``sql``; ``undo`` (with ``undone``) then puts it back."""
        undone = params.pop("undone", {})
        with server.engine.begin() as conn:
            conn.execute(text(sql), params)
        code, out = verify(url, capsys)
        if undo is not None:
            with server.engine.begin() as conn:
                conn.execute(text(undo), undone)
        assert code != 0, out
        return out

    # a ledger row edited: the transfer differs from what its op wrote
    out = tampered(
        f"UPDATE transfers SET amount_fen = amount_fen + 100 WHERE transfer_id = '{target['transfer']}'",
        f"UPDATE transfers SET amount_fen = amount_fen - 100 WHERE transfer_id = '{target['transfer']}'",
    )
    assert "transfers" in out and target["transfer"] in out
    assert verify(url, capsys)[0] == 0
    # an op's payload edited: its record no longer matches its hash
    with server.engine.connect() as conn:
        payload = conn.execute(
            select(ops.c.payload).where(ops.c.op_id == target["op"])
        ).scalar_one()
    edited = payload.replace("2500", "250000")
    assert edited != payload
    out = tampered(
        "UPDATE ops SET payload = :p WHERE op_id = :k",
        "UPDATE ops SET payload = :p WHERE op_id = :k",
        p=edited,
        k=target["op"],
        undone={"p": payload, "k": target["op"]},
    )
    assert "ops" in out and target["op"] in out
    assert verify(url, capsys)[0] == 0
    # the ledger row and the change log edited together: the op's record of what it wrote differs
    with server.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE change_log SET row = REPLACE(row, '2500', '2600') "
                f"WHERE table_name = 'transfers' AND row_key = '{target['transfer']}'"
            )
        )
        conn.execute(
            text(
                f"UPDATE transfers SET amount_fen = 2600 WHERE transfer_id = '{target['transfer']}'"
            )
        )
    code, out = verify(url, capsys)
    assert code != 0 and target["op"] in out, out
    with server.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE change_log SET row = REPLACE(row, '2600', '2500') "
                f"WHERE table_name = 'transfers' AND row_key = '{target['transfer']}'"
            )
        )
        conn.execute(
            text(
                f"UPDATE transfers SET amount_fen = 2500 WHERE transfer_id = '{target['transfer']}'"
            )
        )
    assert verify(url, capsys)[0] == 0
    # an audit record deleted: the next one's previous hash names the gap
    out = tampered(f"DELETE FROM audit WHERE audit_id = {target['audit']}")
    assert "audit" in out and str(int(target["audit"]) + 1) in out


def test_parallel_pushes_and_logins_leave_one_unbroken_chain(
    db_url: str, capsys: pytest.CaptureFixture
) -> None:
    engine = make_engine(db_url)
    app = create_app(engine, migrate=True)
    auth, sync = app.state.auth, app.state.sync
    threads, rounds = 4, 6
    windows = []
    for n in range(threads):
        auth.create_clerk(f"c{n}", f"c{n}", ["cashier"], PASSWORD)
        device_id, token = auth.enroll(auth.create_enrollment_code(f"w{n}"), f"w{n}")
        device = auth.device(token)
        session, _, s = auth.login(device, f"c{n}", PASSWORD)
        key = SigningKey.generate()
        register_key(engine, s.clerk_id, device_id, key.public_key.hex(), None)
        windows.append((token, session, s.clerk_id, device_id, key))
    failures: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        token, session, clerk_id, device_id, key = windows[n]
        try:
            start.wait()
            for seq in range(1, rounds + 1):
                batch = []
                for k in range(3):
                    reg = register_cmd().model_copy(
                        update={"doc_type": "passport", "doc_no": f"P{n}X{seq}X{k}"}
                    )
                    op = {
                        "op_id": str(ULID()),
                        "client_seq": (seq - 1) * 3 + k + 1,
                        "kind": reg.kind,
                        "payload": reg.model_dump_json(),
                        "clerk_id": clerk_id,
                        "at": now(),
                        "hlc": HybridClock().now(),
                    }
                    op["args_hash"] = args_hash(op["kind"], op["payload"])
                    batch.append(signed(op, key, device_id))
                body = json.dumps({"device_time": now(), "ops": batch}).encode()
                answer = sync.push(token, session, body)
                assert all(r.status == "applied" for r in answer.results), answer
                auth.login(auth.device(token), f"c{n}", PASSWORD)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not failures, failures
    with engine.connect() as conn:
        seqs = list(conn.execute(select(ops.c.chain_seq).order_by(ops.c.chain_seq)).scalars())
    assert seqs == list(range(1, threads * rounds * 3 + 1))
    engine.dispose()
    code, out = verify(db_url, capsys)
    assert code == 0, out


def test_a_push_takes_the_op_log_s_head_once_for_its_whole_batch(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The push is hot: a batch of ops is chained under one taking of the
    head (and one setting of it), not one an op."""
    engine = make_engine(db_url)
    app = create_app(engine, migrate=True)
    auth, sync = app.state.auth, app.state.sync
    auth.create_clerk("kw", "kw", ["cashier"], PASSWORD)
    device_id, token = auth.enroll(auth.create_enrollment_code("w"), "w")
    session, _, s = auth.login(auth.device(token), "kw", PASSWORD)
    key = SigningKey.generate()
    register_key(engine, s.clerk_id, device_id, key.public_key.hex(), None)
    statements: list[str] = []
    for name in ("execute", "executemany", "one", "all", "pg_all", "pg_execute"):
        original = getattr(RawSql, name, None)
        if original is None:
            continue

        def counted(self: RawSql, sql: str, *args: Any, _original: Any = original) -> Any:
            statements.append(sql)
            return _original(self, sql, *args)

        monkeypatch.setattr(RawSql, name, counted)
    batch = []
    for seq in range(1, 51):
        reg = register_cmd().model_copy(update={"doc_type": "passport", "doc_no": f"P{seq:06d}"})
        payload = reg.model_dump_json()
        op = {
            "op_id": str(ULID()),
            "client_seq": seq,
            "kind": reg.kind,
            "payload": payload,
            "args_hash": args_hash(reg.kind, payload),
            "clerk_id": s.clerk_id,
            "at": now(),
            "hlc": HybridClock().now(),
        }
        batch.append(signed(op, key, device_id))
    answer = sync.push(token, session, json.dumps({"device_time": now(), "ops": batch}).encode())
    assert [r.status for r in answer.results] == ["applied"] * 50
    assert len([sql for sql in statements if "chain_heads" in sql]) == 2, statements
    with engine.connect() as conn:
        assert list(conn.execute(select(ops.c.chain_seq).order_by(ops.c.chain_seq)).scalars()) == (
            list(range(1, 51))
        )
    engine.dispose()


def test_rows_loaded_in_bulk_are_vouched_for_by_their_audit_record(
    sqlite_url: str, capsys: pytest.CaptureFixture
) -> None:
    """The demo hospital's transfers were written by no op: the bulk load's
    audit record fingerprints them, and an edit of one is still found."""
    main(["admin", "--db", sqlite_url, "seed-demo", "--patients", "60"])
    code, out = verify(sqlite_url, capsys)
    assert code == 0 and "clean" in out, out
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        [load] = audit_rows(engine, "bulk_load")
        assert json.loads(load.detail)["entries"] > 60 and load.operator == getpass.getuser()
        transfer_id, seq = conn.execute(
            text(
                "SELECT row_key, seq FROM change_log WHERE table_name = 'transfers' "
                "ORDER BY seq LIMIT 1"
            )
        ).one()
    with engine.begin() as conn:  # the ledger row and its change-log entry, together
        conn.execute(
            text("UPDATE transfers SET amount_fen = 1 WHERE transfer_id = :t"), {"t": transfer_id}
        )
        row = conn.execute(
            text("SELECT row FROM change_log WHERE seq = :s"), {"s": seq}
        ).scalar_one()
        edited = json.dumps({**json.loads(row), "amount_fen": 1}, separators=(",", ":"))
        conn.execute(text("UPDATE change_log SET row = :r WHERE seq = :s"), {"r": edited, "s": seq})
    engine.dispose()
    code, out = verify(sqlite_url, capsys)
    assert code != 0 and "change_log" in out and f"audit record {load.audit_id}" in out, out
