"""A seeded, deterministic simulation of a hospital's windows and its server.

N workstations (each the real replica, sync engine and cashier desk, built by
``workstation.builder``) and one server (the real FastAPI app on SQLite, over
an in-process ASGI link) run in one process. One random generator, seeded,
decides everything: which clerk does what and when, and every fault. Nothing
runs concurrently (every step is awaited to its end), workstation clocks are
virtual, ids come from the seeded generator: a seed replays exactly.

Faults: requests lost before the server sees them, answers lost after it
committed, requests delivered twice, an old push delivered again later
(reordered), a workstation crashing in the middle of a sync (its replica
reopened from disk; SQLite keeps what committed), the link cut for up to 72
simulated hours, the server restarted, the server restored from an older
backup with and without ``admin new-epoch``, and clock skew.

After the faults the world heals (links up, nothing lost in transit) and
each workstation syncs until it is quiet; then the invariants are checked
(see ``check``). A violation is a failing seed.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import random
import shutil
import sqlite3
import tempfile
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx
import ulid as ulid_module
from argon2 import PasswordHasher
from sqlalchemy import select

from domain.areas import ROW_TYPES
from domain.errors import DomainError
from domain.numbers import Series
from domain.state import Policy
from local_db.store import CommandRejected, LocalStore
from server.app import create_app
from server.db import REPLICATED, make_engine, ops, transfers
from server.site import save_policy, start_new_epoch
from sync.client import SyncError
from sync.engine import NotLoggedIn
from workstation.builder import SyncTiming, Workstation, build_workstation
from workstation.desk import DeskSettings, RegistrationDraft
from workstation.desk.core import LoginFailed, NotAllowed, enroll_workstation

PASSWORD = "sim-password-1"
METHODS = ("cash", "wechat", "alipay", "bank_card")
# valid resident ID numbers: a few, so that two windows register one person
RESIDENT_IDS = (
    "11010519491231002X",
    "440524188001010014",
    "110105194912310029",
    "11010119900307803X",
)
NAMES = ("张三", "李四", "王五", "赵六", "陈七", "刘八", "杨九", "黄十")
HEAL_ROUNDS = 12
RELIEF = "sup"  # the supervisor who relieves a window's cashier (World.change_clerk)
NUMBER_REFUSALS = frozenset(
    {
        "card_already_issued",
        "card_number_not_leased",
        "receipt_number_not_leased",
        "receipt_number_used",
        "conflict",
    }
)
EPOCH0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

UNLIMITED_LEASES = Policy(lease_grants_per_minute=10**9, lease_numbers_per_day=10**12)


class Crash(Exception):
    """The workstation's process died here (power cut, SIGKILL)."""


@dataclass
class Config:
    workstations: int = 3
    steps: int = 60


@dataclass
class Violation:
    what: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.what}: {self.detail}" if self.detail else self.what


# -- deterministic ids ------------------------------------------------------------


@contextmanager
def cheap_passwords() -> Iterator[None]:
    """Password hashing and the derivation of the key that seals a clerk's
    signing key at their cheapest: a site's argon2 costs ~0.25-0.4 s, which
    the simulation's logins would spend thousands of times over."""
    import local_db.keys as keys
    import server.auth

    cheap = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    saved = server.auth._hasher, keys.KDF_TIME_COST, keys.KDF_MEMORY_KIB, keys.KDF_PARALLELISM
    server.auth._hasher = cheap
    keys.KDF_TIME_COST, keys.KDF_MEMORY_KIB, keys.KDF_PARALLELISM = 1, 64, 1
    try:
        yield
    finally:
        server.auth._hasher, keys.KDF_TIME_COST, keys.KDF_MEMORY_KIB, keys.KDF_PARALLELISM = saved


@contextmanager
def small_number_blocks() -> Iterator[None]:
    """Number blocks of a few numbers, refilled when two are left: leases are
    asked for often, and some are lost to a restore."""
    import sync.engine

    saved = dict(sync.engine.NUMBER_STOCK)
    sync.engine.NUMBER_STOCK.update({Series.CARD: (2, 4), Series.RECEIPT: (2, 6)})
    try:
        yield
    finally:
        sync.engine.NUMBER_STOCK.update(saved)


@contextmanager
def seeded_ids(rng: random.Random) -> Iterator[None]:
    """Every ULID made in the block comes from ``rng`` (time part from a counter)."""
    original = ulid_module.ULID.__init__
    counter = iter(range(1, 2**40))

    def init(self: Any, value: bytes | None = None) -> None:
        if value is None:
            value = next(counter).to_bytes(6, "big") + rng.randbytes(10)
        original(self, value)

    ulid_module.ULID.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        ulid_module.ULID.__init__ = original  # type: ignore[method-assign]


# -- the link ---------------------------------------------------------------------


class Link(httpx.AsyncBaseTransport):
    """A workstation's link to the server, with the faults the world decides."""

    def __init__(self, world: World, name: str) -> None:
        self.world, self.name = world, name
        self.cut = False
        self.faulty = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        world = self.world
        if self.cut:
            raise httpx.ConnectError("link cut", request=request)
        roll = world.rng.random() if self.faulty else 1.0
        if roll < 0.03:
            world.faults["request lost"] += 1
            raise httpx.ConnectError("request lost", request=request)
        if roll < 0.045:
            world.faults["crash mid-sync"] += 1
            world.log(f"{self.name}: crash before {request.url.path}")
            raise Crash(request.url.path)
        body = await request.aread()
        if request.url.path == "/sync/push":
            world.old_pushes.append((dict(request.headers), body))
        response = await world.server.call(request, body)
        if roll < 0.07:
            world.faults["delivered twice"] += 1
            response = await world.server.call(request, body)
        if 0.07 <= roll < 0.10:
            world.faults["answer lost"] += 1
            raise httpx.ReadError("answer lost", request=request)
        if 0.10 <= roll < 0.115:
            world.faults["crash mid-sync"] += 1
            world.log(f"{self.name}: crash after {request.url.path}")
            raise Crash(request.url.path)
        return response


class Server:
    """The central server: the real app on a SQLite file, restartable."""

    def __init__(self, directory: Path, *, migrate: bool) -> None:
        self.directory = directory
        self.db = directory / "central.db"
        self.url = f"sqlite:///{self.db}"
        self.engine = make_engine(self.url)
        self.app = create_app(self.engine, directory / "images", migrate=migrate)
        self.asgi = httpx.ASGITransport(app=self.app)

    async def call(self, request: httpx.Request, body: bytes) -> httpx.Response:
        inner = httpx.Request(request.method, request.url, headers=request.headers, content=body)
        response = await self.asgi.handle_async_request(inner)
        content = await response.aread()
        return httpx.Response(
            response.status_code, headers=response.headers, stream=httpx.ByteStream(content)
        )

    def restart(self) -> None:
        self.engine.dispose()
        self.engine = make_engine(self.url)
        self.app = create_app(self.engine, self.directory / "images", migrate=False)
        self.asgi = httpx.ASGITransport(app=self.app)

    def back_up(self, to: Path) -> None:
        with sqlite3.connect(self.db) as source, sqlite3.connect(to) as target:
            source.backup(target)

    def restore(self, backup: Path, new_epoch: str | None) -> None:
        """Put ``backup`` in place; with ``new_epoch``, run `admin new-epoch`
        (the epoch named by the simulation, for an exact replay)."""
        self.engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)
        shutil.copy(backup, self.db)
        if new_epoch is not None:
            engine = make_engine(self.url)
            with patch("server.db.new_epoch", lambda: new_epoch):
                start_new_epoch(engine)
            engine.dispose()
        self.restart()

    def close(self) -> None:
        self.engine.dispose()


# -- a window ---------------------------------------------------------------------


@dataclass
class Window:
    name: str
    directory: Path
    username: str
    token: str = ""
    skew_s: float = 0.0
    link: Link | None = None
    parts: Workstation | None = None
    logged_in: bool = False
    told: dict[str, str] = field(default_factory=dict)  # op id -> kind: shown as done

    @property
    def store(self) -> LocalStore:
        assert self.parts is not None
        return self.parts.store


class World:
    def __init__(self, seed: int, directory: Path, config: Config) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.directory = directory
        self.config = config
        self.now = EPOCH0
        self.trace: list[str] = []
        self.old_pushes: list[tuple[dict[str, str], bytes]] = []
        self.backups: list[Path] = []
        self.windows: list[Window] = []
        self.doc_serial = 0
        self.faults: Counter[str] = Counter()
        self._server: Server | None = None

    @property
    def server(self) -> Server:
        assert self._server is not None
        return self._server

    def log(self, line: str) -> None:
        self.trace.append(f"[{self.now:%m-%d %H:%M}] {line}")

    # -- set-up ---------------------------------------------------------------

    async def enroll(self) -> None:
        """A new hospital: the server, a cashier per window, each window
        enrolled and loaded. Done once per process (``template``)."""
        self._server = Server(self.directory, migrate=True)
        # the lease limits count wall-clock minutes and days, which simulated
        # time does not follow: lifted, so that a seed replays the same
        save_policy(self.server.app.state.engine, UNLIMITED_LEASES)
        auth = self.server.app.state.auth
        # a supervisor who takes over at any window now and then: ops of two
        # clerks in one outbox, signed each by its own (domain.signing)
        auth.create_clerk(RELIEF, "主管", ["cashier", "supervisor"], PASSWORD)
        for i in range(self.config.workstations):
            name = f"w{i}"
            auth.create_clerk(f"cash{i}", f"收费员{i}", ["cashier"], PASSWORD)
            window = Window(name, self.directory / name, f"cash{i}")
            window.directory.mkdir()
            self.windows.append(window)
            self.open(window)
            assert window.parts is not None
            code = auth.create_enrollment_code(name)
            window.token = await enroll_workstation(
                window.parts.client, window.parts.store, code, name
            )
            await self.login(window)
            await window.parts.engine.sync_once()
        (self.directory / "tokens.json").write_text(
            json.dumps({w.name: w.token for w in self.windows})
        )

    async def set_up(self) -> None:
        """This seed's hospital: a copy of the enrolled one, clocks skewed."""
        template = await _template(self.config.workstations)
        shutil.copytree(template, self.directory, dirs_exist_ok=True)
        self._server = Server(self.directory, migrate=False)
        tokens = json.loads((self.directory / "tokens.json").read_text())
        for name, token in tokens.items():
            window = Window(name, self.directory / name, f"cash{name[1:]}", token=token)
            window.skew_s = self.rng.choice((0.0, 0.0, 40.0, -90.0, 600.0))
            self.windows.append(window)
            self.open(window)
            await self.login(window)

    def open(self, window: Window) -> None:
        """Build the workstation from its directory (after a crash: reopen)."""
        if window.link is None:
            window.link = Link(self, window.name)
            window.link.faulty = False  # until set up
        window.parts = build_workstation(
            window.directory / "replica.db",
            "http://central",
            device_token=window.token or None,
            settings=DeskSettings(
                window_name=window.name,
                receipts_dir=window.directory / "receipts",
                ack_wait_s=0,
            ),
            transport=window.link,
            clock=lambda: (self.now + timedelta(seconds=window.skew_s)).astimezone(),
            timing=SyncTiming(interval_s=3600, base_delay_s=1, max_delay_s=1),
        )
        window.logged_in = False

    async def login(self, window: Window) -> None:
        assert window.parts is not None
        try:
            await window.parts.desk.login(window.username, PASSWORD)
            window.logged_in = True
            await window.parts.desk.current_shift()
        except (LoginFailed, SyncError, Crash) as exc:
            self.log(f"{window.name}: login failed ({type(exc).__name__})")

    async def change_clerk(self, window: Window) -> None:
        """The window's clerk logs out and the other takes over (the supervisor
        relieving the window's cashier, or the cashier coming back), online
        or offline: what the one left unpushed is pushed under the other's
        session."""
        assert window.parts is not None
        self.faults["clerks change"] += 1
        own = f"cash{window.name[1:]}"
        window.username = RELIEF if window.username == own else own
        self.log(f"{window.name}: {window.username} takes over")
        if window.logged_in:
            window.logged_in = False
            try:
                await window.parts.desk.logout()
            except Crash:  # the process died as it told the server
                await self.crash(window)
                return
        await self.login(window)

    async def crash(self, window: Window) -> None:
        """The process dies: nothing is closed cleanly; the replica is reopened."""
        assert window.parts is not None
        self.faults["workstation crash"] += 1
        self.log(f"{window.name}: crashed, reopened")
        window.parts.store.close()  # SQLite: what committed is on disk, the rest is not
        window.parts = None
        self.open(window)
        await self.login(window)

    # -- the clerks' work --------------------------------------------------------

    async def clerk_acts(self, window: Window) -> None:
        assert window.parts is not None
        if not window.logged_in:
            await self.login(window)
            if not window.logged_in:
                return
        cashier, desk, rng = window.parts.cashier, window.parts.desk, self.rng
        cards = [
            row[0]
            for row in window.store.conn.execute(
                "SELECT card_no FROM cards WHERE status = 'active' ORDER BY card_no"
            )
        ]
        without_card = [
            row[0]
            for row in window.store.conn.execute(
                "SELECT patient_id FROM patients WHERE patient_id NOT IN "
                "(SELECT patient_id FROM cards WHERE status = 'active') ORDER BY rowid"
            )
        ]
        roll = rng.random()
        try:
            if roll < 0.25 or (not cards and not without_card):
                draft = self.registration(window)
                what = "register"
                done = await cashier.commit(draft)
            elif roll < 0.45 and without_card:
                view = desk.patient(rng.choice(without_card))
                if view is None:
                    return
                amount = str(rng.randint(0, 500))
                what = f"issue card with {amount}"
                done = await cashier.commit(
                    cashier.issue_card_draft(view, amount, rng.choice(METHODS))
                )
            elif roll < 0.95 and cards:
                card = rng.choice(cards)
                view = desk.patient_by_card(card)
                amount = f"{rng.randint(1, 50000) / 100:.2f}"
                what = f"top up {card} with {amount}"
                done = await cashier.commit(
                    cashier.top_up_draft(view, card, amount, rng.choice(METHODS))
                )
            elif cards:
                card = rng.choice(cards)
                what = f"cancel {card}"
                done = await cashier.commit(cashier.cancel_card_draft(card, "lost"))
            else:
                return
        except (CommandRejected, NotAllowed, DomainError) as refused:
            self.log(f"{window.name}: refused at the window: {refused}")
            return
        except Crash:
            # an online commit awaits nothing from the link (ack_wait 0): not here
            raise
        window.told[done.op_id] = done.kind
        self.log(f"{window.name}: {what} -> {done.op_id[-6:]}")

    def registration(self, window: Window) -> Any:
        assert window.parts is not None
        rng = self.rng
        name = rng.choice(NAMES)
        if rng.random() < 0.3:
            doc_type, doc_no, birth = "resident_id", rng.choice(RESIDENT_IDS), ""
        else:
            self.doc_serial += 1
            doc_type, doc_no, birth = (
                "passport",
                f"E{self.seed % 10_000:04d}{self.doc_serial:04d}",
                "1980-05-06",
            )
        form = RegistrationDraft(
            name=name,
            sex=rng.choice("MF"),
            birth_date=birth,
            doc_type=doc_type,
            doc_no=doc_no,
            phone=f"139{rng.randint(0, 99_999_999):08d}",
            address="北京市",
        )
        return window.parts.cashier.registration(
            name=form.name,
            sex=form.sex,
            birth_date=form.birth_date,
            doc_type=form.doc_type,
            doc_no=form.doc_no,
            phone=form.phone,
            address=form.address,
        )

    async def sync(self, window: Window) -> bool:
        """One sync cycle of ``window``; whether it changed anything."""
        assert window.parts is not None
        if not window.logged_in:
            await self.login(window)  # the clerk at a reopened window logs in again
            if not window.logged_in:
                return True
        try:
            report = await window.parts.engine.sync_once()
        except NotLoggedIn:
            window.logged_in = False
            return True
        except SyncError as exc:
            self.log(f"{window.name}: sync failed: {exc.code}")
            return True
        except Crash:
            await self.crash(window)
            return True
        return bool(report.pushed or report.rejected or report.pulled or report.bootstrapped)

    # -- the run ------------------------------------------------------------------

    async def run(self) -> list[Violation]:
        await self.set_up()
        for window in self.windows:
            assert window.link is not None
            window.link.faulty = True
        backup = self.directory / "backup-0.db"
        self.server.back_up(backup)
        self.backups.append(backup)
        for _ in range(self.config.steps):
            await self.step()
        return await self.heal_and_check()

    async def step(self) -> None:
        rng = self.rng
        self.now += timedelta(seconds=rng.randint(1, 120))
        window = rng.choice(self.windows)
        roll = rng.random()
        if roll < 0.55:
            await self.clerk_acts(window)
        elif roll < 0.82:
            await self.sync(window)
        elif roll < 0.87:
            assert window.link is not None
            window.link.cut = not window.link.cut
            if window.link.cut:
                self.faults["link cut"] += 1
                hours = rng.choice((0.1, 1, 8, 72))
                self.log(f"{window.name}: link cut (for up to {hours} h)")
            else:
                self.log(f"{window.name}: link back")
        elif roll < 0.89:
            hours = rng.choice((1, 8, 24, 72))
            self.faults[f"{hours} h pass"] += 1
            self.now += timedelta(hours=hours)
            self.log("time passes")
        elif roll < 0.91:
            await self.crash(window)
        elif roll < 0.93:
            self.faults["server restart"] += 1
            self.log("server restarted")
            self.server.restart()
        elif roll < 0.95:
            backup = self.directory / f"backup-{len(self.backups)}.db"
            self.server.back_up(backup)
            self.backups.append(backup)
            self.log(f"server backed up ({backup.name})")
        elif roll < 0.955:
            await self.change_clerk(window)
        elif roll < 0.97:
            backup = rng.choice(self.backups)
            new_epoch = rng.random() < 0.5
            self.faults[f"restore {'with' if new_epoch else 'without'} new epoch"] += 1
            self.log(f"server restored from {backup.name}, new epoch: {new_epoch}")
            epoch = f"sim-{self.seed}-{rng.getrandbits(32):08x}" if new_epoch else None
            self.server.restore(backup, epoch)
        elif self.old_pushes:
            headers, body = rng.choice(self.old_pushes)
            self.faults["old push again"] += 1
            self.log("an old push delivered again")
            request = httpx.Request("POST", "http://central/sync/push", headers=headers)
            await self.server.call(request, body)

    async def heal_and_check(self) -> list[Violation]:
        for window in self.windows:
            assert window.link is not None
            window.link.cut, window.link.faulty = False, False
            if not window.logged_in:
                await self.login(window)
        self.log("healed")
        # rounds until one in which no window pushed, pulled or loaded anything
        # (a window still waiting for its ops after that is stuck: see check)
        for _round in range(HEAL_ROUNDS):
            changed = [await self.sync(window) for window in self.windows]
            if not any(changed):
                break
        return self.check()

    # -- the invariants -------------------------------------------------------------

    def check(self) -> list[Violation]:
        found: list[Violation] = []
        server = self.server
        with server.engine.connect() as conn:
            answers = {
                r.op_id: (r.status, r.code, r.device_id)
                for r in conn.execute(
                    select(ops.c.op_id, ops.c.status, ops.c.code, ops.c.device_id)
                )
            }
            money = list(conn.execute(select(transfers)))
            rows = _server_rows(conn)
        # 0 lost, none stuck: every op a clerk was told was done is answered,
        # and every refusal is in that window's Sync issues
        for window in self.windows:
            store = window.store
            for op_id in window.told:
                entry = store.conn.execute(
                    "SELECT state FROM outbox WHERE op_id = ?", (op_id,)
                ).fetchone()
                if entry is None:
                    found.append(Violation("op lost from the outbox", f"{window.name} {op_id}"))
                    continue
                if op_id not in answers:
                    found.append(
                        Violation(
                            "op never reached the server", f"{window.name} {op_id} {entry[0]}"
                        )
                    )
                    continue
                status, code, _ = answers[op_id]
                if status in ("rejected", "needs_review"):
                    issue = store.conn.execute(
                        "SELECT 1 FROM sync_issues WHERE op_id = ?", (op_id,)
                    ).fetchone()
                    if issue is None:
                        found.append(
                            Violation("a refusal no clerk sees", f"{window.name} {op_id} {code}")
                        )
                    if code in ("signature_invalid", "op_unsigned"):
                        # every op is made by the clerk logged in at its window
                        found.append(Violation("a clerk's own work refused", f"{op_id} {code}"))
                    if code in NUMBER_REFUSALS:
                        # a card or receipt number from this window's leased block
                        # that the server holds to be another's, or used already
                        found.append(Violation("a leased number refused", f"{op_id} {code}"))
            pending = store.outbox_stats().pending
            if pending:
                found.append(
                    Violation("workstation stuck", f"{window.name}: {pending} ops pending")
                )
            replica = _replica_rows(store)
            if replica != rows:
                found.append(
                    Violation(
                        "replica differs from the server", f"{window.name}: {_diff(replica, rows)}"
                    )
                )
        # the money: every transfer from an applied op, each op's money once,
        # no deposit below zero
        by_op: dict[str, int] = {}
        receipts: set[str] = set()
        balances: dict[str, int] = {}
        for t in money:
            by_op[t.op_id] = by_op.get(t.op_id, 0) + 1
            if answers.get(t.op_id, ("", None, None))[0] not in ("applied", "applied_modified"):
                found.append(Violation("money from an op not applied", t.op_id))
            if t.receipt_no is not None:
                if t.receipt_no in receipts:
                    found.append(Violation("a receipt number used twice", t.receipt_no))
                receipts.add(t.receipt_no)
            if t.amount_fen <= 0:
                found.append(Violation("a transfer of no money", t.transfer_id))
            balances[t.credit_account] = balances.get(t.credit_account, 0) + t.amount_fen
            balances[t.debit_account] = balances.get(t.debit_account, 0) - t.amount_fen
        twice = [op for op, n in by_op.items() if n > 1]
        if twice:
            found.append(Violation("money applied twice", ", ".join(twice)))
        if sum(balances.values()) != 0:
            found.append(Violation("ledger out of balance", str(sum(balances.values()))))
        for account, balance in balances.items():
            if account.startswith("deposit:") and balance < 0:
                found.append(Violation("a deposit below zero", f"{account} {balance}"))
        return found

    def close(self) -> None:
        for window in self.windows:
            if window.parts is not None:
                window.parts.store.close()
        if self._server is not None:
            self._server.close()


def _diff(replica: dict[str, list[dict[str, Any]]], server: dict[str, list[dict[str, Any]]]) -> str:
    """The first few rows that differ, by table and key."""
    out = []
    for row_type in ROW_TYPES:
        ours = {r[row_type.key]: r for r in replica.get(row_type.table, [])}
        theirs = {r[row_type.key]: r for r in server.get(row_type.table, [])}
        for key in sorted(set(ours) | set(theirs)):
            a, b = ours.get(key), theirs.get(key)
            if a != b:
                if a is not None and b is not None:
                    cols = {c: (a[c], b[c]) for c in a if a[c] != b.get(c)}
                    out.append(f"{row_type.table} {key}: {cols} (replica, server)")
                else:
                    out.append(
                        f"{row_type.table} {key}: only on the {'replica' if b is None else 'server'}"
                    )
    return "; ".join(out[:4])


def _replica_rows(store: LocalStore) -> dict[str, list[dict[str, Any]]]:
    result = {}
    for row_type in ROW_TYPES:
        cols = list(row_type.model_fields)
        got = store.conn.execute(
            f"SELECT {', '.join(cols)} FROM {row_type.table} ORDER BY {row_type.key}"
        ).fetchall()
        result[row_type.table] = [dict(zip(cols, r, strict=True)) for r in got]
    return result


def _server_rows(conn: Any) -> dict[str, list[dict[str, Any]]]:
    result = {}
    for row_type in ROW_TYPES:
        table = REPLICATED[row_type.table]
        got = conn.execute(select(table).order_by(table.c[row_type.key])).mappings()
        result[row_type.table] = [dict(r) for r in got]
    return result


_TEMPLATES: dict[int, Path] = {}


async def _template(workstations: int) -> Path:
    """The enrolled hospital every seed starts from, made once per process."""
    if workstations not in _TEMPLATES:
        scratch = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
        directory = Path(tempfile.mkdtemp(prefix="sim-template-", dir=scratch))
        world = World(0, directory, Config(workstations=workstations))
        with seeded_ids(random.Random(0)):
            await world.enroll()
        world.close()
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        _TEMPLATES[workstations] = directory
    return _TEMPLATES[workstations]


@dataclass
class Outcome:
    seed: int
    violations: list[str]
    trace: list[str]
    ops: int
    faults: Counter[str]


def run_seed(seed: int, config: Config | None = None, keep: Path | None = None) -> Outcome:
    """One seeded run, in a directory of its own (kept at ``keep`` if given)."""
    config = config or Config()
    # the story is the trace; the engine's warnings would repeat it
    was_disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    # in memory where the machine has it: fsyncs cost nothing there, and the
    # simulation's crashes are of the process, not of the disk
    scratch = keep or (Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    directory = Path(tempfile.mkdtemp(prefix=f"sim-{seed}-", dir=scratch))
    rng_ids = random.Random(seed ^ 0x5EED)
    try:
        with seeded_ids(rng_ids), cheap_passwords(), small_number_blocks():
            world = World(seed, directory, config)
            try:
                violations = [str(v) for v in asyncio.run(world.run())]
            except Exception:  # a seed that breaks the simulation fails, with its story
                violations = ["the run broke: " + traceback.format_exc(limit=-4)]
            finally:
                told = sum(len(w.told) for w in world.windows)
                world.close()
        return Outcome(seed, violations, world.trace, told, world.faults)
    finally:
        logging.disable(was_disabled)
        if keep is None:
            shutil.rmtree(directory, ignore_errors=True)
