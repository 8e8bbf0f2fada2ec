"""``workstation run --headless``: the desk driven by JSON lines.

In this process, against the in-process central server: the protocol end to
end, a refusal by the server reaching Sync issues, and bad lines answered
(in both languages) with nothing written. Then a real ``workstation run
--headless`` process against a server over HTTP, killed with SIGKILL in the
middle of a burst of top-ups and started again: every top-up it reported
done is applied exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func
from sqlalchemy import select as sql_select

from server.db import ops, transfers
from tests.harness import PASSWORD, Central, Station
from workstation.builder import SyncTiming, Workstation, build_workstation
from workstation.desk import DeskSettings
from workstation.desk.core import enroll_workstation
from workstation.headless import (
    COMMANDS,
    MAX_LINE_BYTES,
    WITHOUT_CLERK,
    HeadlessWindow,
    Line,
    Overlong,
    read_lines,
    run_session,
)

ZHANG = {
    "name": "张三丰",
    "doc_no": "11010519491231002X",
    "phone": "13812345678",
    "address": "北京市东城区",
}


class Script:
    """A headless workstation in this process: lines in, answers and events out."""

    def __init__(self, station: Workstation) -> None:
        self.station = station
        self.lines: asyncio.Queue[Line | None] = asyncio.Queue()
        self.out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.events: list[dict[str, Any]] = []
        self.window = HeadlessWindow(station.desk, station.cashier, self._write)
        self.task = asyncio.create_task(run_session(station, self.window, self.lines))
        self._ids = 0

    def _write(self, line: str) -> None:
        assert "\n" not in line
        self.out.put_nowait(json.loads(line))

    async def line(self, text: str | bytes | Line) -> dict[str, Any]:
        """Send one raw line; its answer (events are kept aside)."""
        self.lines.put_nowait(text)
        return await self.next_answer()

    async def next_answer(self) -> dict[str, Any]:
        while True:
            message = await asyncio.wait_for(self.out.get(), 30)
            if "event" in message:
                self.events.append(message)
            else:
                return message

    async def ask(self, cmd: str, **fields: Any) -> dict[str, Any]:
        self._ids += 1
        answer = await self.line(json.dumps({"id": self._ids, "cmd": cmd, **fields}))
        assert answer["id"] == self._ids
        return answer

    async def ok(self, cmd: str, **fields: Any) -> dict[str, Any]:
        answer = await self.ask(cmd, **fields)
        assert answer["ok"] is True, answer
        return answer

    async def end(self) -> None:
        """End of input: the session stops in order."""
        self.lines.put_nowait(None)
        await self.stopped()

    async def stopped(self) -> None:
        """Wait for the session's end; what it wrote meanwhile are events."""
        await asyncio.wait_for(self.task, 30)
        while not self.out.empty():
            message = self.out.get_nowait()
            assert "event" in message, message
            self.events.append(message)


def headless_station(central: Central, directory: Path, name: str) -> Workstation:
    """A workstation as ``workstation run`` builds it (the server's answer
    awaited as at the window), on a link a test can cut, with quick timings."""
    directory.mkdir(parents=True, exist_ok=True)
    return build_workstation(
        directory / "workstation.db",
        "http://central",
        settings=DeskSettings(window_name=name, receipts_dir=directory / "receipts"),
        transport=central.transport(),
        switchable=True,
        timing=SyncTiming(
            interval_s=0.05, base_delay_s=0.01, max_delay_s=0.05, probe_interval_s=0.05
        ),
    )


async def start_script(central: Central, directory: Path) -> Script:
    """Cashier "cash" exists; the workstation is enrolled; nobody is logged in."""
    central.clerk("cash", ["cashier"], name="王芳")
    station = headless_station(central, directory, "收费窗口 1")
    code = central.auth.create_enrollment_code("收费窗口 1")
    await enroll_workstation(station.client, station.store, code, "收费窗口 1")
    return Script(station)


@pytest.fixture
async def script(central: Central, tmp_path: Path) -> AsyncIterator[Script]:
    """On SQLite and PostgreSQL."""
    session = await start_script(central, tmp_path / "w")
    yield session
    if not session.task.done():
        await session.end()


@pytest.fixture
async def sqlite_script(central_sqlite: Central, tmp_path: Path) -> AsyncIterator[Script]:
    session = await start_script(central_sqlite, tmp_path / "w")
    yield session
    if not session.task.done():
        await session.end()


def server_count(central: Central, table: Any) -> int:
    with central.engine.connect() as conn:
        return int(conn.execute(sql_select(func.count()).select_from(table)).scalar_one())


async def test_a_cashiers_work_through_the_protocol(script: Script, central: Central) -> None:
    ready = await asyncio.wait_for(script.out.get(), 10)
    assert ready["event"] == "ready" and "top_up" in ready["commands"]

    status = await script.ok("status")
    assert status["clerk"] is None and status["pending"] == 0
    login = await script.ok("login", username="cash", password=PASSWORD)
    assert login["mode"] == "online" and login["clerk"]["roles"] == ["cashier"]
    synced = await script.ok("sync", timeout=20)
    assert synced["pending"] == 0 and synced["online"] and synced["replica_ready"]

    reg = await script.ok("register", **ZHANG)
    assert reg["kind"] == "register_patient" and reg["state"] == "confirmed"
    card = await script.ok("issue_card", patient_id=reg["patient_id"], amount="50")
    assert card["amount_fen"] == 5000 and card["card_no"] and card["receipt_no"]
    top_up = await script.ok("top_up", card_no=card["card_no"], amount="12.50", method="wechat")
    assert top_up["amount_fen"] == 1250 and top_up["balance_fen"] == 6250
    assert top_up["confirmed"] is True and top_up["state"] == "confirmed"
    assert top_up["receipt_no"] and Path(top_up["receipt_path"]).exists()

    found = await script.ok("search", query="zsf")
    assert [p["patient_id"] for p in found["patients"]] == [reg["patient_id"]]
    await script.ok("sync", timeout=20)
    view = await script.ok("patient", card_no=card["card_no"])
    assert view["patient"]["name"] == "张三丰"
    assert view["balance_fen"] == view["confirmed_balance_fen"] == 6250
    assert [c["card_no"] for c in view["cards"]] == [card["card_no"]]
    assert sorted(t["amount_fen"] for t in view["transfers"]) == [1250, 5000]

    # the server has each operation the answers reported, once
    with central.engine.connect() as conn:
        applied = dict(conn.execute(sql_select(ops.c.op_id, ops.c.status)).all())
        booked = conn.execute(
            sql_select(transfers.c.op_id, transfers.c.amount_fen, transfers.c.receipt_no)
        ).all()
    for answer in (reg, card, top_up):
        assert applied[answer["op_id"]] == "applied"
    assert sorted(booked) == sorted(
        [
            (card["op_id"], 5000, card["receipt_no"]),
            (top_up["op_id"], 1250, top_up["receipt_no"]),
        ]
    )

    await script.ok("logout")
    refused = await script.ask("top_up", card_no=card["card_no"], amount="1")
    assert refused["code"] == "login_required"
    assert await script.ok("quit") == {"id": script._ids, "ok": True}
    await script.stopped()
    assert script.events[-1] == {"event": "stopped"}
    statuses = [e for e in script.events if e["event"] == "status"]
    assert statuses and any(e["clerk"] == "cash" and e["online"] for e in statuses)


async def test_a_top_up_the_server_refuses_is_a_sync_issue_to_resolve(
    script: Script, central: Central, tmp_path: Path
) -> None:
    await script.ok("login", username="cash", password=PASSWORD)
    await script.ok("sync", timeout=20)
    reg = await script.ok("register", **ZHANG)
    card = await script.ok("issue_card", patient_id=reg["patient_id"], amount="50")
    await script.ok("sync", timeout=20)

    network = script.station.network
    assert network is not None
    network.cut = True
    offline = await script.ok("top_up", card_no=card["card_no"], amount="200")
    assert offline["state"] == "provisional" and offline["confirmed"] is False
    assert offline["balance_fen"] == 25000
    timed_out = await script.ask("sync", timeout=0.2)
    assert timed_out["ok"] is False and timed_out["code"] == "sync_timeout"
    assert timed_out["pending"] == 1 and "0.2" in timed_out["message_en"]

    central.clerk("boss", ["supervisor"])
    supervisor = Station(central, tmp_path / "s", "supervisor-desk")
    await supervisor.enroll_and_login("boss")
    await supervisor.cancel_card(card["card_no"], "卡片损坏")
    await supervisor.engine.sync_once()
    await supervisor.close()

    network.cut = False
    await script.ok("sync", timeout=20)
    [issue] = (await script.ok("issues"))["issues"]
    assert issue["op_id"] == offline["op_id"] and issue["command"] == "top_up"
    assert issue["code"] == "card_not_active" and issue["kind"] == "rejected"
    assert issue["message_zh"] and issue["message_en"] and issue["facts"]
    status = await script.ok("status")
    assert status["open_issues"] == 1
    view = await script.ok("patient", patient_id=reg["patient_id"])
    assert view["balance_fen"] == 5000  # the refused top-up left the view

    done = await script.ok("resolve_issue", issue_id=issue["issue_id"], note="退还现金 200 元")
    assert done["resolved"] is True
    assert (await script.ok("issues"))["issues"] == []
    [resolved] = (await script.ok("issues", all=True))["issues"]
    assert resolved["status"] == "resolved" and resolved["resolution"] == "退还现金 200 元"
    again = await script.ask("resolve_issue", issue_id=issue["issue_id"])
    assert again["code"] == "issue_unknown"


# what each bad line is answered with
BAD_LINES: list[tuple[Line, str]] = [
    ("this is not json", "malformed_json"),
    ("[1, 2]", "malformed_json"),
    (b'{"id": 1, "cmd": "status", "x": "\xff"}', "malformed_json"),
    (Overlong(), "line_too_long"),
    ('{"id": 2}', "field_missing"),
    ('{"id": 3, "cmd": 7}', "field_type"),
    ('{"id": 4, "cmd": "refund"}', "unknown_command"),
    ('{"id": 5, "cmd": "top_up", "card_no": "CARD", "amount": "1", "amout": "2"}', "field_unknown"),
    (
        '{"id": 6, "cmd": "top_up", "card_no": "CARD", "amount": "12.345"}',
        "amount_too_many_decimals",
    ),
    ('{"id": 7, "cmd": "top_up", "card_no": "CARD", "amount": 12.5}', "field_type"),
    ('{"id": 8, "cmd": "top_up", "card_no": "CARD", "amount": "0"}', "amount_not_positive"),
    ('{"id": 9, "cmd": "top_up", "card_no": "CARD", "amount": "12,50"}', "amount_format"),
    ('{"id": 10, "cmd": "top_up", "card_no": "CARD", "amount": ""}', "amount_empty"),
    ('{"id": 11, "cmd": "top_up", "card_no": "CARD"}', "field_missing"),
    (
        '{"id": 12, "cmd": "top_up", "card_no": "CARD", "amount": "5", "method": "gold"}',
        "payment_method_unknown",
    ),
    ('{"id": 13, "cmd": "top_up", "card_no": "1234567890", "amount": "5"}', "card_format"),
    ('{"id": 14, "cmd": "cancel_card", "card_no": "CARD", "reason": "lost"}', "role_forbidden"),
    (
        '{"id": 15, "cmd": "register", "name": "李四", "doc_no": "110105194912310021", "phone": "13812345678"}',
        "id_check_char",
    ),
    (
        '{"id": 16, "cmd": "issue_card", "patient_id": "PATIENT", "amount": "50"}',
        "patient_has_active_card",
    ),
    ('{"id": 17, "cmd": "issue_card", "patient_id": "nobody"}', "patient_unknown"),
    ('{"id": 18, "cmd": "login", "username": "cash", "password": "x"}', "already_logged_in"),
    ('{"id": 19, "cmd": "resolve_issue", "issue_id": 999}', "issue_unknown"),
    ('{"id": 20, "cmd": "resolve_issue", "issue_id": "1"}', "field_type"),
    ('{"id": 21, "cmd": "search", "query": "zsf", "limit": 0}', "field_range"),
    ('{"id": 22, "cmd": "patient", "card_no": "CARD", "patient_id": "PATIENT"}', "patient_key"),
    ('{"id": 23, "cmd": "sync", "timeout": "soon"}', "field_type"),
    ('{"id": 24, "cmd": "issues", "all": "yes"}', "field_type"),
]


_UNREAD = {"malformed_json", "line_too_long"}  # no id could be read from the line


def local_ops(station: Workstation) -> int:
    return int(station.store.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


async def test_bad_lines_are_answered_in_both_languages_and_write_nothing(
    sqlite_script: Script, central_sqlite: Central
) -> None:
    script, central = sqlite_script, central_sqlite
    wrong = await script.ask("login", username="cash", password="not-the-password")
    assert wrong["ok"] is False and wrong["code"] == "login_failed"
    early = await script.ask("top_up", card_no="1000000018", amount="5")
    assert early["code"] == "login_required"

    await script.ok("login", username="cash", password=PASSWORD)
    await script.ok("sync", timeout=20)
    reg = await script.ok("register", **ZHANG)
    card = await script.ok("issue_card", patient_id=reg["patient_id"], amount="50")
    await script.ok("sync", timeout=20)
    written = (local_ops(script.station), server_count(central, ops))
    receipts = sorted((script.station.desk.settings.receipts_dir).iterdir())

    for line, code in BAD_LINES:
        if isinstance(line, str):
            line = line.replace("CARD", card["card_no"]).replace("PATIENT", reg["patient_id"])
        answer = await script.line(line)
        assert answer["ok"] is False and answer["code"] == code, (line, answer)
        assert answer["message_zh"] and answer["message_en"], answer
        assert answer["message_zh"] != answer["message_en"], answer
        if isinstance(line, str) and code not in _UNREAD:
            assert answer["id"] == json.loads(line)["id"], answer
        else:
            assert answer["id"] is None, answer

    await script.ok("sync", timeout=20)
    assert (local_ops(script.station), server_count(central, ops)) == written
    assert sorted(script.station.desk.settings.receipts_dir.iterdir()) == receipts
    view = await script.ok("patient", card_no=card["card_no"])
    assert view["balance_fen"] == 5000 and len(view["transfers"]) == 1
    # and the session goes on as before
    top_up = await script.ok("top_up", card_no=card["card_no"], amount="0.01")
    assert top_up["amount_fen"] == 1


async def test_lines_are_read_from_a_pipe_whole_and_in_order() -> None:
    lines: asyncio.Queue[Line | None] = asyncio.Queue()
    read_end, write_end = os.pipe()
    read_lines(read_end, lines)
    os.write(write_end, b'{"a": 1}\n{"b":')
    os.write(write_end, b" 2}\n" + b"x" * (MAX_LINE_BYTES + 10))
    os.write(write_end, b'tail of the long line\n{"c": 3}\n{"d": 4}')  # the last without \n
    os.close(write_end)
    got = [await asyncio.wait_for(lines.get(), 10) for _ in range(5)]
    assert got == [b'{"a": 1}', b'{"b": 2}', Overlong(), b'{"c": 3}', b'{"d": 4}']
    assert await asyncio.wait_for(lines.get(), 10) is None  # the end of input
    os.close(read_end)


def test_the_headless_workstation_imports_no_textual() -> None:
    code = (
        "import sys, workstation.headless, workstation.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'textual'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_every_command_and_field_is_documented_and_handled() -> None:
    from workstation.cli import HEADLESS_HELP

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    for name, fields in COMMANDS.items():
        for word in (name, *fields):
            assert word in HEADLESS_HELP, word
            assert f"`{word}`" in readme, word
    assert set(COMMANDS) >= WITHOUT_CLERK


async def test_every_command_has_a_handler(tmp_path: Path) -> None:
    station = build_workstation(tmp_path / "replica.db", "http://central")
    window = HeadlessWindow(station.desk, station.cashier, lambda _line: None)
    assert set(window.handlers) == set(COMMANDS)
    await station.aclose()


# -- a real process, killed ------------------------------------------------------------


class HeadlessProcess:
    """``workstation run --headless`` in a process of its own."""

    def __init__(self, data_dir: Path, stderr: Path) -> None:
        self.stderr = stderr.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workstation.cli", "run", "--headless"]
            + ["--data-dir", str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.buffer = b""
        self.events: list[dict[str, Any]] = []
        self.ids = 0

    def send(self, *requests: dict[str, Any]) -> None:
        """Write the lines at once (a burst arrives before the first is answered)."""
        self.stdin.write(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
        self.stdin.flush()

    def read(self, timeout_s: float = 30) -> dict[str, Any]:
        """The next line of stdout, which must be JSON."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.stdout], [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"no answer within {timeout_s} s")
            chunk = os.read(self.stdout.fileno(), 65536)
            if not chunk:
                raise EOFError(f"stdout closed; rc={self.proc.poll()}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return dict(json.loads(line))

    def answer(self, timeout_s: float = 30) -> dict[str, Any]:
        while "event" in (message := self.read(timeout_s)):
            self.events.append(message)
        return message

    def ask(self, cmd: str, **fields: Any) -> dict[str, Any]:
        self.ids += 1
        self.send({"id": self.ids, "cmd": cmd, **fields})
        answer = self.answer()
        assert answer["id"] == self.ids and answer["ok"] is True, answer
        return answer

    def read_to_end(self) -> None:
        """The events written until stdout closes."""
        while True:
            try:
                self.events.append(self.read())
            except EOFError:
                return

    def wait_for_event(self, wanted: Callable[[dict[str, Any]], bool]) -> None:
        """Until an event (already read or still to come) is ``wanted``."""
        while not any(wanted(e) for e in self.events):
            message = self.read()
            assert "event" in message, message
            self.events.append(message)

    def wait_ready(self) -> None:
        assert self.read(60)["event"] == "ready"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stdin.close()
        self.stdout.close()
        self.stderr.close()


def enrolled_offline(data_dir: Path) -> Path:
    """A data directory as enrollment leaves it, for a server that is not there."""
    from workstation.config import Settings
    from workstation.secrets import FileSecretStore

    Settings(server_url="http://127.0.0.1:9", device_name="w", secrets="file").save(data_dir)
    FileSecretStore(data_dir / "secrets.json").set("device_token", "token")
    return data_dir


def test_sigterm_stops_the_headless_workstation_in_order(tmp_path: Path) -> None:
    data_dir = enrolled_offline(tmp_path / "window")
    process = HeadlessProcess(data_dir, tmp_path / "stderr.txt")
    try:
        process.wait_ready()
        status = process.ask("status")
        assert status["clerk"] is None and status["pending"] == 0
        process.proc.send_signal(signal.SIGTERM)
        process.read_to_end()  # every line on stdout is JSON (read() parses each)
        assert process.proc.wait(30) == 0
    finally:
        process.close()
    assert process.events[-1] == {"event": "stopped"}
    log = (data_dir / "workstation.log").read_text(encoding="utf-8")
    assert "serving the protocol" in log and "headless window stopped" in log


class LiveCentral:
    """The central server over HTTP on a port of this machine; a test can
    stop it (the link is down) and start it again on the same port."""

    def __init__(self, central: Central) -> None:
        from workstation.demo.run import EmbeddedServer, free_port

        self.central = central
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server_type = EmbeddedServer
        self.server: EmbeddedServer | None = None

    def start(self) -> None:
        self.server = self._server_type(self.central.app, self.port)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def live_central(central_sqlite: Central) -> Iterator[LiveCentral]:
    live = LiveCentral(central_sqlite)
    live.start()
    yield live
    live.stop()


@pytest.mark.parametrize("link", ["up", "down"])
def test_a_killed_workstation_loses_no_reported_top_up_and_applies_none_twice(
    live_central: LiveCentral, link: str, tmp_path: Path
) -> None:
    """A burst of top-ups is sent at once and the process is killed (SIGKILL)
    once twelve answers are read; started again, it syncs. Link up: each top-up
    is pushed as it is committed, and the kill lands in a push. Link down
    (the server stopped for the burst): every answer read is provisional,
    committed only in the replica the killed process left."""
    from workstation.cli import main

    central, url = live_central.central, live_central.url
    central.clerk("cash", ["cashier"])
    data_dir = tmp_path / "window"
    code = central.auth.create_enrollment_code("收费窗口 9")
    main(
        ["enroll", "--server", url, "--code", code, "--device-name", "收费窗口 9"]
        + ["--data-dir", str(data_dir), "--secrets", "file"]
    )

    first = HeadlessProcess(data_dir, tmp_path / "stderr.txt")
    try:
        first.wait_ready()
        first.ask("login", username="cash", password=PASSWORD)
        first.ask("sync", timeout=30)
        reg = first.ask("register", **ZHANG)
        card = first.ask("issue_card", patient_id=reg["patient_id"], amount="100")
        if link == "down":
            live_central.stop()
            # the workstation notices at its next cycle, which this one starts
            first.send({"id": 99, "cmd": "sync", "timeout": 0.5})
            assert first.answer()["code"] == "sync_timeout"
            first.wait_for_event(lambda e: e.get("online") is False)
        # a burst of top-ups of different amounts (1.01, 1.02, ...), sent at once
        burst = {100 + i: f"1.{i:02d}" for i in range(1, 31)}
        first.send(
            *(
                {"id": 1000 + i, "cmd": "top_up", "card_no": card["card_no"], "amount": amount}
                for i, amount in enumerate(burst.values())
            )
        )
        reported = [first.answer() for _ in range(12)]
        first.proc.send_signal(signal.SIGKILL)
        assert first.proc.wait(10) == -signal.SIGKILL
    finally:
        first.close()
    assert [a["id"] for a in reported] == list(range(1000, 1012))
    assert all(a["ok"] and a["receipt_no"] and a["amount_fen"] in burst for a in reported)
    if link == "down":
        assert {a["state"] for a in reported} == {"provisional"}
        live_central.start()

    second = HeadlessProcess(data_dir, tmp_path / "stderr.txt")
    try:
        second.wait_ready()
        with pytest.raises(SystemExit) as refused:  # the same lock as the window's
            main(["run", "--headless", "--data-dir", str(data_dir)])
        assert "already running" in str(refused.value.code)
        second.ask("login", username="cash", password=PASSWORD)
        synced = second.ask("sync", timeout=30)
        assert synced["pending"] == 0 and synced["open_issues"] == 0
        view = second.ask("patient", card_no=card["card_no"])
        second.stdin.close()  # the end of input: an orderly quit
        second.read_to_end()
        assert second.proc.wait(30) == 0
    finally:
        second.close()
    assert second.events[-1] == {"event": "stopped"}

    with central.engine.connect() as conn:
        applied = dict(conn.execute(sql_select(ops.c.op_id, ops.c.status)).all())
        booked = conn.execute(
            sql_select(
                transfers.c.op_id,
                transfers.c.amount_fen,
                transfers.c.receipt_no,
                transfers.c.debit_account,
                transfers.c.credit_account,
            )
        ).all()
    # every top-up reported done is applied, once, as reported
    for answer in reported:
        assert applied[answer["op_id"]] == "applied"
        [row] = [t for t in booked if t.op_id == answer["op_id"]]
        assert (row.amount_fen, row.receipt_no) == (answer["amount_fen"], answer["receipt_no"])
    # nothing twice: one transfer an operation, each amount of the burst at most once
    assert max(Counter(t.op_id for t in booked).values()) == 1
    top_ups = [t.amount_fen for t in booked if t.op_id != card["op_id"]]
    assert len(set(top_ups)) == len(top_ups) and set(top_ups) <= set(burst)
    assert len(top_ups) >= len(reported)
    # what the workstation committed is exactly what the server holds
    with sqlite3.connect(data_dir / "workstation.db") as replica:
        outbox = dict(replica.execute("SELECT op_id, state FROM outbox").fetchall())
    assert set(outbox) == set(applied)
    assert set(outbox.values()) == {"confirmed"}
    # the ledger balances, and the window shows the server's balance
    balances: Counter[str] = Counter()
    for t in booked:
        balances[t.credit_account] += t.amount_fen
        balances[t.debit_account] -= t.amount_fen
    assert sum(balances.values()) == 0
    deposit = balances[f"deposit:{reg['patient_id']}"]
    assert deposit == 10000 + sum(top_ups)
    assert view["balance_fen"] == view["confirmed_balance_fen"] == deposit
