"""The workstation's local store: the replica, the outbox and the rebase.

One SQLite file in WAL mode with ``synchronous=FULL``; one connection used by
one writer at a time (a lock), from whichever thread holds it.

The view a clerk sees is the confirmed server state with the still-pending
operations replayed on top. Rows written by a pending operation are marked
with its op id and their before-images are kept in ``pending_effects``. When
rows are pulled, every pending effect is undone, the pulled rows applied and
the still-pending operations decided again in order (the rebase). A replay the
rules now reject leaves the view at once and lands in Sync issues.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from ulid import ULID

from domain.areas import ROW_TYPES
from domain.cards import CardRow
from domain.commands import Command, Decision, decide
from domain.errors import DomainError, Rejection
from domain.hlc import HybridClock
from domain.json_text import to_json
from domain.leases import NUMBER_BLOCK, Lease
from domain.ledger import TransferRow, balance, deposit_account
from domain.numbers import SERIES_NAMES, Series, number_for
from domain.operation import Operation
from domain.patients import PatientRow, get_patient
from domain.rows import Row, columns_of
from domain.shifts import open_shift_of
from domain.signing import SigningKey
from domain.state import Actor, OpContext, Policy

from .files import private_database
from .image import IMAGE_KEYS, SCHEMA_ID, fsync_directory, image_info
from .keys import SealedKey
from .readers import Readers
from .replica_state import ReplicaState
from .schema import SEARCH_TRIGGERS, migrate, register_functions
from .search import PatientHit, patients_by_id, search_patients

Clock = Callable[[], datetime]
log = logging.getLogger(__name__)

# outbox states
PENDING = "pending"  # not yet answered by the server
ACKED = "acked"  # applied by the server; its rows not yet pulled
CONFIRMED = "confirmed"  # applied and pulled: part of confirmed state
REJECTED = "rejected"  # refused by the server; in Sync issues
REVIEW = "review"  # held by the server for a supervisor; in Sync issues
IN_VIEW = (PENDING, ACKED)  # replayed on top of confirmed state


class _DryRun(Exception):
    """Rolls back a transaction that only looked."""


class CommandRejected(Exception):
    """The rules said no; nothing was written."""

    def __init__(self, rejection: Rejection) -> None:
        self.rejection = rejection
        super().__init__(rejection.message("en"))


@dataclass(frozen=True)
class Executed:
    """A clerk's action, committed locally together with its outbox entry."""

    op: Operation
    command: Command
    decision: Decision

    @property
    def op_id(self) -> str:
        return self.op.op_id

    @property
    def client_seq(self) -> int:
        return self.op.client_seq

    @property
    def at(self) -> str:
        return self.op.at


@dataclass(frozen=True)
class OutboxEntry:
    """An operation in the outbox, with what only this workstation knows of it."""

    op: Operation
    clerk_roles: frozenset[str]  # the clerk's roles when they acted: the replay runs with them
    state: str
    local_outcome: str
    attempts: int


@dataclass(frozen=True)
class CardLine:
    card_no: str
    status: str
    issued_at: str
    pending: bool


@dataclass(frozen=True)
class TransferLine:
    transfer_id: str
    kind: str
    amount_fen: int
    method: str
    receipt_no: str | None
    at: str
    card_no: str | None
    pending: bool


@dataclass(frozen=True)
class PatientView:
    patient: PatientRow
    pending: bool  # registered offline, not yet confirmed by the server
    cards: list[CardLine]
    transfers: list[TransferLine]
    balance_fen: int  # what the clerk sees: confirmed + pending
    confirmed_balance_fen: int  # what the server has confirmed

    @property
    def active_card(self) -> CardLine | None:
        return next((c for c in self.cards if c.status == "active"), None)


@dataclass(frozen=True)
class RowsChanged:
    """What one commit changed: replicated rows by table and key, and the
    patients they belong to; ``everything`` after a bootstrap."""

    rows: dict[str, frozenset[str]]
    patients: frozenset[str]
    everything: bool = False

    def merged(self, other: RowsChanged) -> RowsChanged:
        rows = dict(self.rows)
        for table, keys in other.rows.items():
            rows[table] = rows.get(table, frozenset()) | keys
        return RowsChanged(
            rows=rows,
            patients=self.patients | other.patients,
            everything=self.everything or other.everything,
        )

    def touches(self, table: str) -> bool:
        return self.everything or table in self.rows


@dataclass
class _Changes:
    """Gathered during a transaction, published after its commit."""

    rows: dict[str, set[str]] = field(default_factory=dict)
    patients: set[str] = field(default_factory=set)
    everything: bool = False
    figures: bool = False  # the outbox or Sync issues changed: count again
    new_ops: list[str] = field(default_factory=list)  # times of ops added (counted on)


@dataclass(frozen=True)
class OutboxStats:
    pending: int  # not yet confirmed by the server
    oldest_at: str | None  # when the oldest unconfirmed op was made
    open_issues: int


@dataclass(frozen=True)
class ServerResult:
    op_id: str
    status: str  # applied | applied_modified | rejected | needs_review | deferred
    code: str | None = None
    params: dict[str, Any] | None = None
    server_seq: int | None = None
    result: dict[str, Any] | None = None


WAL_SIZE_LIMIT = 64 * 1024 * 1024
# the next number of the oldest block that has one left
_NEXT_NUMBER = (
    "SELECT lease_id, next FROM leases WHERE kind = ? AND resource = ? AND next <= last "
    "AND returned_at IS NULL ORDER BY first LIMIT 1"
)

# The workstation's own tables, kept when the replicated ones are replaced by an
# image. Not pending_effects: they describe the old replica's rows; the replay
# makes them again.
LOCAL_TABLES = ("outbox", "leases", "sync_issues", "clerk_cache", "clerk_keys")


@contextmanager
def _atomic(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (nested: a savepoint); everything inside commits
    or nothing does (as sqlite-utils' ``Database.atomic``)."""
    if conn.in_transaction:
        conn.execute("SAVEPOINT nested")
        try:
            yield
        except BaseException:
            if conn.in_transaction:  # an error may have ended the transaction already
                conn.execute("ROLLBACK TO SAVEPOINT nested")
                conn.execute("RELEASE SAVEPOINT nested")
            raise
        conn.execute("RELEASE SAVEPOINT nested")
        return
    # IMMEDIATE: the write lock is taken here, where a busy lock is waited
    # for (busy_timeout). A deferred BEGIN would take it at the first write,
    # after the rule's reads, and SQLite fails such an upgrade at once
    # ("database is locked") while another connection holds the lock: the
    # engine's TRUNCATE checkpoint after a bootstrap, as a clerk commits.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise


def new_op_id() -> str:
    """An operation's id, made at the workstation: a ULID."""
    return str(ULID())


def local_now() -> datetime:
    return datetime.now().astimezone()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _TableSql:
    """Prepared statements for one replicated table."""

    def __init__(self, row_type: type[Row]) -> None:
        self.row_type = row_type
        self.columns = [name for name, _ in columns_of(row_type)]
        all_cols = [*self.columns, "pending_op"]
        placeholders = ", ".join("?" for _ in all_cols)
        updates = ", ".join(f"{c} = excluded.{c}" for c in all_cols if c != row_type.key)
        self.upsert = (
            f"INSERT INTO {row_type.table} ({', '.join(all_cols)}) VALUES ({placeholders}) "
            f"ON CONFLICT({row_type.key}) DO UPDATE SET {updates}"
        )
        self.insert = (
            f"INSERT INTO {row_type.table} ({', '.join(all_cols)}) VALUES ({placeholders})"
        )
        self.select = f"SELECT {', '.join(all_cols)} FROM {row_type.table} WHERE {row_type.key} = ?"
        self.delete = f"DELETE FROM {row_type.table} WHERE {row_type.key} = ?"
        self.all_cols = all_cols

    def values(self, row: dict[str, Any], pending_op: str | None) -> tuple[Any, ...]:
        return (*(row.get(c) for c in self.columns), pending_op)


class LocalStore:
    conn: sqlite3.Connection
    state: ReplicaState

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock = local_now,
        hlc: HybridClock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = str(path)
        self.lock = threading.RLock()
        self.clock = clock
        self.hlc = hlc or HybridClock()
        self.monotonic = monotonic
        self._tables = {rt.table: _TableSql(rt) for rt in ROW_TYPES}
        self._policy: Policy | None = None
        self._fail_before_outbox: Callable[[], None] | None = None  # tests inject faults here
        self._rebase_due = False  # an op left the view since the last rebase
        self._device_id = ""
        # the signing keys of the clerks logged in here, unsealed at login
        # (domain.signing): each op is signed with its clerk's at commit
        self._signers: dict[str, tuple[SigningKey, str | None]] = {}  # key, certificate
        self._checkpointer: sqlite3.Connection | None = None
        # Guards the checkpointer, which the engine uses without the store's lock.
        self._checkpoint_lock = threading.Lock()
        self._readers = Readers(self._open_reader)
        self._writer: int | None = None  # the thread inside a transaction
        self._depth = 0
        self._changes = _Changes()
        self._listeners: list[Callable[[RowsChanged], None]] = []
        self._figures = OutboxStats(pending=0, oldest_at=None, open_issues=0)
        with self.lock:
            self._open()
            self._figures = self._count_figures()

    def _open(self) -> None:
        """Connect to the replica file and bring its schema up to date. Everything
        that reads through the connection (ReplicaState) is made here too, so a
        new connection (after install_image) reaches all of it."""
        if self.path != ":memory:":
            private_database(self.path)  # patients' data, clerks' password hashes
        self.conn = sqlite3.connect(self.path, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        if self.path != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.conn.execute("PRAGMA cache_size=-65536")
        # Checkpoints run from the sync engine's thread (checkpoint()), never inside
        # a clerk's commit, where they would add milliseconds to the wait.
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self.conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        register_functions(self.conn)
        migrate(self.conn)
        self.state = ReplicaState(self.conn, self.policy)

    def _open_reader(self) -> sqlite3.Connection:
        """A read-only connection for the screens (see local_db.readers)."""
        conn = sqlite3.connect(
            Path(self.path).resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=5000")
        # a small page cache each: the screens read a few pages a query, and
        # the pages they share stay in the operating system's cache
        conn.execute("PRAGMA cache_size=-8192")
        register_functions(conn)
        return conn

    def close(self) -> None:
        with self.lock, self._readers.swap.exclusive():
            self._readers.close_idle()
            self.conn.close()
        self._close_checkpointer()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection to read the last committed state without waiting for
        the writer. Inside a transaction (the same thread), the writer's own
        connection, which sees that transaction's writes."""
        if self.path == ":memory:" or self._writer == threading.get_ident():
            with self.lock:
                yield self.conn
            return
        with self._readers.connection() as conn:
            yield conn

    def _read_state(self, conn: sqlite3.Connection) -> ReplicaState:
        return self.state if conn is self.conn else ReplicaState(conn, self.policy)

    # -- what changed, for the screens --------------------------------------------

    def subscribe(self, listener: Callable[[RowsChanged], None]) -> None:
        """Called after every commit that changed rows or the status figures,
        from the committing thread; keep it quick (post a message)."""
        self._listeners.append(listener)

    def outbox_stats(self) -> OutboxStats:
        """Pending operations, the oldest's time and open Sync issues: kept in
        memory, updated as each commit changes them, so the status bar never
        reads the store."""
        return self._figures

    def _count_figures(self) -> OutboxStats:
        pending, oldest = self.conn.execute(
            "SELECT COUNT(*), MIN(at) FROM outbox WHERE state IN (?, ?)", IN_VIEW
        ).fetchone()
        issues = self.conn.execute(
            "SELECT COUNT(*) FROM sync_issues WHERE status = 'open'"
        ).fetchone()[0]
        return OutboxStats(pending=int(pending), oldest_at=oldest, open_issues=int(issues))

    def _changed(self, table: str, key: str, row: dict[str, Any] | None = None) -> None:
        self._changes.rows.setdefault(table, set()).add(key)
        patient = (row or {}).get("patient_id") if table != "patients" else key
        if patient:
            self._changes.patients.add(str(patient))

    def _close_checkpointer(self) -> None:
        with self._checkpoint_lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None

    def checkpoint(self, truncate: bool = False) -> None:
        """Copy the write-ahead log into the database file, from a second
        connection so the clerk's writes go on meanwhile (PASSIVE); TRUNCATE
        (after a bootstrap) also shrinks the log file, waiting for writers."""
        if self.path == ":memory:":
            return
        with self._checkpoint_lock:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
                self._checkpointer.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            mode = "TRUNCATE" if truncate else "PASSIVE"
            self._checkpointer.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One writer at a time; everything inside commits or nothing does.
        After the outermost commit, the status figures are brought up to
        date and the listeners told what changed."""
        with self.lock:
            outermost = self._depth == 0
            self._depth += 1
            self._writer = threading.get_ident()
            try:
                with _atomic(self.conn):
                    yield self.conn
            except BaseException:
                if outermost:
                    self._changes = _Changes()
                raise
            finally:
                self._depth -= 1
                if outermost:
                    self._writer = None
            if outermost:
                self._publish()

    def _publish(self) -> None:
        changes, self._changes = self._changes, _Changes()
        if changes.figures:
            self._figures = self._count_figures()
        elif changes.new_ops:  # a clerk's commit: count on, not again (the outbox may be long)
            figures = self._figures
            oldest = min(filter(None, (figures.oldest_at, *changes.new_ops)))
            self._figures = replace(
                figures, pending=figures.pending + len(changes.new_ops), oldest_at=oldest
            )
        if not (changes.rows or changes.everything or changes.figures or changes.new_ops):
            return
        notice = RowsChanged(
            rows={table: frozenset(keys) for table, keys in changes.rows.items()},
            patients=frozenset(changes.patients),
            everything=changes.everything,
        )
        for listener in list(self._listeners):
            try:
                listener(notice)
            except Exception:
                log.exception("rows-changed listener failed")

    # -- sync state ---------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self.read() as conn:
            row = conn.execute("SELECT value FROM sync_state WHERE key = ?", (key,)).fetchone()
        return row[0] if row is not None else default

    def set_meta(self, key: str, value: str | None) -> None:
        with self.transaction():
            self._set_meta(key, value)

    def _set_meta(self, key: str, value: str | None) -> None:
        if key == "device_id":
            self._device_id = value or ""
        self.conn.execute(
            "INSERT INTO sync_state (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def policy(self) -> Policy:
        if self._policy is None:
            raw = self.get_meta("policy")
            self._policy = Policy.from_dict(json.loads(raw)) if raw else Policy()
        return self._policy

    def set_policy(self, policy: Policy) -> None:
        self._policy = policy  # in force at once; kept for the next start
        self.set_meta("policy", json.dumps(policy.as_dict()))

    # -- leases: number blocks ---------------------------------------------

    def add_lease(self, lease: Lease) -> None:
        """Keep a lease the server granted to this workstation."""
        with self.transaction():
            self._changed("leases", lease.lease_id)
            self.conn.execute(
                "INSERT OR IGNORE INTO leases (lease_id, kind, resource, device_id, granted_at, "
                "first, last, ids, quantity, expires_at, returned_at, next) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    lease.lease_id,
                    lease.kind,
                    lease.resource,
                    lease.device_id,
                    lease.granted_at,
                    lease.first,
                    lease.last,
                    json.dumps(sorted(lease.ids)) if lease.ids is not None else None,
                    lease.quantity,
                    lease.expires_at,
                    lease.returned_at,
                    lease.first,
                ),
            )

    def number_blocks_held(self) -> list[Lease]:
        """This workstation's number blocks, to tell the server again after it
        was restored from a backup (it may have forgotten some)."""
        with self.read() as conn:
            rows = conn.execute(
                "SELECT lease_id, kind, resource, device_id, granted_at, first, last "
                "FROM leases WHERE kind = ? AND device_id = ? AND returned_at IS NULL "
                "ORDER BY granted_at, lease_id",
                (NUMBER_BLOCK, self.device_id),
            ).fetchall()
        return [
            Lease(
                lease_id=r[0],
                kind=r[1],
                resource=r[2],
                device_id=r[3],
                granted_at=r[4],
                first=r[5],
                last=r[6],
            )
            for r in rows
        ]

    def answered_through(self) -> int:
        """The last of this workstation's ops the server answered (applied,
        refused or held): a server that knows fewer of them lost some (it was
        restored from a backup), whether or not their rows were pulled yet."""
        with self.read() as conn:
            row = conn.execute(
                "SELECT MAX(client_seq) FROM outbox WHERE state IN (?, ?, ?, ?) AND withdrawn = 0",
                (ACKED, CONFIRMED, REJECTED, REVIEW),
            ).fetchone()
        confirmed = int(self.get_meta("device_last_seq", "0") or 0)
        return max(int(row[0] or 0), confirmed)

    def newest_lease(self) -> str | None:
        """The id of the last lease the server granted this workstation: a
        server that does not know it was restored from a backup."""
        with self.read() as conn:
            row = conn.execute(
                "SELECT lease_id FROM leases WHERE device_id = ? AND returned_at IS NULL "
                "ORDER BY granted_at DESC, lease_id DESC LIMIT 1",
                (self.device_id,),
            ).fetchone()
        return row[0] if row is not None else None

    def stop_using(self, lease_ids: list[str]) -> None:
        """Blocks the server holds to be another's (granted again after a
        restore): no number of them is handed out from now on."""
        now = self.clock().isoformat(timespec="seconds")
        with self.transaction():
            for lease_id in lease_ids:
                self.conn.execute(
                    "UPDATE leases SET next = last + 1, returned_at = ? WHERE lease_id = ?",
                    (now, lease_id),
                )
                self._changed("leases", lease_id)

    # -- number blocks: leases of kind number_block ------------------------------

    def numbers_left(self, series: Series) -> int:
        with self.read() as conn:
            row = conn.execute(
                "SELECT COALESCE(SUM(last - next + 1), 0) FROM leases "
                "WHERE kind = ? AND resource = ? AND next <= last AND returned_at IS NULL",
                (NUMBER_BLOCK, series.value),
            ).fetchone()
        return int(row[0])

    def peek_number(self, series: Series) -> str | None:
        with self.read() as conn:
            row = conn.execute(_NEXT_NUMBER, (NUMBER_BLOCK, series.value)).fetchone()
        return number_for(series, int(row[1])) if row is not None else None

    def take_number(self, series: Series) -> str:
        """The next unused number of a leased block. Call inside the command's
        transaction, so a rejected command gives the number back."""
        row = self.conn.execute(_NEXT_NUMBER, (NUMBER_BLOCK, series.value)).fetchone()
        if row is None:
            zh, en = SERIES_NAMES[series]
            raise DomainError("numbers_exhausted", series_zh=zh, series_en=en)
        self.conn.execute("UPDATE leases SET next = next + 1 WHERE lease_id = ?", (row[0],))
        self._changed("leases", row[0])
        return number_for(series, int(row[1]))

    # -- the clerk's commands ----------------------------------------------

    def execute(
        self, actor: Actor, build: Callable[[LocalStore], Command], op_id: str | None = None
    ) -> Executed:
        """Decide a command against the replica and commit its rows with its
        outbox entry in one transaction. Raises CommandRejected (nothing
        written) or DomainError from ``build`` (nothing written)."""
        op_id = op_id or new_op_id()
        with self.transaction():
            command = build(self)
            at = self.clock().isoformat(timespec="seconds")
            ctx = OpContext(actor=actor, at=at, op_id=op_id)
            outcome = decide(self.state, command, ctx)
            if isinstance(outcome, Rejection):
                raise CommandRejected(outcome)
            self._write_rows(op_id, outcome.rows)
            if self._fail_before_outbox is not None:
                self._fail_before_outbox()
            op = self._append_outbox(command, ctx, outcome)
            self._changes.new_ops.append(op.at)
        return Executed(op=op, command=command, decision=outcome)

    def check(self, actor: Actor, build: Callable[[LocalStore], Command]) -> None:
        """Decide a command against the replica as :meth:`execute` would, and
        write nothing (numbers taken by ``build`` are given back). Raises
        CommandRejected or DomainError from ``build``; returns if it would be
        accepted."""
        try:
            with self.transaction():
                command = build(self)
                at = self.clock().isoformat(timespec="seconds")
                outcome = decide(self.state, command, OpContext(actor=actor, at=at, op_id="check"))
                if isinstance(outcome, Rejection):
                    raise CommandRejected(outcome)
                raise _DryRun
        except _DryRun:
            return

    def _append_outbox(self, command: Command, ctx: OpContext, outcome: Decision) -> Operation:
        # the next of this device's gap-free sequence: we hold the write lock
        last = self.conn.execute("SELECT COALESCE(MAX(client_seq), 0) FROM outbox").fetchone()[0]
        op = Operation.of(
            command,
            op_id=ctx.op_id,
            device_id=ctx.actor.device_id,
            client_seq=int(last) + 1,
            clerk_id=ctx.actor.clerk_id,
            at=ctx.at,
            hlc=self.hlc.now(),
        )
        signer = self._signers.get(ctx.actor.clerk_id)
        if signer is not None:
            op = op.signed_by(signer[0], ctx.actor.device_id, signer[1])
        self.conn.execute(
            "INSERT INTO outbox (client_seq, op_id, kind, payload, args_hash, clerk_id, clerk_roles, "
            "at, hlc, created_mono, state, local_outcome, local_result, key_id, signature, "
            "key_cert) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                op.client_seq,
                op.op_id,
                op.kind,
                op.payload,
                op.args_hash,
                op.clerk_id,
                json.dumps(sorted(ctx.actor.roles)),
                op.at,
                op.hlc,
                self.monotonic(),
                PENDING,
                outcome.outcome,
                to_json(outcome.result),
                op.key_id,
                op.signature,
                op.key_cert,
            ),
        )
        return op

    def _write_rows(self, op_id: str, rows: Iterable[Row]) -> None:
        """Write a pending op's rows, keeping each row's before-image."""
        for row in rows:
            sql = self._tables[row.table]
            key = row.key_value
            before = self.conn.execute(sql.select, (key,)).fetchone()
            self.conn.execute(
                "INSERT INTO pending_effects (op_id, tbl, row_key, before) VALUES (?, ?, ?, ?)",
                (
                    op_id,
                    row.table,
                    key,
                    to_json(dict(before)) if before else None,
                ),
            )
            values = row.model_dump()
            self.conn.execute(sql.upsert, sql.values(values, op_id))
            self._changed(row.table, key, values)

    # -- the rebase ---------------------------------------------------------

    def _undo_pending(self) -> None:
        effects = self.conn.execute(
            "SELECT tbl, row_key, before FROM pending_effects ORDER BY seq DESC"
        ).fetchall()
        for tbl, key, before in effects:
            sql = self._tables[tbl]
            if before is None:
                gone = self.conn.execute(sql.select, (key,)).fetchone()
                self.conn.execute(sql.delete, (key,))
                self._changed(tbl, key, dict(gone) if gone is not None else None)
            else:
                old = json.loads(before)
                self.conn.execute(sql.upsert, sql.values(old, old.get("pending_op")))
                self._changed(tbl, key, old)
        if effects:
            self.conn.execute("DELETE FROM pending_effects")

    def _replay(self) -> None:
        """Decide every still-pending op again, in order, against the new state,
        as the clerk who made it (with the roles they had then)."""
        device_id = self.device_id
        for entry in self._ops_in_view():
            op = entry.op
            actor = Actor(clerk_id=op.clerk_id, roles=entry.clerk_roles, device_id=device_id)
            try:
                command = op.command()
            except DomainError as exc:  # a kind this version no longer knows
                outcome: Decision | Rejection = exc.rejection
            else:
                outcome = decide(
                    self.state, command, OpContext(actor=actor, at=op.at, op_id=op.op_id)
                )
            if isinstance(outcome, Rejection):
                self._open_issue(op.op_id, "replay_conflict", outcome.code, outcome.params, entry)
                continue
            self._write_rows(op.op_id, outcome.rows)
            self._resolve_issue_if(op.op_id, "replay_conflict", "server_state_allows")

    def _ops_in_view(self) -> list[OutboxEntry]:
        # a withdrawn op waits to be recorded as refused: it has no effects
        rows = self.conn.execute(
            "SELECT * FROM outbox WHERE state IN (?, ?) AND withdrawn = 0 ORDER BY client_seq",
            IN_VIEW,
        ).fetchall()
        return self._entries(rows)

    def rebase(self) -> None:
        """Undo pending effects and replay what is still pending (after a rejection)."""
        with self.transaction():
            self._undo_pending()
            self._replay()

    @property
    def device_id(self) -> str:
        if not self._device_id:  # set once, at enrolment
            self._device_id = self.get_meta("device_id") or ""
        return self._device_id

    # -- pull ----------------------------------------------------------------

    def apply_pull(
        self,
        changes: Iterable[tuple[str, dict[str, Any] | None, str]],
        *,
        next_cursor: int,
        epoch: str,
        device_last_seq: int,
        mark: str | None = None,
    ) -> int:
        """Apply pulled rows ``(table, row or None for a deletion, key)``, advance
        the cursor and rebase, in one transaction. ``mark`` is the fingerprint of
        the change at the new cursor (sent with the next pull, so that a server
        restored behind this replica is noticed). Returns rows applied."""
        changes = list(changes)
        if (
            not changes
            and not self._rebase_due
            and self.get_meta("cursor") == str(next_cursor)
            and self.get_meta("device_last_seq") == str(device_last_seq)
            and self.get_meta("epoch") == epoch
            and (mark is None or self.get_meta("cursor_mark") == mark)
        ):
            return 0  # nothing new: no write, no fsync
        count = 0
        with self.transaction():
            self._rebase_due = False
            self._undo_pending()
            for table, row, key in changes:
                sql = self._tables.get(table)
                if sql is None:
                    continue  # a table this version does not know: skip, never fail the pull
                if row is None:
                    gone = self.conn.execute(sql.select, (key,)).fetchone()
                    self.conn.execute(sql.delete, (key,))
                    self._changed(table, key, dict(gone) if gone is not None else None)
                else:
                    self.conn.execute(sql.upsert, sql.values(row, None))
                    self._changed(table, key, row)
                count += 1
            if mark is not None or self.get_meta("cursor") != str(next_cursor):
                self._set_meta("cursor_mark", mark)  # None: the server gave none
            self._set_meta("cursor", str(next_cursor))
            self._set_meta("epoch", epoch)
            self._confirm_through(device_last_seq)
            self._replay()
        return count

    def _confirm_through(self, device_last_seq: int) -> None:
        self._changes.figures = True
        self._set_meta("device_last_seq", str(device_last_seq))
        self.conn.execute(
            "UPDATE outbox SET state = ? WHERE client_seq <= ? AND state IN (?, ?)",
            (CONFIRMED, device_last_seq, PENDING, ACKED),
        )

    # -- bootstrap -----------------------------------------------------------

    def load_snapshot(
        self,
        batches: Iterable[tuple[str, list[dict[str, Any]]]],
        *,
        cursor: int,
        epoch: str,
        device_last_seq: int,
    ) -> int:
        """Replace the replicated tables with a server snapshot of rows, keeping
        the outbox (see _adopt_snapshot)."""
        total = 0
        with self.transaction():
            self._changes.everything = True
            self.conn.execute("DELETE FROM pending_effects")
            self.conn.execute("DROP TRIGGER IF EXISTS patients_search_insert")
            self.conn.execute("DROP TRIGGER IF EXISTS patients_search_delete")
            self.conn.execute("DROP TRIGGER IF EXISTS patients_search_update")
            self.conn.execute("DELETE FROM patient_search")
            for row_type in ROW_TYPES:
                self.conn.execute(f"DELETE FROM {row_type.table}")
            for table, rows in batches:
                sql = self._tables.get(table)
                if sql is None:
                    continue
                cols = sql.columns
                self.conn.executemany(sql.upsert, ([*(r.get(c) for c in cols), None] for r in rows))
                total += len(rows)
            self.conn.execute(
                "INSERT INTO patient_search (rowid, terms) SELECT rowid, name_terms(name) FROM patients"
            )
            for statement in SEARCH_TRIGGERS:
                self.conn.execute(statement)
            self._adopt_snapshot(cursor=cursor, epoch=epoch, device_last_seq=device_last_seq)
        return total

    def _adopt_snapshot(self, *, cursor: int, epoch: str, device_last_seq: int) -> None:
        """The replicated tables now hold the server's state at ``cursor``: put
        the outbox on top of it. Ops the server does not have (it may have been
        restored from a backup) go back to pending and will be pushed again."""
        self._set_meta("cursor", str(cursor))
        self._set_meta("cursor_mark", None)  # the change at the cursor is not known
        self._set_meta("epoch", epoch)
        self._set_meta("bootstrapped_at", self.clock().isoformat(timespec="seconds"))
        self._resend_from(device_last_seq + 1)
        self._confirm_through(device_last_seq)
        self._replay()

    def _resend_from(self, client_seq: int) -> int:
        """The server knows this device's operations only before ``client_seq``
        (a restore lost the rest): those it had applied go back to pending, to
        be applied again; those it had refused are sent withdrawn, to be
        recorded as refused again and never applied (the clerk was told, and
        may have handed the money back). Returns how many."""
        again = self.conn.execute(
            "UPDATE outbox SET state = ? WHERE client_seq >= ? AND state IN (?, ?)",
            (PENDING, client_seq, ACKED, CONFIRMED),
        ).rowcount
        withdrawn = self.conn.execute(
            "UPDATE outbox SET state = ?, withdrawn = 1 WHERE client_seq >= ? AND state IN (?, ?)",
            (PENDING, client_seq, REJECTED, REVIEW),
        ).rowcount
        if again or withdrawn:
            self._changes.figures = True
            self._rebase_due = True
        return int(again) + int(withdrawn)

    def note_server_restored(self, head: int, cursor: int, server_seq: int) -> None:
        """The server turned out to be behind this replica (restored from a
        backup without a new epoch): a Sync issue says so, so that the clerk
        and IT know the workstation re-bootstrapped and sent again what the
        restore lost."""
        now = self.clock().isoformat(timespec="seconds")
        params = {"head": head, "cursor": cursor, "server_seq": server_seq}
        with self.transaction():
            self._changes.figures = True
            self.conn.execute(
                "INSERT OR IGNORE INTO sync_issues (op_id, kind, status, code, params, summary, "
                "created_at, updated_at) VALUES (?, 'server_restored', 'open', 'server_restored', "
                "?, ?, ?, ?)",
                (f"restore:{head}:{cursor}", to_json(params), to_json({}), now, now),
            )

    def note_stuck(self, expected: int) -> None:
        """The server has waited cycle after cycle for this device's operation
        ``expected``, which this workstation cannot send: a Sync issue on the
        first operation held back, once, so that a clerk sees it and calls IT."""
        with self.transaction():
            row = self.conn.execute(
                "SELECT * FROM outbox WHERE state = ? ORDER BY client_seq LIMIT 1", (PENDING,)
            ).fetchone()
            if row is None:
                return
            entry = self._entries([row])[0]
            known = self.conn.execute(
                "SELECT 1 FROM sync_issues WHERE op_id = ? AND kind = 'stuck' AND status = 'open'",
                (entry.op.op_id,),
            ).fetchone()
            if known is None:
                self._open_issue(
                    entry.op.op_id, "stuck", "sequence_gap", {"expected": expected}, entry
                )

    def heal_gap(self, expected: int) -> int:
        """The server waits for this device's operation ``expected`` (it says
        so with ``deferred sequence_gap``) and this workstation does not mean
        to send it: the server lost it (a restore without a new epoch). Send
        it and what follows again (see _resend_from). Returns how many ops
        were put back; 0 if none could be (the alarm is then the engine's)."""
        with self.transaction():
            return self._resend_from(expected)

    def install_image(
        self, image_path: str | Path, *, cursor: int, epoch: str, device_last_seq: int
    ) -> None:
        """Make a replica image (``local_db.image``, already verified and
        unpacked) this workstation's replica, keeping what is the workstation's
        own: outbox, leases, Sync issues, cached clerks and its sync state. The
        image file is used up.

        The new replica is made complete in the image file first (local tables
        copied in, the outbox put on top and replayed) and only then renamed
        over the replica file, so a crash at any moment leaves the old replica
        or the new one, never a mix. The store's lock is held throughout: no
        clerk command runs in between. The screens' reads go on against the
        old replica until the moment of the swap, which waits for the reads in
        progress and closes every reader."""
        image_path = str(image_path)
        found = image_info(image_path)
        expected = {"cursor": str(cursor), "epoch": epoch, "schema_id": SCHEMA_ID}
        if found != expected:
            raise ValueError(f"replica image is {found}, expected {expected}")
        with self.lock:
            staged = LocalStore(image_path, clock=self.clock, hlc=self.hlc)
            try:
                staged._take_local_tables(self.path)
                with staged.transaction():
                    staged._adopt_snapshot(
                        cursor=cursor, epoch=epoch, device_last_seq=device_last_seq
                    )
            finally:
                staged.close()  # the last connection: its write-ahead log goes into the file
            with self._readers.swap.exclusive():
                self._readers.close_idle()
                self._swap_in(image_path)
            self._rebase_due = False
            self._changes.everything = True
            self._changes.figures = True
            self._publish()

    def _swap_in(self, image_path: str) -> None:
        """Rename the image over the replica file; no other connection is open."""
        # A write-ahead log left beside the replica would be applied to the
        # new file on the next open. Leaving WAL mode folds it into the old
        # file and deletes it; SQLite refuses while another connection is open.
        self._close_checkpointer()
        try:
            left_wal = self.conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
        except sqlite3.OperationalError:  # "database is locked"
            left_wal = False
        if not left_wal:
            raise RuntimeError("the replica is open elsewhere: it cannot be replaced now")
        self.conn.close()
        try:
            os.replace(image_path, self.path)
            fsync_directory(os.path.dirname(os.path.abspath(self.path)))
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path + suffix)
        finally:
            self._open()  # the new replica, or the old one if the rename failed

    def _take_local_tables(self, replica_path: str) -> None:
        """Copy the workstation's own tables from the replica at ``replica_path``
        into this (freshly bootstrapped) one, in one transaction."""
        self.conn.execute("ATTACH DATABASE ? AS old", (replica_path,))
        try:
            with self.transaction():
                for table in LOCAL_TABLES:
                    self.conn.execute(f"INSERT INTO main.{table} SELECT * FROM old.{table}")
                self.conn.execute(
                    "INSERT OR REPLACE INTO main.sync_state SELECT key, value FROM old.sync_state "
                    f"WHERE key NOT IN ({', '.join('?' * len(IMAGE_KEYS))})",
                    IMAGE_KEYS,
                )
        finally:
            self.conn.execute("DETACH DATABASE old")

    # -- push ----------------------------------------------------------------

    def ops_to_push(self, limit: int) -> list[OutboxEntry]:
        with self.read() as conn:
            rows = conn.execute(
                "SELECT * FROM outbox WHERE state = ? ORDER BY client_seq LIMIT ?", (PENDING, limit)
            ).fetchall()
        return self._entries(rows)

    def note_attempt(self, op_ids: list[str]) -> None:
        now = self.clock().isoformat(timespec="seconds")
        with self.transaction():
            self.conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_attempt_at = ? WHERE op_id = ?",
                [(now, op_id) for op_id in op_ids],
            )

    def record_results(self, results: Iterable[ServerResult]) -> bool:
        """Store the server's answers. Returns True if an op left the view
        (rejected or held), so the caller rebases."""
        results = list(results)
        left_view = False
        now = self.clock().isoformat(timespec="seconds")
        with self.transaction():
            self._changes.figures = True
            conflicts = {
                r[0]
                for r in self.conn.execute(
                    "SELECT op_id FROM sync_issues WHERE kind = 'replay_conflict' AND status = 'open'"
                )
            }
            applied: list[tuple[str, int | None, str]] = []
            for res in results:
                flags = (res.result or {}).get("flags") if res.status != "deferred" else None
                if res.status == "applied" and not flags:  # the common case, in one statement below
                    answer = to_json({"status": res.status, "result": res.result})
                    applied.append((answer, res.server_seq, res.op_id))
                    if res.op_id in conflicts:
                        self._resolve_issue_if(res.op_id, "replay_conflict", "server_applied", now)
                    continue
                row = self.conn.execute(
                    "SELECT state, local_outcome, withdrawn FROM outbox WHERE op_id = ?",
                    (res.op_id,),
                ).fetchone()
                if row is None or row[0] not in (PENDING, ACKED):
                    continue
                if row[2] and res.status != "deferred":
                    # recorded as refused again: the first refusal, its answer and its
                    # Sync issue (perhaps handled already) stand as they were
                    self.conn.execute(
                        "UPDATE outbox SET state = ? WHERE op_id = ?", (REJECTED, res.op_id)
                    )
                    continue
                answer = to_json(
                    {
                        "status": res.status,
                        "code": res.code,
                        "params": res.params,
                        "result": res.result,
                    }
                )
                if res.status in ("applied", "applied_modified"):
                    self.conn.execute(
                        "UPDATE outbox SET state = ?, server_result = ?, server_seq = ? WHERE op_id = ?",
                        (ACKED, answer, res.server_seq, res.op_id),
                    )
                    if res.op_id in conflicts:
                        self._resolve_issue_if(res.op_id, "replay_conflict", "server_applied", now)
                    if res.status == "applied_modified" and row[1] == "applied":
                        self._open_issue(
                            res.op_id,
                            "modified",
                            res.code or "modified",
                            res.params or {},
                            self._op(res.op_id),
                        )
                    elif flags and row[0] == PENDING:
                        # booked, but the server found its date wrong (this PC's clock?)
                        flag = flags[0]
                        self._open_issue(
                            res.op_id,
                            "flagged",
                            str(flag.get("code", "flagged")),
                            flag.get("params") or {},
                            self._op(res.op_id),
                        )
                elif res.status in ("rejected", "needs_review"):
                    state = REJECTED if res.status == "rejected" else REVIEW
                    self.conn.execute(
                        "UPDATE outbox SET state = ?, server_result = ? WHERE op_id = ?",
                        (state, answer, res.op_id),
                    )
                    kind = "rejected" if res.status == "rejected" else "needs_review"
                    self._open_issue(
                        res.op_id,
                        kind,
                        res.code or res.status,
                        res.params or {},
                        self._op(res.op_id),
                    )
                    left_view = self._rebase_due = True
                # "deferred": the server wants earlier ops first; stays pending
            self.conn.executemany(
                "UPDATE outbox SET state = ?, server_result = ?, server_seq = ? "
                "WHERE op_id = ? AND state IN (?, ?)",
                [(ACKED, answer, seq, op_id, PENDING, ACKED) for answer, seq, op_id in applied],
            )
            self.conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_attempt_at = ? WHERE op_id = ?",
                [(now, res.op_id) for res in results],
            )
        return left_view

    def _op(self, op_id: str) -> OutboxEntry:
        return self._entries(
            [self.conn.execute("SELECT * FROM outbox WHERE op_id = ?", (op_id,)).fetchone()]
        )[0]

    # -- Sync issues ---------------------------------------------------------

    def _open_issue(
        self, op_id: str, kind: str, code: str, params: dict[str, Any], entry: OutboxEntry
    ) -> None:
        self._changes.figures = True
        op = entry.op
        now = self.clock().isoformat(timespec="seconds")
        summary = to_json(
            {
                "kind": op.kind,
                "payload": json.loads(op.payload),
                "at": op.at,
                "clerk_id": op.clerk_id,
                "client_seq": op.client_seq,
            }
        )
        self.conn.execute(
            "INSERT INTO sync_issues (op_id, kind, status, code, params, summary, created_at, updated_at) "
            "VALUES (?, ?, 'open', ?, ?, ?, ?, ?) ON CONFLICT(op_id) DO UPDATE SET kind = excluded.kind, "
            "status = 'open', code = excluded.code, params = excluded.params, updated_at = excluded.updated_at",
            (op_id, kind, code, to_json(params), summary, now, now),
        )

    def _resolve_issue_if(
        self, op_id: str, kind: str, resolution: str, now: str | None = None
    ) -> None:
        now = now or self.clock().isoformat(timespec="seconds")
        self.conn.execute(
            "UPDATE sync_issues SET status = 'resolved', resolved_by = 'system', resolved_at = ?, "
            "resolution = ?, updated_at = ? WHERE op_id = ? AND kind = ? AND status = 'open'",
            (now, resolution, now, op_id, kind),
        )

    def issues(self, status: str | None = "open", limit: int = 200) -> list[dict[str, Any]]:
        with self.read() as conn:
            if status is None:
                rows = conn.execute(
                    "SELECT * FROM sync_issues ORDER BY issue_id DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM sync_issues WHERE status = ? ORDER BY issue_id LIMIT ?",
                    (status, limit),
                ).fetchall()
        result = []
        for r in rows:
            item = dict(r)
            item["params"] = json.loads(item["params"])
            item["summary"] = json.loads(item["summary"])
            result.append(item)
        return result

    def resolve_issue(self, issue_id: int, clerk_id: str, resolution: str) -> bool:
        now = self.clock().isoformat(timespec="seconds")
        with self.transaction():
            self._changes.figures = True
            cur = self.conn.execute(
                "UPDATE sync_issues SET status = 'resolved', resolved_by = ?, resolved_at = ?, "
                "resolution = ?, updated_at = ? WHERE issue_id = ? AND status = 'open'",
                (clerk_id, now, resolution, now, issue_id),
            )
        return cur.rowcount == 1

    # -- reads for the screens: the last committed state, never waiting -----------

    def search(self, query: str, limit: int = 20) -> list[PatientHit]:
        with self.read() as conn:
            return search_patients(conn, query, limit)

    def hits(self, patient_ids: Iterable[str]) -> dict[str, PatientHit]:
        """The search lines of these patients as they are now (a table of
        results updates the rows whose patients changed)."""
        with self.read() as conn:
            return {hit.patient_id: hit for hit in patients_by_id(conn, list(patient_ids))}

    def card(self, card_no: str) -> CardRow | None:
        """The card as the clerk sees it (pending ops included)."""
        with self.read() as conn:
            return self._read_state(conn).get(CardRow, card_no)

    def patient_by_document(self, doc_type: str, doc_no: str) -> PatientRow | None:
        with self.read() as conn:
            return self._read_state(conn).find(PatientRow, doc_no=doc_no, doc_type=doc_type)

    def patient_view(self, patient_id: str, transfers: int = 10) -> PatientView | None:
        """The patient as the clerk sees them: confirmed state plus pending ops."""
        with self.read() as conn:
            state = self._read_state(conn)
            patient = get_patient(state, patient_id)
            if patient is None:
                return None
            pending = conn.execute(
                "SELECT pending_op FROM patients WHERE patient_id = ?", (patient.patient_id,)
            ).fetchone()[0]
            cards = [
                CardLine(card_no=r[0], status=r[1], issued_at=r[2], pending=r[3] is not None)
                for r in conn.execute(
                    "SELECT card_no, status, issued_at, pending_op FROM cards WHERE patient_id = ? "
                    "ORDER BY issued_at DESC",
                    (patient.patient_id,),
                )
            ]
            recent = [
                TransferLine(
                    transfer_id=r[0],
                    kind=r[1],
                    amount_fen=r[2],
                    method=r[3],
                    receipt_no=r[4],
                    at=r[5],
                    card_no=r[6],
                    pending=r[7] is not None,
                )
                for r in conn.execute(
                    "SELECT transfer_id, kind, amount_fen, method, receipt_no, at, card_no, pending_op "
                    "FROM transfers WHERE patient_id = ? ORDER BY at DESC, transfer_id DESC LIMIT ?",
                    (patient.patient_id, transfers),
                )
            ]
            deposit = balance(state, deposit_account(patient.patient_id))
        return PatientView(
            patient=patient,
            pending=pending is not None,
            cards=cards,
            transfers=recent,
            balance_fen=deposit.fen,
            confirmed_balance_fen=deposit.confirmed_fen,
        )

    def open_shift(self, clerk_id: str, device_id: str) -> str | None:
        """The id of the clerk's open shift on this workstation, if any."""
        with self.read() as conn:
            shift = open_shift_of(self._read_state(conn), clerk_id, device_id)
        return shift.shift_id if shift is not None else None

    def transfer_by_receipt(self, receipt_no: str) -> TransferRow | None:
        with self.read() as conn:
            row = conn.execute(
                f"SELECT {', '.join(self._tables['transfers'].columns)} FROM transfers WHERE receipt_no = ?",
                (receipt_no,),
            ).fetchone()
        return TransferRow.model_validate(dict(row)) if row is not None else None

    def unconfirmed_count(self) -> int:
        with self.read() as conn:
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM outbox WHERE state IN (?, ?)", IN_VIEW
                ).fetchone()[0]
            )

    def op_answer(self, op_id: str) -> tuple[str | None, dict[str, Any] | None]:
        """(outbox state, the server's answer if any) for one op."""
        with self.read() as conn:
            row = conn.execute(
                "SELECT state, server_result FROM outbox WHERE op_id = ?", (op_id,)
            ).fetchone()
        if row is None:
            return None, None
        return row[0], json.loads(row[1]) if row[1] else None

    def is_confirmed(self, op_id: str) -> bool:
        with self.read() as conn:
            row = conn.execute("SELECT state FROM outbox WHERE op_id = ?", (op_id,)).fetchone()
        return row is not None and row[0] == CONFIRMED

    def outbox(self, limit: int = 100) -> list[OutboxEntry]:
        with self.read() as conn:
            rows = conn.execute(
                "SELECT * FROM outbox ORDER BY client_seq DESC LIMIT ?", (limit,)
            ).fetchall()
        return self._entries(rows)

    def _entries(self, rows: list[sqlite3.Row]) -> list[OutboxEntry]:
        device_id = self.device_id or None
        return [_outbox_entry(r, device_id) for r in rows]

    # -- clerk cache (offline login) ----------------------------------------

    def cached_clerk(self, username: str) -> dict[str, Any] | None:
        with self.read() as conn:
            row = conn.execute(
                "SELECT * FROM clerk_cache WHERE username = ?", (username,)
            ).fetchone()
        if row is None:
            return None
        clerk = dict(row)
        clerk["roles"] = json.loads(clerk["roles"])
        return clerk

    def cache_clerk(
        self,
        *,
        username: str,
        clerk_id: str,
        name: str,
        roles: list[str],
        verifier: str,
        at: str,
        sealed_key: SealedKey | None = None,
        certificate: str | None = None,
    ) -> None:
        """What an offline login needs, kept at an online one: the verifier,
        the clerk's signing key if it is new (sealed under the password) and
        the server's certificate of it."""
        with self.transaction():
            if sealed_key is not None:
                self.keep_sealed_key(clerk_id, sealed_key)
            self.conn.execute(
                "UPDATE clerk_keys SET certificate = ? WHERE clerk_id = ?", (certificate, clerk_id)
            )
            self.conn.execute(
                "INSERT INTO clerk_cache (username, clerk_id, name, roles, verifier, last_online_login, "
                "failed_attempts, locked_until) VALUES (?, ?, ?, ?, ?, ?, 0, NULL) "
                "ON CONFLICT(username) DO UPDATE SET clerk_id = excluded.clerk_id, name = excluded.name, "
                "roles = excluded.roles, verifier = excluded.verifier, "
                "last_online_login = excluded.last_online_login, failed_attempts = 0, locked_until = NULL",
                (username, clerk_id, name, json.dumps(roles), verifier, at),
            )

    # -- the clerks' signing keys (domain.signing, local_db.keys) ------------

    def sign_as(self, clerk_id: str, key: SigningKey, certificate: str | None) -> None:
        """From now on, sign ``clerk_id``'s ops with ``key`` (unsealed at login),
        each carrying the server's ``certificate`` of it."""
        self._signers[clerk_id] = (key, certificate)

    def stop_signing(self, clerk_id: str) -> None:
        """The clerk logged out: their key leaves memory."""
        self._signers.pop(clerk_id, None)

    def sealed_key(self, clerk_id: str) -> SealedKey | None:
        with self.read() as conn:
            row = conn.execute(
                "SELECT key_id, public_key, salt, nonce, sealed FROM clerk_keys WHERE clerk_id = ?",
                (clerk_id,),
            ).fetchone()
        return SealedKey(*row) if row is not None else None

    def keep_sealed_key(self, clerk_id: str, sealed: SealedKey) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT OR REPLACE INTO clerk_keys (clerk_id, key_id, public_key, salt, nonce, "
                "sealed, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    clerk_id,
                    sealed.key_id,
                    sealed.public_key,
                    sealed.salt,
                    sealed.nonce,
                    sealed.sealed,
                    self.clock().isoformat(timespec="seconds"),
                ),
            )

    def key_certificate(self, clerk_id: str) -> str | None:
        """The server's certificate of the clerk's key here (given at an online login)."""
        with self.read() as conn:
            row = conn.execute(
                "SELECT certificate FROM clerk_keys WHERE clerk_id = ?", (clerk_id,)
            ).fetchone()
        return row[0] if row is not None else None

    def unsigned_through(self) -> int:
        """The last op made before this workstation signed ops (release 0.1), or 0:
        told the server once, at the first login that registers a key."""
        with self.read() as conn:
            row = conn.execute(
                "SELECT COALESCE(MAX(client_seq), 0) FROM outbox WHERE signature IS NULL"
            ).fetchone()
        return int(row[0])

    def note_login_failure(self, username: str, *, attempts_allowed: int, locked_until: str) -> int:
        """Count a failed offline login; lock the clerk out once the limit is reached."""
        with self.transaction():
            self.conn.execute(
                "UPDATE clerk_cache SET failed_attempts = failed_attempts + 1 WHERE username = ?",
                (username,),
            )
            row = self.conn.execute(
                "SELECT failed_attempts FROM clerk_cache WHERE username = ?", (username,)
            ).fetchone()
            attempts = int(row[0]) if row else 0
            if attempts >= attempts_allowed:
                self.conn.execute(
                    "UPDATE clerk_cache SET locked_until = ?, failed_attempts = 0 WHERE username = ?",
                    (locked_until, username),
                )
        return attempts

    def forget_clerk(self, username: str) -> None:
        """Drop what an offline login of the clerk needs (the cached clerk and
        their sealed signing key): no offline login here until they log in
        online again (after the server disabled them or ended their sessions).
        Their ops already signed stay as they are."""
        with self.transaction():
            self.conn.execute(
                "DELETE FROM clerk_keys WHERE clerk_id IN "
                "(SELECT clerk_id FROM clerk_cache WHERE username = ?)",
                (username,),
            )
            self.conn.execute("DELETE FROM clerk_cache WHERE username = ?", (username,))

    def clear_login_failures(self, username: str) -> None:
        with self.transaction():
            self.conn.execute(
                "UPDATE clerk_cache SET failed_attempts = 0, locked_until = NULL WHERE username = ?",
                (username,),
            )


@lru_cache(maxsize=64)
def _roles(text: str) -> frozenset[str]:
    """A clerk's roles as stored with each op (the same few texts, over and over)."""
    return frozenset(json.loads(text))


def _outbox_entry(row: sqlite3.Row, device_id: str | None) -> OutboxEntry:
    return OutboxEntry(
        op=Operation(
            op_id=row["op_id"],
            device_id=device_id,
            client_seq=row["client_seq"],
            kind=row["kind"],
            payload=row["payload"],
            args_hash=row["args_hash"],
            clerk_id=row["clerk_id"],
            at=row["at"],
            hlc=row["hlc"],
            withdrawn=bool(row["withdrawn"]),
            key_id=row["key_id"],
            signature=row["signature"],
            key_cert=row["key_cert"],
        ),
        clerk_roles=_roles(row["clerk_roles"]),
        state=row["state"],
        local_outcome=row["local_outcome"],
        attempts=row["attempts"],
    )
