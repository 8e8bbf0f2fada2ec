"""``make load``: many workstations against the central server over real HTTP.

    python -m bench.load [--db pg|sqlite] [--seconds S] [--workstations N] [--workers W]

A fresh central database (PostgreSQL: a database of its own, dropped and made
again; SQLite: a file under ``bench/data/load/``) is seeded with the demo
hospital (patients, cards, money), one clerk per workstation is made, then
the real server is started as a subprocess (``workstation server``, with
``--workers`` uvicorn processes on PostgreSQL) on a free loopback port. Each
workstation enrolls, logs in and leases its card and receipt numbers over
HTTP as a real one does, then pushes operations built as the window builds
them (``domain.operation.Operation`` envelopes, a gap-free ``client_seq`` per
device): of every ten, a patient registered, a card issued to them with a
first prepayment, eight top-ups on cards of the seeded register.

Phases, one after the other, each device's sequence going on:

1. ``closed_1``: every workstation pushes one op, waits for the answer, pushes
   the next (what the server's per-request cost allows);
2. ``closed_10``: the same with ten ops a push;
3. ``paced``: ops arrive at each workstation at ``--rate``/N a second
   (Poisson); a workstation pushes whatever waits (at most 500), as the sync
   engine does after a clerk's commit: push latency, and the time from an
   op's commit to its answer;
4. ``storm``: every workstation comes back from an 8-hour outage with a
   backlog (``--backlog`` ops, 2,000 by default) and pushes it at once, in
   batches bounded as ``sync.engine`` bounds them; each resends one batch
   whose answer it "lost", as after a timeout.

Then the database is checked: every op recorded once, in each device's
sequence without a gap, every op applied, the money of the load's transfers
equal to what the workstations took (per shift drawer and in total), the
change log gap-free and the counter at its head. CPU time of the server's
processes, PostgreSQL's backends of this database, this process (the
clients) and the whole machine is taken per phase.

Bounded: each phase has a deadline, the storm a time limit; the run takes a
few minutes. Prints a table and writes ``bench/load-results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from ulid import ULID

from domain.cashier.issue_card import IssueCard, Prepayment
from domain.cashier.top_up import TopUp
from domain.commands import Command
from domain.hlc import HybridClock
from domain.leases import NUMBER_BLOCK
from domain.money import PaymentMethod
from domain.numbers import Series, card_no_for, receipt_no_for
from domain.operation import Operation
from domain.patients.register import RegisterPatient
from domain.shifts import OpenShift
from domain.signing import SigningKey
from domain.state import Policy
from local_db.store import OutboxEntry
from server.auth import AuthService
from server.db import make_engine
from server.migrate import migrate
from server.site import save_policy
from sync.client import SyncClient
from sync.engine import PUSH_BYTES, wire_bytes_bound
from sync.protocol import DEVICE_HEADER, MAX_OPS_PER_PUSH, PushResponse
from workstation.demo.people import Person, generate_people
from workstation.demo.seed import seed_demo_hospital

from .stats import percentile

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "load-results.json"
SQLITE_DIR = BENCH_DIR / "data" / "load"
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
PG_DATABASE = "load_bench"
PASSWORD = "load-secret-123"
SEED = 2026
PEOPLE_SEED = 4711  # the patients the load registers: not in the seeded register
TIMEOUT_S = 15.0  # sync.client.SyncClient's
METHODS = [m.value for m in PaymentMethod]
TOP_UP_FEN = (5_000, 10_000, 20_000, 30_000, 50_000, 100_000, 200_000)
OUTAGE_HOURS = 8
TARGET_OPS_PER_S = 2_000.0
TARGET_P99_MS = 100.0
PHASES = ("closed_1", "closed_10", "paced", "storm")
# change-log rows an applied op writes, by kind
ROWS_OF = {"open_shift": 1, "register_patient": 1, "issue_card": 2, "top_up": 1}


# -- operations ----------------------------------------------------------------


@dataclass(slots=True)
class Prepared:
    """An operation made at a window, its JSON in a push split around its
    ``client_seq`` (given when it is committed to the outbox)."""

    op_id: str
    kind: str
    head: bytes  # the op's JSON up to and including '"client_seq":'
    tail: bytes  # the rest
    bound: int  # sync.engine.wire_bytes_bound of the op
    fen: int  # money it takes
    at: float = 0.0  # when it was committed (perf_counter), for the paced phase
    seq: int = 0

    def wire(self) -> bytes:
        return self.head + str(self.seq).encode() + self.tail


def prepared(op: Operation, fen: int) -> Prepared:
    data = op.model_dump_json(exclude_defaults=True).encode()
    marker = b'"client_seq":'
    start = data.index(marker) + len(marker)
    end = data.index(b",", start)
    entry = OutboxEntry(op, frozenset(), "pending", "applied", 0)
    return Prepared(op.op_id, op.kind, data[:start], data[end:], wire_bytes_bound(entry), fen)


@dataclass
class Workstation:
    index: int
    username: str
    people: Iterator[Person]
    rng: random.Random
    device_id: str = ""
    token: str = ""
    session: str = ""
    clerk_id: str = ""
    shift_id: str = ""
    seq: int = 0
    receipts: deque[int] = field(default_factory=deque)
    cards: deque[int] = field(default_factory=deque)
    last_patient: str | None = None
    made: int = 0  # ops made (the pattern of ten)
    ready: deque[Prepared] = field(default_factory=deque)  # made, not committed yet
    built_late: int = 0  # made during a phase because none was ready
    kinds: Counter[str] = field(default_factory=Counter)  # committed
    fen: int = 0  # money of committed ops
    http: httpx.AsyncClient | None = None
    hlc: HybridClock = field(default_factory=HybridClock)
    key: SigningKey = field(default_factory=SigningKey.generate)  # the clerk's, registered at login

    @property
    def name(self) -> str:
        return f"load window {self.index:02d}"

    def headers(self) -> dict[str, str]:
        return {
            DEVICE_HEADER: self.token,
            "Authorization": f"Bearer {self.session}",
            "Content-Type": "application/json",
        }

    def _op(self, command: Command, at: datetime) -> Operation:
        return Operation.of(
            command,
            op_id=str(ULID()),
            device_id=self.device_id,
            client_seq=1,  # given at commit
            clerk_id=self.clerk_id,
            at=at.isoformat(timespec="milliseconds"),
            hlc=self.hlc.now(),
        ).signed_by(self.key, self.device_id)

    def make(self, at: datetime, cards: list[str]) -> Prepared:
        """The next op of this window's pattern: of every ten, a patient
        registered, a card issued to them with a first prepayment, eight
        top-ups on cards of the register."""
        step = self.made % 10
        self.made += 1
        rng = self.rng
        if step == 0:
            person = next(self.people)
            patient_id = str(ULID())
            self.last_patient = patient_id
            command: Command = RegisterPatient(
                patient_id=patient_id,
                name=person.name,
                sex=person.sex,
                birth_date=person.birth_date,
                doc_type="resident_id",
                doc_no=person.national_id,
                phone=person.phone,
                address=person.address,
            )
            return prepared(self._op(command, at), 0)
        if step == 1 and self.last_patient is not None:
            fen = rng.choice((1_000, 5_000, 10_000, 50_000))
            command = IssueCard(
                card_no=card_no_for(self.cards.popleft()),
                patient_id=self.last_patient,
                prepayment=Prepayment(
                    transfer_id=str(ULID()),
                    amount_fen=fen,
                    method=rng.choice(METHODS),
                    receipt_no=receipt_no_for(self.receipts.popleft()),
                    shift_id=self.shift_id,
                ),
            )
            self.last_patient = None
            return prepared(self._op(command, at), fen)
        fen = rng.choice(TOP_UP_FEN)
        command = TopUp(
            transfer_id=str(ULID()),
            card_no=rng.choice(cards),
            amount_fen=fen,
            method=rng.choice(METHODS),
            receipt_no=receipt_no_for(self.receipts.popleft()),
            shift_id=self.shift_id,
        )
        return prepared(self._op(command, at), fen)

    def stock(self, count: int, cards: list[str], spread_s: float = 0.0) -> None:
        """Make ops ahead, so that making them costs the phase nothing; with
        ``spread_s``, their times spread over the last ``spread_s`` seconds."""
        now = datetime.now(UTC)
        missing = max(0, count - len(self.ready))
        for i in range(missing):
            at = now - timedelta(seconds=spread_s * (missing - i) / missing) if spread_s else now
            self.ready.append(self.make(at, cards))

    def commit(self, cards: list[str]) -> Prepared:
        """The next op into the outbox: its sequence number given."""
        if self.ready:
            op = self.ready.popleft()
        else:
            self.built_late += 1
            op = self.make(datetime.now(UTC), cards)
        self.seq += 1
        op.seq = self.seq
        self.kinds[op.kind] += 1
        self.fen += op.fen
        return op


def batches(outbox: list[Prepared]) -> Iterator[list[Prepared]]:
    """The outbox in pushes as ``sync.engine`` makes them: at most
    MAX_OPS_PER_PUSH ops, within PUSH_BYTES (the first op always goes)."""
    i = 0
    while i < len(outbox):
        total, j = 0, i
        while j < len(outbox) and j - i < MAX_OPS_PER_PUSH:
            total += outbox[j].bound
            if total > PUSH_BYTES and j > i:
                break
            j += 1
        yield outbox[i:j]
        i = j


# -- measuring -----------------------------------------------------------------


@dataclass
class PhaseStats:
    name: str
    started: float = 0.0
    ended: float = 0.0
    deadline: float = 0.0  # for a steady phase: ops/s counts what was answered by then
    pushes: int = 0
    ops: int = 0
    ops_on_time: int = 0
    latencies_s: list[float] = field(default_factory=list)
    confirm_s: list[float] = field(default_factory=list)  # op committed -> answered
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    replays: int = 0
    replays_same: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def window(self) -> float:
        """The time ops/s is counted over: up to the deadline (a steady
        phase), or to the last answer (the storm)."""
        end = min(self.ended, self.deadline) if self.deadline else self.ended
        return max(end - self.started, 1e-9)

    @property
    def ops_per_s(self) -> float:
        return (self.ops_on_time if self.deadline else self.ops) / self.window

    def summary(self) -> dict[str, Any]:
        lat = [x * 1000 for x in self.latencies_s]
        conf = [x * 1000 for x in self.confirm_s]
        out: dict[str, Any] = {
            "seconds": round(self.seconds, 2),
            "pushes": self.pushes,
            "ops": self.ops,
            "ops_per_s": round(self.ops_per_s, 1),
            "pushes_per_s": round(self.pushes / self.seconds, 1) if self.seconds else 0.0,
            "ops_per_push": round(self.ops / self.pushes, 2) if self.pushes else 0.0,
            "push_ms": {f"p{q}": round(percentile(lat, q), 1) for q in (50, 95, 99)}
            | {"max": round(max(lat), 1) if lat else math.nan},
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "cpu_cores": {k: round(v, 2) for k, v in self.cpu.items()},
        }
        if self.ops and self.cpu:
            # CPU time an op took (a steadier figure than ops/s on a shared machine)
            core_s = {k: v * self.seconds for k, v in self.cpu.items()}
            out["cpu_ms_per_op"] = {
                k: round(core_s[k] * 1000 / self.ops, 3)
                for k in ("server", "postgres_backends", "client")
                if k in core_s
            }
        if conf:
            out["confirm_ms"] = {f"p{q}": round(percentile(conf, q), 1) for q in (50, 95, 99)}
        if self.deadline and self.ended > self.deadline + 0.5:
            out["after_deadline_s"] = round(self.ended - self.deadline, 2)
        if self.replays:
            out["replays"] = self.replays
            out["replays_answered_as_stored"] = self.replays_same
        out.update(self.notes)
        return out


def _proc_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                parents[int(entry)] = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, todo = {root}, [root]
    while todo:
        pid = todo.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _machine_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU time of the server's processes, PostgreSQL's backends of the load's
    database, this process (the clients) and the whole machine."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, server_pid: int, engine: Engine | None, database: str | None) -> None:
        self.server_pid, self.engine, self.database = server_pid, engine, database

    def _pg_pids(self) -> set[int]:
        if self.engine is None:
            return set()
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": self.database},
            )
            return {int(r[0]) for r in rows}

    def sample(self) -> dict[str, Any]:
        busy, total = _machine_ticks()
        times = os.times()
        return {
            "wall": time.perf_counter(),
            "server": {p: _proc_ticks(p) for p in _descendants(self.server_pid)},
            "postgres": {p: _proc_ticks(p) for p in self._pg_pids()},
            "client": times.user + times.system,
            "machine_busy": busy,
            "machine_total": total,
        }

    def cores(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        wall = after["wall"] - before["wall"]

        def ticks(group: str) -> float:
            was, now = before[group], after[group]
            return sum(t - was.get(p, 0) for p, t in now.items()) / self.TICK

        machine = (after["machine_busy"] - before["machine_busy"]) / self.TICK
        server, pg = ticks("server"), ticks("postgres")
        client = after["client"] - before["client"]
        out = {
            "server": server / wall,
            "client": client / wall,
            "machine_busy": machine / wall,
            "machine": os.cpu_count() or 1,
        }
        if self.engine is not None:
            out["postgres_backends"] = pg / wall
        out["other"] = max(0.0, (machine - server - pg - client) / wall)
        return out


# where the server's time goes: each sample (a stack holding the GIL) counted
# once, in the first of these its stack passes through, from the innermost
# frame out (a push's SQL inside decide() counts as SQL)
PROFILE_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("database driver (statements, results)", ("psycopg/", "sqlite3", "pysqlite")),
    ("SQLAlchemy (pool, connections, Core)", ("sqlalchemy/",)),
    ("decide(): the rules", ("domain/",)),
    ("push: parse, check, record, answer", ("server/sync_service.py", "server/raw.py")),
    ("device and session check", ("server/auth.py",)),
    ("pydantic", ("pydantic",)),
    (
        "HTTP, routing (uvicorn, Starlette, FastAPI)",
        ("uvicorn/", "starlette/", "fastapi/", "httptools"),
    ),
    ("event loop, threads (asyncio, anyio)", ("asyncio/", "anyio/", "threading.py", "uvloop")),
    ("logging", ("logging/",)),
)


def _file_of(frame: str) -> str:
    return frame[frame.find("(") + 1 :]


def profile_summary(stacks: Counter[str]) -> dict[str, Any]:
    total = sum(stacks.values())
    if not total:
        return {"samples": 0, "lines": ["profile: no samples"]}
    parts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = stack.split(";")
        leaves[re.sub(r":\d+\)$", ")", frames[-1]).replace(str(ROOT) + "/", "")] += count
        for frame in reversed(frames):
            found = next(
                (name for name, marks in PROFILE_PARTS if any(m in _file_of(frame) for m in marks)),
                None,
            )
            if found is not None:
                parts[found] += count
                break
        else:
            parts["other"] += count
    share = {name: round(100 * n / total, 1) for name, n in parts.most_common()}
    lines = [f"profile ({total:,} samples holding the GIL, all server processes):"]
    lines += [f"  {pct:5.1f}%  {name}" for name, pct in share.items()]
    lines += ["  busiest functions (own time):"]
    lines += [
        f"  {100 * n / total:5.1f}%  {re.sub(r' [(].*site-packages/', ' (', leaf)[:110]}"
        for leaf, n in leaves.most_common(8)
    ]
    return {"samples": total, "parts_percent": share, "lines": lines}


# -- the run -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(text_: str) -> None:
    print(text_, flush=True)


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pg = args.db == "pg"
        # PostgreSQL: a process a core (two a core measured no better on 2 cores)
        self.workers = args.workers or ((os.cpu_count() or 1) if self.pg else 1)
        self.rng = random.Random(SEED)
        self.stations: list[Workstation] = []
        self.cards: list[str] = []
        self.phases: list[PhaseStats] = []
        self.server: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.db_url = ""
        self.engine: Engine | None = None
        self.meter: CpuMeter | None = None
        self.setup: dict[str, Any] = {}
        self.verified: dict[str, Any] = {}
        self.run_dir = BENCH_DIR / "data" / "load"
        self.codes: list[str] = []

    # -- set-up ------------------------------------------------------------------

    def make_database(self) -> str:
        if not self.pg:
            if SQLITE_DIR.exists():
                shutil.rmtree(SQLITE_DIR)
            SQLITE_DIR.mkdir(parents=True)
            return f"sqlite:///{SQLITE_DIR / 'central.db'}"
        import psycopg

        server = make_url(self.args.pg_url)
        admin = server.set(database="postgres").render_as_string(hide_password=False)
        admin = admin.replace("postgresql+psycopg://", "postgresql://")
        name = self.args.pg_database
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return server.set(database=name).render_as_string(hide_password=False)

    def seed(self) -> None:
        started = time.perf_counter()
        self.db_url = self.make_database()
        engine = self.engine = make_engine(self.db_url)
        migrate(engine)
        summary = seed_demo_hospital(engine, self.args.patients, seed=SEED)
        with engine.connect() as conn:
            if self.pg:
                conn.execute(text("ANALYZE"))
            self.cards = [
                r[0]
                for r in conn.execute(text("SELECT card_no FROM cards WHERE status = 'active'"))
            ]
            known = {r[0] for r in conn.execute(text("SELECT doc_no FROM patients"))}
        auth = AuthService(engine)
        n = self.args.workstations
        # the patients the load registers, new to the register, made as needed
        fresh = (p for p in generate_people(10**8, PEOPLE_SEED) if p.national_id not in known)
        for i in range(n):
            username = f"load_cashier_{i:02d}"
            auth.create_clerk(username, f"负载收费员{i:02d}", ["cashier"], PASSWORD)
            self.stations.append(Workstation(i, username, fresh, random.Random(SEED * 1000 + i)))
        self.codes = [auth.create_enrollment_code(s.name) for s in self.stations]
        # each station leases all its numbers at once, more than a day's ceiling
        save_policy(engine, Policy(lease_grants_per_minute=10**9, lease_numbers_per_day=10**12))
        self.setup.update(
            patients=summary.patients,
            cards=summary.cards,
            transfers=summary.transfers,
            seed_s=round(time.perf_counter() - started, 1),
        )
        say(
            f"  seeded {summary.patients:,} patients, {summary.cards:,} cards, "
            f"{summary.transfers:,} transfers, {n} clerks in {self.setup['seed_s']} s"
        )

    def ops_per_station(self) -> int:
        """The most a workstation may make: numbers are leased for them."""
        a = self.args
        most = (
            a.closed_pushes_per_s * a.seconds * 11  # both closed phases, generously
            + a.rate * a.seconds * 1.3
        ) / a.workstations + a.backlog
        return int(most) + 100

    def start_server(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [
            str(Path(sys.executable).with_name("workstation")),
            "server",
            "--db",
            self.db_url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.run_dir / "server.log", "wb")  # noqa: SIM115 - the server's, closed by it
        self.server = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.server.poll() is not None:
                raise RuntimeError(f"the server did not start: see {self.run_dir / 'server.log'}")
            time.sleep(0.2)
        # every worker up: several answers in a row
        for _ in range(20):
            httpx.get(f"{self.url}/health", timeout=5)
        engine = self.engine if self.pg else None
        self.meter = CpuMeter(self.server.pid, engine, self.args.pg_database if self.pg else None)
        say(f"  server: {' '.join(command[1:2] + command[6:])} at {self.url}")

    def stop_server(self) -> None:
        if self.server is None:
            return
        self.server.terminate()
        try:
            self.server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()

    async def enroll(self) -> None:
        """Each workstation as a real one: enrolment, login, number leases, its shift."""
        started = time.perf_counter()
        a = self.args
        receipts_needed = self.ops_per_station()
        cards_needed = receipts_needed // 10 + 10

        async def one(ws: Workstation, code: str) -> None:
            client = SyncClient(self.url, timeout=60)
            try:
                enrolled = await client.enroll(code, ws.name)
                ws.device_id, ws.token = enrolled.device_id, enrolled.device_token
                client.device_token = ws.token
                login = await client.login(ws.username, PASSWORD, signing_key=ws.key.public_key)
                ws.session, ws.clerk_id = login.session_token, login.clerk.clerk_id
                for series, needed in (
                    (Series.RECEIPT, receipts_needed),
                    (Series.CARD, cards_needed),
                ):
                    target = ws.receipts if series is Series.RECEIPT else ws.cards
                    while len(target) < needed:
                        lease = await client.lease(
                            NUMBER_BLOCK, series.value, min(10_000, needed - len(target))
                        )
                        assert lease.first is not None and lease.last is not None
                        target.extend(range(lease.first, lease.last + 1))
            finally:
                await client.aclose()
            ws.http = httpx.AsyncClient(
                base_url=self.url,
                timeout=TIMEOUT_S,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
            ws.shift_id = str(ULID())
            shift = ws._op(OpenShift(shift_id=ws.shift_id), datetime.now(UTC))
            ws.ready.appendleft(prepared(shift, 0))
            stats = PhaseStats("enrol")
            await self.push(ws, [ws.commit(self.cards)], stats)

        # logins are argon2 checks: a few at a time
        limit = asyncio.Semaphore(4)

        async def bounded(ws: Workstation, code: str) -> None:
            async with limit:
                await one(ws, code)

        await asyncio.gather(
            *(bounded(ws, code) for ws, code in zip(self.stations, self.codes, strict=True))
        )
        self.setup["enrol_s"] = round(time.perf_counter() - started, 1)
        say(
            f"  {a.workstations} workstations enrolled, logged in, leased numbers and opened "
            f"their shift in {self.setup['enrol_s']} s"
        )

    # -- pushing -------------------------------------------------------------------

    async def push(
        self, ws: Workstation, ops: list[Prepared], stats: PhaseStats, replay: bool = False
    ) -> None:
        """One push of ``ops`` (their answers counted); retried as the engine
        retries (transient failures, deferred ops). ``replay``: a push sent
        again whose answer was lost, which the server answers from what it
        stored."""
        assert ws.http is not None
        pending = ops
        attempts = 0
        while pending:
            attempts += 1
            if attempts > 20:
                raise RuntimeError(f"{ws.name}: a push failed 20 times: {dict(stats.errors)}")
            body = b"".join(
                (
                    b'{"device_time":"',
                    datetime.now(UTC).isoformat(timespec="milliseconds").encode(),
                    b'","ops":[',
                    b",".join(op.wire() for op in pending),
                    b"]}",
                )
            )
            sent = time.perf_counter()
            try:
                response = await ws.http.post("/sync/push", content=body, headers=ws.headers())
            except httpx.TransportError as exc:
                stats.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.2 + random.random() * 0.3)
                continue
            answered = time.perf_counter()
            if response.status_code != 200:
                stats.errors[f"http_{response.status_code}"] += 1
                if response.status_code < 500:
                    raise RuntimeError(f"{ws.name}: {response.status_code} {response.text[:300]}")
                await asyncio.sleep(0.2 + random.random() * 0.3)
                continue
            answer = PushResponse.model_validate_json(response.content)
            if replay:
                stats.replays += len(pending)
                stats.replays_same += sum(
                    1 for r in answer.results if r.status in ("applied", "applied_modified")
                )
                return
            stats.latencies_s.append(answered - sent)
            stats.pushes += 1
            deferred = []
            for op, result in zip(pending, answer.results, strict=True):
                if result.status == "deferred":
                    deferred.append(op)
                    stats.errors[f"deferred_{result.code}"] += 1
                    continue
                stats.statuses[
                    result.status if not result.code else f"{result.status}:{result.code}"
                ] += 1
                stats.ops += 1
                if not stats.deadline or answered <= stats.deadline:
                    stats.ops_on_time += 1
                if op.at:
                    stats.confirm_s.append(answered - op.at)
            pending = deferred
            if deferred:
                await asyncio.sleep(0.1)

    async def closed(
        self, name: str, per_push: int, seconds: float, expect_ops_per_s: float
    ) -> PhaseStats:
        """Each workstation pushes ``per_push`` ops, waits for the answer, and again."""
        stats = PhaseStats(name)
        each = math.ceil(expect_ops_per_s * seconds / len(self.stations))
        for ws in self.stations:
            ws.stock(min(each, 10_000), self.cards)

        async def station(ws: Workstation, deadline: float) -> None:
            while time.perf_counter() < deadline:
                await self.push(ws, [ws.commit(self.cards) for _ in range(per_push)], stats)

        await self.measured(stats, station, seconds)
        return stats

    async def paced(self, rate: float, seconds: float) -> PhaseStats:
        """Ops committed at ``rate`` a second in all (Poisson at each window);
        each window pushes what waits, at most 500 a push, as the engine does."""
        stats = PhaseStats("paced")
        per_station = rate / len(self.stations)
        for ws in self.stations:
            ws.stock(int(per_station * seconds * 1.3) + 10, self.cards)

        async def station(ws: Workstation, deadline: float) -> None:
            rng = random.Random(ws.index)
            now = time.perf_counter()
            next_at = now + rng.expovariate(per_station)
            outbox: list[Prepared] = []
            while True:
                now = time.perf_counter()
                while next_at <= now and next_at < deadline:  # the clerks' commits until now
                    op = ws.commit(self.cards)
                    op.at = next_at
                    outbox.append(op)
                    next_at += rng.expovariate(per_station)
                if outbox:
                    batch = next(batches(outbox))
                    outbox = outbox[len(batch) :]
                    await self.push(ws, batch, stats)
                    continue
                if next_at >= deadline:
                    return
                await asyncio.sleep(next_at - now)

        await self.measured(stats, station, seconds)
        offered = stats.notes
        offered["offered_ops_per_s"] = rate
        return stats

    async def storm(self) -> PhaseStats:
        """Every window back after an 8-hour outage, its backlog pushed at once;
        each resends one batch whose answer it lost."""
        stats = PhaseStats("storm")
        backlog = self.args.backlog
        started = time.perf_counter()
        for ws in self.stations:
            ws.stock(backlog, self.cards, spread_s=OUTAGE_HOURS * 3600)
        outboxes = {
            ws.index: [ws.commit(self.cards) for _ in range(backlog)] for ws in self.stations
        }
        for box in outboxes.values():
            for op in box:
                op.at = 0.0  # an outage's wait is not a confirmation time
        stats.notes["backlog_made_s"] = round(time.perf_counter() - started, 1)

        async def station(ws: Workstation, deadline: float) -> None:
            assert ws.http is not None
            await self.probe(ws)  # the engine's probe: the link is back
            box = outboxes[ws.index]
            lost = ws.index % 4  # which batch's answer is "lost" (resent once)
            for i, batch in enumerate(batches(box)):
                if time.perf_counter() > deadline:
                    stats.errors["storm_time_limit"] += 1
                    return
                await self.push(ws, batch, stats)
                if i == lost:
                    await self.push(ws, batch, stats, replay=True)

        await self.measured(stats, station, self.args.storm_limit, steady=False)
        stats.notes["backlog_ops"] = backlog * len(self.stations)
        return stats

    async def probe(self, ws: Workstation) -> None:
        assert ws.http is not None
        for _ in range(10):
            try:
                await ws.http.get("/health")
                return
            except httpx.TransportError:  # a kept-alive connection the server closed
                await asyncio.sleep(0.1)

    async def measured(
        self,
        stats: PhaseStats,
        runner: Callable[[Workstation, float], Awaitable[None]],
        seconds: float,
        steady: bool = True,
    ) -> None:
        assert self.meter is not None
        say(f"\n== {stats.name}")
        profilers = self.start_profiling(stats.name) if self.args.profile else []
        before = await asyncio.to_thread(self.meter.sample)
        stats.started = time.perf_counter()
        deadline = stats.started + seconds
        if steady:
            stats.deadline = deadline
        await asyncio.gather(*(runner(ws, deadline) for ws in self.stations))
        stats.ended = time.perf_counter()
        after = await asyncio.to_thread(self.meter.sample)
        stats.cpu = self.meter.cores(before, after)
        if profilers:
            stats.notes["profile"] = await asyncio.to_thread(self.stop_profiling, profilers)
        late = sum(ws.built_late for ws in self.stations)
        if late:
            stats.notes["ops_made_during_phase"] = late
            for ws in self.stations:
                ws.built_late = 0
        s = stats.summary()
        say(
            f"  {s['ops']:,} ops in {s['pushes']:,} pushes, {s['seconds']} s: "
            f"{s['ops_per_s']:,} ops/s, push p50/p95/p99 {s['push_ms']['p50']}/"
            f"{s['push_ms']['p95']}/{s['push_ms']['p99']} ms; cpu cores {s['cpu_cores']}"
        )
        if stats.errors:
            say(f"  errors/retries: {dict(stats.errors)}")
        if "cpu_ms_per_op" in s:
            say(f"  cpu ms an op: {s['cpu_ms_per_op']}")
        for line in stats.notes.get("profile", {}).get("lines", []):
            say(f"  {line}")

    # -- where the server's time goes (py-spy) -----------------------------------------

    def start_profiling(self, phase: str) -> list[tuple[subprocess.Popen[bytes], Path]]:
        assert self.server is not None
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        started = []
        for pid in sorted(_descendants(self.server.pid)):
            out = self.run_dir / f"profile-{phase}-{pid}.txt"
            command = [str(spy), "record", "--pid", str(pid), "--gil", "--nonblocking"]
            command += ["--rate", "200", "--format", "raw", "--output", str(out)]
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            started.append((process, out))
        return started

    def stop_profiling(
        self, profilers: list[tuple[subprocess.Popen[bytes], Path]]
    ) -> dict[str, Any]:
        """Stop the samplers; where the server's Python time went (the thread
        holding the GIL, all processes together)."""
        for process, _ in profilers:
            process.send_signal(signal.SIGINT)
        for process, _ in profilers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        stacks: Counter[str] = Counter()
        for _, out in profilers:
            if out.exists():
                for line in out.read_text().splitlines():
                    stack, _, count = line.rpartition(" ")
                    stacks[stack] += int(count)
        return profile_summary(stacks)

    # -- checking ------------------------------------------------------------------

    def verify(self) -> dict[str, Any]:
        """Exactly once, in order, nothing lost; the ledger balanced."""
        assert self.engine is not None
        problems: list[str] = []
        out: dict[str, Any] = {}
        by_device = {ws.device_id: ws for ws in self.stations}
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT device_id, COUNT(*), MIN(client_seq), MAX(client_seq), "
                    "SUM(CASE WHEN status IN ('applied', 'applied_modified') THEN 1 ELSE 0 END) "
                    "FROM ops GROUP BY device_id"
                )
            ).all()
            seen = {r[0]: r for r in rows if r[0] in by_device}
            for device_id, ws in by_device.items():
                found = seen.get(device_id)
                if found is None:
                    problems.append(f"{ws.name}: no ops recorded")
                    continue
                _, count, low, high, applied = found
                if (count, low, high) != (ws.seq, 1, ws.seq):
                    problems.append(
                        f"{ws.name}: {count} ops recorded, seq {low}..{high}; it made {ws.seq}"
                    )
                if applied != ws.seq:
                    problems.append(f"{ws.name}: {applied} of {ws.seq} ops applied")
            out["ops_recorded"] = sum(int(seen[d][1]) for d in seen)
            out["ops_made"] = sum(ws.seq for ws in self.stations)
            statuses = conn.execute(
                text("SELECT status, code, COUNT(*) FROM ops GROUP BY status, code")
            ).all()
            out["ops_by_status"] = {f"{s}:{c}" if c else s: int(n) for s, c, n in statuses}
            # each op's rows written once: change-log rows per op as its kind writes
            kinds = conn.execute(
                text(
                    "SELECT o.kind, COUNT(*), COUNT(DISTINCT o.op_id) FROM change_log c "
                    "JOIN ops o ON o.op_id = c.op_id GROUP BY o.kind"
                )
            ).all()
            made: Counter[str] = Counter()
            for ws in self.stations:
                made.update(ws.kinds)
            for kind, rows_, ops_ in kinds:
                expected = made[kind] * ROWS_OF[kind]
                if (int(rows_), int(ops_)) != (expected, made[kind]):
                    problems.append(
                        f"{kind}: {rows_} change-log rows of {ops_} ops; expected {expected} "
                        f"of {made[kind]}"
                    )
            out["ops_by_kind"] = dict(made)
            dup = conn.execute(
                text(
                    "SELECT COUNT(*) FROM (SELECT op_id FROM transfers WHERE op_id <> 'seed' "
                    "GROUP BY op_id HAVING COUNT(*) > 1) d"
                )
            ).scalar_one()
            if dup:
                problems.append(f"{dup} ops wrote more than one transfer")
            # the money: each shift's drawers took what its window took, into deposits
            money = conn.execute(
                text(
                    "SELECT device_id, COUNT(*), SUM(amount_fen), "
                    "SUM(CASE WHEN debit_account LIKE 'shift:%' THEN amount_fen ELSE 0 END), "
                    "SUM(CASE WHEN credit_account LIKE 'deposit:%' THEN amount_fen ELSE 0 END) "
                    "FROM transfers WHERE op_id <> 'seed' GROUP BY device_id"
                )
            ).all()
            by_money = {r[0]: r for r in money}
            taken = 0
            for device_id, ws in by_device.items():
                row = by_money.get(device_id)
                total = int(row[2]) if row else 0
                drawers = int(row[3]) if row else 0
                deposits = int(row[4]) if row else 0
                taken += total
                if not total == drawers == deposits == ws.fen:
                    problems.append(
                        f"{ws.name}: transfers {total}, drawers {drawers}, deposits {deposits}; "
                        f"it took {ws.fen} fen"
                    )
            out["money_taken_fen"] = taken
            out["money_expected_fen"] = sum(ws.fen for ws in self.stations)
            balance = conn.execute(
                text(
                    "SELECT (SELECT COALESCE(SUM(amount_fen), 0) FROM transfers "
                    "WHERE debit_account LIKE 'shift:%') - (SELECT COALESCE(SUM(amount_fen), 0) "
                    "FROM transfers WHERE op_id <> 'seed' AND credit_account LIKE 'deposit:%')"
                )
            ).scalar_one()
            if balance:
                problems.append(f"drawers minus deposits of the load's money: {balance} fen")
            # the change log: gap-free, its counter at the head
            count, low, high = conn.execute(
                text("SELECT COUNT(*), MIN(seq), MAX(seq) FROM change_log")
            ).one()
            head = conn.execute(
                text("SELECT value FROM counters WHERE name = 'change_seq'")
            ).scalar_one()
            if not (low == 1 and high == count == head):
                problems.append(f"change log: {count} rows, seq {low}..{high}, head {head}")
            out["change_log"] = {"rows": int(count), "head": int(head)}
        out["problems"] = problems
        out["ok"] = not problems
        return out

    # -- all of it -------------------------------------------------------------------

    async def run(self) -> int:
        a = self.args
        say(
            f"make load: {a.workstations} workstations, {a.db} "
            f"({self.workers} worker{'s' if self.workers > 1 else ''}), "
            f"{a.seconds:g} s a steady phase, storm {a.backlog:,} ops each"
        )
        say(f"  machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
        self.setup["load_average_at_start"] = round(os.getloadavg()[0], 2)
        say("\n== set-up")
        await asyncio.to_thread(self.seed)
        await asyncio.to_thread(self.start_server)
        try:
            await self.enroll()
            half = a.seconds / 2
            expect = a.closed_pushes_per_s
            if "closed_1" in a.phases:
                one = await self.closed("closed_1", 1, half, expect)
                self.phases.append(one)
                # ten a push: make ahead for three times the ops/s of one a push
                expect = 3 * one.ops / max(one.seconds, 0.001)
            if "closed_10" in a.phases:
                self.phases.append(await self.closed("closed_10", 10, half, expect))
            if "paced" in a.phases:
                self.phases.append(await self.paced(a.rate, a.seconds))
            if "storm" in a.phases:
                self.phases.append(await self.storm())
        finally:
            for ws in self.stations:
                if ws.http is not None:
                    await ws.http.aclose()
            self.stop_server()
        say("\n== check")
        self.verified = await asyncio.to_thread(self.verify)
        for problem in self.verified["problems"]:
            say(f"  PROBLEM: {problem}")
        say(
            "  "
            + ("ok: " if self.verified["ok"] else "NOT OK: ")
            + f"{self.verified['ops_recorded']:,} ops recorded of {self.verified['ops_made']:,} "
            f"made, each once and in sequence; {self.verified['money_taken_fen'] / 100:,.2f} yuan "
            f"in transfers of {self.verified['money_expected_fen'] / 100:,.2f} taken; "
            f"change log gap-free to {self.verified['change_log']['head']:,}"
        )
        self.report()
        if self.engine is not None:
            self.engine.dispose()
        return 0 if self.verified["ok"] else 1

    def report(self) -> None:
        a = self.args
        results = {
            "config": {
                "db": a.db,
                "workers": self.workers,
                "workstations": a.workstations,
                "seconds": a.seconds,
                "rate": a.rate,
                "backlog": a.backlog,
                "patients": a.patients,
                "cores": os.cpu_count(),
            },
            "setup": self.setup,
            "phases": {p.name: p.summary() for p in self.phases},
            "check": self.verified,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        say("\n== summary")
        header = (
            "phase",
            "ops/s",
            "pushes/s",
            "ops/push",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "server",
            "postgres",
            "client",
            "machine",
        )
        lines = []
        for p in self.phases:
            s = p.summary()
            cpu = s["cpu_cores"]
            lines.append(
                (
                    p.name,
                    f"{s['ops_per_s']:,.0f}",
                    f"{s['pushes_per_s']:,.0f}",
                    f"{s['ops_per_push']:g}",
                    f"{s['push_ms']['p50']:g}",
                    f"{s['push_ms']['p95']:g}",
                    f"{s['push_ms']['p99']:g}",
                    f"{cpu['server']:.2f}",
                    f"{cpu.get('postgres_backends', 0):.2f}" if self.pg else "-",
                    f"{cpu['client']:.2f}",
                    f"{cpu['machine_busy']:.2f}/{cpu['machine']:g}",
                )
            )
        widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(header)]
        say("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
        for line in lines:
            say("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
        say("(cpu: cores busy during the phase; server = all its uvicorn processes)")
        phases = {p.name: p for p in self.phases}
        if "paced" in phases:
            ps = phases["paced"].summary()
            met = ps["ops_per_s"] >= TARGET_OPS_PER_S and ps["push_ms"]["p99"] <= TARGET_P99_MS
            say(
                f"paced: {ps['ops_per_s']:,} ops/s of {a.rate:,.0f} offered, push p99 "
                f"{ps['push_ms']['p99']} ms (target >= {TARGET_OPS_PER_S:,.0f} ops/s with p99 <= "
                f"{TARGET_P99_MS:g} ms: {'met' if met else 'NOT MET'})"
            )
        if "storm" in phases:
            storm = phases["storm"]
            say(
                f"storm: {storm.ops:,} ops from {a.workstations} workstations in "
                f"{storm.seconds:.1f} s ({storm.ops_per_s:,.0f} ops/s)"
            )
        say(f"check: {'ok' if self.verified['ok'] else 'FAILED'}")
        say(f"written to {RESULTS.relative_to(ROOT)}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--db", choices=("pg", "sqlite"), default="pg")
    parser.add_argument("--workstations", type=int, default=50)
    parser.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="the paced phase; each closed phase takes half of it",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="server processes (default: PostgreSQL one a core; SQLite 1)",
    )
    parser.add_argument("--rate", type=float, default=TARGET_OPS_PER_S, help="paced ops/s offered")
    parser.add_argument("--backlog", type=int, default=2_000, help="storm ops per workstation")
    parser.add_argument("--storm-limit", type=float, default=240.0, help="storm time limit, s")
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument(
        "--closed-pushes-per-s",
        type=float,
        default=1_500.0,
        help="what the closed phases may reach, to make ops ahead (more are made as needed)",
    )
    parser.add_argument(
        "--phases",
        type=lambda text: [p for p in text.split(",") if p],
        default=list(PHASES),
        help=f"which phases, in their order: {','.join(PHASES)} (default all)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the server's processes with py-spy during each phase (pip install "
        "py-spy): where their CPU time goes, printed and in the results",
    )
    parser.add_argument("--pg-url", default=os.environ.get("LOAD_PG_URL", PG_SERVER))
    parser.add_argument("--pg-database", default=os.environ.get("LOAD_PG_DATABASE", PG_DATABASE))
    args = parser.parse_args(argv)
    if args.db == "sqlite" and args.workers > 1:
        parser.error("SQLite is served by one worker")
    if unknown := set(args.phases) - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - Windows
        runner = asyncio.run
    return int(runner(Load(args).run()))


if __name__ == "__main__":
    raise SystemExit(main())
