"""Applying pushed operations, serving pulls and snapshots.

Push: the ops of one request are applied in ``client_seq`` order under the
change-log lock. Each op runs in its own savepoint together with its row in
``ops`` (the deduplication record), so an op is applied exactly once or not at
all; the request's ops are committed together (group commit) and no result is
returned before that commit is durable. A replayed op returns its stored
answer. A permanent rejection is stored too and advances the device's sequence;
so is an op the server fails on (``op_failed``): only a database that is gone
(503) leaves an op for the workstation to send again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from pydantic import ValidationError
from sqlalchemy import Engine, and_, func, select
from sqlalchemy.engine import Connection

from domain.areas import ROW_TYPES
from domain.commands import Outcome, decide
from domain.errors import DomainError, Rejection
from domain.hlc import is_hlc
from domain.json_text import to_json
from domain.operation import Operation
from domain.rows import Row
from domain.state import Actor, OpContext, Policy
from sync.protocol import (
    EPOCH_CHANGED,
    SERVER_BEHIND,
    Change,
    OpResult,
    OpStatus,
    PullResponse,
    PushRequest,
    PushResponse,
    SnapshotHeader,
    entry_mark,
    new_nonce,
)

from .auth import require_data_role, session_of
from .chain import (
    OPS,
    OPS_FIELDS,
    SIGNATURE_FIELDS,
    append_audit,
    chain_rows,
    effects_hash,
)
from .db import (
    CHANGE_SEQ,
    REPLICATED,
    change_log,
    counters,
    is_sqlite,
    leases,
    meta,
    ops,
    utc_now,
    writer,
)
from .keys import KeyRing, signature_refusal
from .raw import RawSql, pg_placeholders, upsert_sql
from .state import ServerState

log = logging.getLogger(__name__)

CLOCK_SKEW_LIMIT_S = 300.0
_OPS_COLUMNS = (*OPS_FIELDS, *SIGNATURE_FIELDS, "prev_hash", "hash")
# An op dated more than this after the server's clock, or more than this
# before its device was enrolled, is flagged (booked, but answered with a
# flag the workstation files as a Sync issue, and audited): a PC clock that
# is wrong, not a reason to lose the clerk's work, but never silently booked
OP_TIME_TOLERANCE = timedelta(hours=24)


def server_clock() -> datetime:
    """The clock ops' dates are judged by: the server's, the site's reference."""
    return datetime.now(UTC)


_INSERT_OP = (
    f"INSERT INTO ops ({', '.join(_OPS_COLUMNS)}) VALUES ({', '.join('?' * len(_OPS_COLUMNS))})"
)
# the ops chain's head, moved on by as many records as the batch writes (locked
# to the commit); its hash is set once the batch's records are hashed
_TAKE_OPS_HEAD = (
    f"UPDATE chain_heads SET seq = seq + ? WHERE chain = '{OPS}' RETURNING seq - ?, hash"
)
_SET_OPS_HEAD = f"UPDATE chain_heads SET hash = ? WHERE chain = '{OPS}'"
_INSERT_CHANGE = (
    "INSERT INTO change_log (seq, table_name, row_key, row, op_id, nonce) VALUES (?, ?, ?, ?, ?, ?)"
)
# what a push reads first (once the device is locked), in one statement: the
# epoch its answer names, the policy its decisions use, the device's sequence
_SETTINGS_SQL = (
    "SELECT key, value FROM meta WHERE key IN ('epoch', 'policy', 'key_secret') "
    "UNION ALL SELECT 'last_seq', CAST(MAX(client_seq) AS TEXT) FROM ops WHERE device_id = ? "
    "UNION ALL SELECT 'unsigned_through', CAST(unsigned_through AS TEXT) FROM devices "
    "WHERE device_id = ?"
)
_STORED_SQL = (
    "SELECT op_id, device_id, args_hash, status, code, params, result, change_seq "
    "FROM ops WHERE op_id IN"
)
_CLERK_SQL = "SELECT clerk_id, roles, active FROM clerks WHERE clerk_id = ?"
# the batch's change-log numbers: the counter moved on by as many as it wrote
_TAKE_SEQS_SQL = (
    f"UPDATE counters SET value = value + ? WHERE name = '{CHANGE_SEQ}' RETURNING value"
)
# PostgreSQL: both heads in one statement, the change log's first (every
# writer of the ops chain takes them in this order: no deadlock). The UPDATE
# of chain_heads joins the counter's: it runs once that one has.
_PG_TAKE_HEADS = (
    f"WITH head AS (UPDATE counters SET value = value + $1 WHERE name = '{CHANGE_SEQ}' "
    "RETURNING value - $1 AS base) "
    "UPDATE chain_heads SET seq = chain_heads.seq + $2 FROM head "
    f"WHERE chain_heads.chain = '{OPS}' RETURNING head.base, chain_heads.seq - $2, chain_heads.hash"
)
# then the rows in one statement, as VALUES lists (array parameters were four
# times the CPU: psycopg escapes each text element)
_PG_INSERT_CHANGES = (
    "changes AS (INSERT INTO change_log (seq, table_name, row_key, row, op_id, nonce) "
    "SELECT c.n::bigint, c.t, c.k, c.r, c.o, c.x::bigint FROM (VALUES {rows}) "
    "AS c(n, t, k, r, o, x)), "
)
_PG_INSERT_OPS = (
    f"recorded AS (INSERT INTO ops ({', '.join(_OPS_COLUMNS)}) "
    "SELECT o.chain_seq::bigint, o.op_id, o.device_id, o.client_seq::bigint, o.kind, "
    "o.args_hash, o.payload, o.clerk_id, o.client_at, o.hlc, o.applied_at, o.pushed_by, "
    "o.session, o.status, o.code, o.params, o.result, o.effects, o.change_seq::bigint, "
    f"o.key_id, o.signature, o.prev_hash, o.hash FROM (VALUES {{rows}}) AS o({', '.join(_OPS_COLUMNS)})) "
)
_PG_MAX_PARAMS = 65_535  # in one statement (the protocol's limit)


@lru_cache(maxsize=128)
def _pg_write_log_sql(changes: int, ops: int) -> str:
    sql = "WITH "
    if changes:
        sql += _PG_INSERT_CHANGES.format(rows=pg_placeholders(2, changes, 6))
    per_op = len(_OPS_COLUMNS)
    sql += _PG_INSERT_OPS.format(rows=pg_placeholders(2 + changes * 6, ops, per_op))
    return sql + f"UPDATE chain_heads SET hash = $1 WHERE chain = '{OPS}'"


SNAPSHOT_BATCH = 5_000


@dataclass(frozen=True)
class Clerk:
    clerk_id: str
    roles: frozenset[str]
    active: bool


def _rejected(op_id: str, rejection: Rejection) -> OpResult:
    return OpResult(
        op_id=op_id,
        status="rejected",
        code=rejection.code,
        params=rejection.params,
        message_zh=rejection.message("zh"),
        message_en=rejection.message("en"),
    )


def _parse_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


class _When(NamedTuple):
    """The push's time on the server's clock, and when its device was enrolled."""

    now: datetime
    enrolled: datetime | None


def _time_flags(op: Operation, at: datetime, when: _When) -> list[dict[str, Any]]:
    """What is wrong with an op's own time, judged by the server's clock."""
    if at - when.now > OP_TIME_TOLERANCE:
        return [{"code": "op_time_future", "params": {"at": op.at}}]
    if when.enrolled is not None and when.enrolled - at > OP_TIME_TOLERANCE:
        return [{"code": "op_time_before_enrolment", "params": {"at": op.at}}]
    return []


@dataclass(frozen=True)
class ReplicaClaim:
    """Where a workstation's replica stands, as its push says (headers)."""

    epoch: str
    cursor: int
    mark: str | None = None
    confirmed: int | None = None
    newest_lease: str | None = None


class ServerBehind(Exception):
    """This server is behind a workstation's replica (restored from a backup)."""

    code = SERVER_BEHIND
    zh = "中心服务器的数据比本机旧（可能已从备份恢复），本机将重新加载数据并补发操作。"
    en = (
        "The central server's data is older than this workstation's (restored from a "
        "backup?): this workstation loads the data again and sends its work again."
    )

    def __init__(self, found: dict[str, Any], device_id: str = "") -> None:
        super().__init__(self.en)
        self.found, self.device_id = found, device_id


class EpochChanged(Exception):
    """A push from a workstation of an earlier epoch (before a restore)."""

    code = EPOCH_CHANGED
    zh = "中心服务器已从备份恢复，本机将重新加载数据后再上传。"
    en = "The central server was restored from a backup: this workstation loads the data again first."

    def __init__(self, found: dict[str, Any]) -> None:
        super().__init__(self.en)
        self.found = found


@dataclass(frozen=True)
class _Mark:
    changes: int
    ops: int
    applied: int


class _StoredOp(NamedTuple):
    op_id: str
    device_id: str
    args_hash: str
    status: OpStatus
    code: str | None
    params: str | None
    result: str | None
    change_seq: int


@dataclass
class _Batch:
    """What applying a push's ops needs, read once."""

    device_id: str
    pushed_by: str
    ops: list[Operation]
    last_seq: int  # the device's, before the batch
    stored: dict[str, _StoredOp]  # ops of the batch the server has seen before
    clerks: dict[str, Clerk | None]
    policy: Policy
    applied_at: str
    keys: KeyRing  # the clerks' signing keys the batch names
    unsigned_through: int | None  # the device's last op made before it signed
    key_secret: str | None  # what the server certifies clerks' keys with (server.keys)
    session: str | None  # the pushing session (server.chain.session_ref)
    when: _When


@dataclass
class _LogRows:
    """Change-log entries and ops records of a batch, written together at its
    end, numbered from 1 within the batch: the batch's place in the change
    log is known only then (``SyncService._write_log``)."""

    session: str | None = None  # the pushing session, in each ops record
    # (number, table, key, row, op, nonce)
    changes: list[tuple[Any, ...]] = field(default_factory=list)
    # OPS_FIELDS without chain_seq (given at the end, in _write_log); the
    # last, change_seq, is the number of the op's last change in the batch
    ops: list[tuple[Any, ...]] = field(default_factory=list)
    signatures: list[tuple[str | None, str | None]] = field(default_factory=list)  # (key, sig)
    applied: list[OpResult] = field(default_factory=list)  # server_seq: a number in the batch

    def mark(self) -> _Mark:
        return _Mark(len(self.changes), len(self.ops), len(self.applied))

    def back_to(self, mark: _Mark) -> None:
        """Forget what an op that was rolled back to its savepoint added."""
        del self.changes[mark.changes :]
        del self.ops[mark.ops :]
        del self.signatures[mark.ops :]
        del self.applied[mark.applied :]

    def change(self, row: Row, op_id: str) -> None:
        self.changes.append(
            (
                len(self.changes) + 1,
                row.table,
                row.key_value,
                row.model_dump_json(),
                op_id,
                new_nonce(),
            )
        )

    def record(
        self, device_id: str, pushed_by: str, op: Operation, result: OpResult, applied_at: str
    ) -> None:
        """The op's row in ``ops``: its deduplication record and its audit
        trail, with what it wrote (its change-log entries, the last ones)."""
        written = len(self.changes)
        first = written
        while first and self.changes[first - 1][4] == op.op_id:
            first -= 1
        self.ops.append(
            (
                op.op_id,
                device_id,
                op.client_seq,
                op.kind,
                op.args_hash,
                op.payload,
                op.clerk_id,
                op.at,
                op.hlc,
                applied_at,
                pushed_by,
                self.session,
                result.status,
                result.code,
                to_json(result.params) if result.params else "{}",
                to_json(result.result) if result.result is not None else None,
                effects_hash(c[1:4] for c in self.changes[first:written]),
                written,
            )
        )
        self.signatures.append((op.key_id, op.signature))


class _OpFailed(Exception):
    """An op raised while applied without a savepoint of its own."""


class PushMalformed(Exception):
    """A push body that is not a :class:`PushRequest`: answered 422 as FastAPI
    answers any malformed body."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("malformed push")
        self.errors = errors


def parse_push(body: bytes) -> PushRequest:
    """The push in ``body`` (JSON parsed and checked in one pass)."""
    try:
        return PushRequest.model_validate_json(body)
    except ValidationError as exc:
        raise PushMalformed(
            [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]
        ) from None


class SyncService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- push ----------------------------------------------------------------

    def push(
        self,
        device_token: str | None,
        bearer: str | None,
        body: bytes,
        replica: ReplicaClaim | Callable[[], ReplicaClaim | None] | None = None,
    ) -> PushResponse:
        """``POST /sync/push``: the request's device and session checked, its
        body parsed and its ops applied, in one transaction.

        On PostgreSQL the device's row is locked first, so two pushes of one
        device (a resend while the first is still running) are applied one
        after the other, the second seeing what the first stored; pushes of
        different devices run side by side and meet only at the end, where
        each takes its change-log numbers (:meth:`_write_log`).

        The ops are applied without a savepoint each; an op that breaks a
        constraint or fails rolls the whole transaction back, and the push is
        made again, each op in a savepoint of its own (``careful``). That is
        four statements less for a one-op push (a batch savepoint was two a
        push, a savepoint an op two an op), and a quarter of a top-up's round
        trips to PostgreSQL in a batch.

        With ``replica`` (where the workstation's replica stands, from the
        push's headers) the server first checks it is not behind it
        (:meth:`verify`); given as a function, it is called once the
        credentials are checked (it may raise for a malformed claim: the
        request's credentials are judged before anything else of it)."""
        now = server_clock()
        try:
            return self._push(device_token, bearer, body, now, replica, careful=False)
        except _OpFailed:
            return self._push(device_token, bearer, body, now, replica, careful=True)

    def _push(
        self,
        device_token: str | None,
        bearer: str | None,
        body: bytes,
        now: datetime,
        replica: ReplicaClaim | Callable[[], ReplicaClaim | None] | None,
        *,
        careful: bool,
    ) -> PushResponse:
        with writer(self.engine) as conn, conn.begin():
            sql = RawSql(conn)
            session = require_data_role(session_of(sql, device_token, bearer, lock_device=True))
            if callable(replica):
                replica = replica()
            request = parse_push(body)
            # epoch, policy and the device's last op, read once for the check and the batch
            settings = dict(sql.all(_SETTINGS_SQL, (session.device_id, session.device_id)))
            if replica is not None:
                self.verify(conn, session.device_id, replica, settings)
            device_time = _parse_time(request.device_time)
            skew = (device_time - now).total_seconds() if device_time else 0.0
            clerk = Clerk(session.clerk_id, frozenset(session.roles), active=True)
            results, epoch = self._apply_batch(
                sql,
                settings,
                session.device_id,
                clerk,
                sorted(request.ops, key=lambda o: o.client_seq),
                _When(now, _parse_time(session.enrolled_at or "")),
                careful=careful,
                session=session.ref,
            )
        return PushResponse(
            results=results,
            epoch=epoch,
            server_time=now.isoformat(timespec="milliseconds"),
            clock_skew_s=round(skew, 3),
            clock_skew_flagged=abs(skew) > CLOCK_SKEW_LIMIT_S,
        )

    def _apply_batch(
        self,
        sql: RawSql,
        settings: dict[str, Any],
        device_id: str,
        pusher: Clerk,
        batch: list[Operation],
        when: _When,
        *,
        careful: bool,
        session: str | None = None,
    ) -> tuple[list[OpResult], str]:
        """The batch's results, and the epoch they belong to."""
        epoch = str(settings["epoch"])
        if not batch:
            return [], epoch
        policy = (
            Policy.from_dict(json.loads(settings["policy"])) if settings.get("policy") else Policy()
        )
        stored = {
            row[0]: _StoredOp(*row) for row in sql.all_in(_STORED_SQL, [o.op_id for o in batch])
        }
        run = _Batch(
            device_id=device_id,
            pushed_by=pusher.clerk_id,
            ops=batch,
            last_seq=int(settings.get("last_seq") or 0),
            stored=stored,
            clerks={pusher.clerk_id: pusher},
            policy=policy,
            applied_at=utc_now(),
            keys=KeyRing(sql),
            unsigned_through=(
                int(settings["unsigned_through"])
                if settings.get("unsigned_through") is not None
                else None
            ),
            key_secret=settings.get("key_secret"),
            session=session,
            when=when,
        )
        try:
            results, log_rows = self._apply_ops(sql, run, careful=careful)
        except Exception as exc:
            if careful:
                raise
            raise _OpFailed from exc  # the transaction is rolled back; push() goes again
        if log_rows.ops:
            self._write_log(sql, log_rows)
        return results, epoch

    def _apply_ops(
        self, sql: RawSql, run: _Batch, *, careful: bool
    ) -> tuple[list[OpResult], _LogRows]:
        """The batch's ops in ``client_seq`` order. Not ``careful``: the first
        op that raises ends it (the push is rolled back and made again).
        ``careful``: each op in a savepoint; one that fails is rolled back to
        it and refused (``op_failed``, the error's kind in its params, the
        traceback in the server's log), and the ops after it are applied: an
        op the server cannot take must not hold its device's sequence for
        ever. A database that went away (``RawSql.Unavailable``) is no verdict
        on the op: the push fails (503) and is sent again."""
        device_id, pushed_by, applied_at = run.device_id, run.pushed_by, run.applied_at
        state = ServerState(sql, run.policy)
        log_rows = _LogRows(session=run.session)
        results: list[OpResult] = []
        last_seq = run.last_seq
        seen: set[str] = set()
        for op in run.ops:
            known = run.stored.get(op.op_id)
            if known is not None:
                results.append(self._stored_result(known, op, device_id))
                continue
            if op.op_id in seen:  # sent twice in one request
                results.append(_rejected(op.op_id, Rejection(code="op_id_conflict")))
                continue
            seen.add(op.op_id)
            if op.client_seq <= last_seq:
                results.append(
                    _rejected(
                        op.op_id,
                        Rejection(code="sequence_reused", params={"client_seq": op.client_seq}),
                    )
                )
                continue
            if op.client_seq > last_seq + 1:
                results.append(
                    OpResult(
                        op_id=op.op_id,
                        status="deferred",
                        code="sequence_gap",
                        params={"expected": last_seq + 1},
                    )
                )
                continue
            if op.withdrawn:  # refused before a restore lost the answer: never applied
                result = _rejected(op.op_id, Rejection(code="withdrawn"))
                log_rows.record(device_id, pushed_by, op, result, applied_at)
                results.append(result)
                last_seq = op.client_seq
                continue
            refusal = signature_refusal(
                run.keys, op, device_id, run.unsigned_through, run.key_secret
            )
            if refusal is not None:  # not the clerk it names: refused, the sequence goes on
                result = _rejected(op.op_id, refusal)
                log_rows.record(device_id, pushed_by, op, result, applied_at)
                results.append(result)
                last_seq = op.client_seq
                continue
            if op.clerk_id not in run.clerks:
                run.clerks[op.clerk_id] = self._clerk(sql, op.clerk_id)
            clerk = run.clerks[op.clerk_id]
            if not careful:
                result = self._apply_one(
                    sql, log_rows, state, device_id, pushed_by, op, clerk, applied_at, run.when
                )
            else:
                try:
                    result = self._apply_guarded(
                        sql, log_rows, state, device_id, pushed_by, op, clerk, applied_at, run.when
                    )
                except sql.Unavailable:
                    raise  # nothing recorded: 503, and the workstation sends it again
                except Exception as exc:
                    # rolled back to its savepoint: refused and recorded, so the
                    # device's later ops are not held behind it for ever
                    log.exception("op %s failed on the server; refused", op.op_id)
                    result = _rejected(
                        op.op_id, Rejection(code="op_failed", params={"error": type(exc).__name__})
                    )
                    log_rows.record(device_id, pushed_by, op, result, applied_at)
            results.append(result)
            last_seq = op.client_seq
        return results, log_rows

    def _apply_guarded(
        self,
        sql: RawSql,
        log_rows: _LogRows,
        state: ServerState,
        device_id: str,
        pushed_by: str,
        op: Operation,
        clerk: Clerk | None,
        applied_at: str,
        when: _When,
    ) -> OpResult:
        """One op in a savepoint of its own. A uniqueness it breaks rolls it
        back and it is decided once more: on PostgreSQL the row it met may be
        another device's, committed meanwhile (the pushes of different devices
        run side by side), which the second decision sees and answers as if
        the two had come one after the other (e.g. a patient registered at
        two windows at once: the second is mapped to the first). Met again,
        it is refused (``conflict``), never applied twice."""
        for attempt in (1, 2):
            sql.savepoint()
            mark = log_rows.mark()
            try:
                result = self._apply_one(
                    sql, log_rows, state, device_id, pushed_by, op, clerk, applied_at, when
                )
            except sql.IntegrityError as exc:
                sql.rollback_to_savepoint()
                log_rows.back_to(mark)
                if attempt == 1:
                    continue
                log.warning("op %s hit a constraint: %s", op.op_id, exc)
                result = _rejected(op.op_id, Rejection(code="conflict"))
                log_rows.record(device_id, pushed_by, op, result, applied_at)
                return result
            except Exception:
                sql.rollback_to_savepoint()
                log_rows.back_to(mark)
                raise
            sql.release()
            return result
        raise AssertionError("unreachable")

    def _write_log(self, sql: RawSql, log_rows: _LogRows) -> None:
        """The change-log entries and ops records of the batch, numbered from
        the change-log head and chained from the ops chain's head, both taken
        now.

        Taking the heads locks them (their rows on PostgreSQL, the write lock
        on SQLite) until the commit, so batches are numbered and chained in
        the order they commit, no reader sees seq N+1 before N and the op log
        stays one line. It is the last thing a push does before its commit:
        nothing but hashing the batch's records and these inserts happens
        while they are held (the decisions, the row writes and the JSON are
        done), which is what lets pushes of different devices overlap. On
        PostgreSQL it is two statements (then the commit): the heads, then
        the rows; on SQLite, in process, five (and on PostgreSQL for a batch
        of more rows than one statement takes parameters)."""
        count, recorded = len(log_rows.changes), len(log_rows.ops)
        per_op = len(_OPS_COLUMNS)
        if sql.sqlite or 1 + count * 6 + recorded * per_op > _PG_MAX_PARAMS:
            base = int(sql.scalar(_TAKE_SEQS_SQL, (count,))) - count
            head = sql.one(_TAKE_OPS_HEAD, (recorded, recorded))
            assert head is not None
            chained, last = chain_rows(
                int(head[0]) + 1,
                head[1],
                [(*rest, base + n) for *rest, n in log_rows.ops],
                log_rows.signatures,
            )
            sql.executemany(
                _INSERT_CHANGE,
                [(base + offset, *rest) for offset, *rest in log_rows.changes],
            )
            sql.executemany(_INSERT_OP, chained)
            sql.execute(_SET_OPS_HEAD, (last,))
        else:
            [(base, chain_at, prev)] = sql.pg_all(_PG_TAKE_HEADS, (count, recorded))
            chained, last = chain_rows(
                int(chain_at) + 1,
                prev,
                [(*rest, base + n) for *rest, n in log_rows.ops],
                log_rows.signatures,
            )
            params: list[Any] = [last]
            params += [value for n, *rest in log_rows.changes for value in (base + n, *rest)]
            params += [value for row in chained for value in row]
            sql.pg_execute(_pg_write_log_sql(count, recorded), params)
        for result in log_rows.applied:
            assert result.server_seq is not None
            result.server_seq += base

    def _apply_one(
        self,
        sql: RawSql,
        log_rows: _LogRows,
        state: ServerState,
        device_id: str,
        pushed_by: str,
        op: Operation,
        clerk: Clerk | None,
        applied_at: str,
        when: _When,
    ) -> OpResult:
        outcome = self._decide(state, device_id, op, clerk, when)
        if isinstance(outcome, Rejection):
            result = _rejected(op.op_id, outcome)
        else:
            flags = _time_flags(op, _parse_time(op.at) or when.now, when)
            for flag in flags:  # booked, and kept where IT looks
                append_audit(
                    sql.conn,
                    clerk_id=op.clerk_id,
                    device_id=device_id,
                    action="op_time_flagged",
                    target=op.op_id,
                    outcome=flag["code"],
                    detail=to_json({"at": op.at, "server_time": when.now.isoformat()}),
                    session=log_rows.session,
                )
            for row in outcome.rows:
                upsert, values_of = upsert_sql(type(row))
                sql.execute(upsert, values_of(row))
                log_rows.change(row, op.op_id)
            notice = outcome.notice
            result = OpResult(
                op_id=op.op_id,
                status=outcome.outcome,
                code=notice.code if notice else None,
                params=notice.params if notice else {},
                message_zh=notice.message("zh") if notice else None,
                message_en=notice.message("en") if notice else None,
                server_seq=len(log_rows.changes),  # in the batch, until _write_log
                result={**outcome.result, "flags": flags} if flags else outcome.result,
            )
            log_rows.applied.append(result)
        log_rows.record(device_id, pushed_by, op, result, applied_at)
        return result

    def _decide(
        self, state: ServerState, device_id: str, op: Operation, clerk: Clerk | None, when: _When
    ) -> Outcome:
        if not op.hash_matches():
            return Rejection(code="command_malformed", params={"detail": "args_hash"})
        if op.device_id is not None and op.device_id != device_id:
            return Rejection(code="command_malformed", params={"detail": "device_id"})
        at = _parse_time(op.at)
        if at is None:
            return Rejection(code="command_malformed", params={"detail": "at"})
        if not is_hlc(op.hlc):
            return Rejection(code="command_malformed", params={"detail": "hlc"})
        if clerk is None or not clerk.active:
            return Rejection(code="clerk_unknown", params={"clerk_id": op.clerk_id})
        try:
            command = op.command()
        except DomainError as exc:
            return exc.rejection
        ctx = OpContext(
            actor=Actor(clerk.clerk_id, clerk.roles, device_id),
            at=op.at,
            op_id=op.op_id,
            # typed dates (a birth date) are judged by the server's clock, in the op's zone
            today=when.now.astimezone(at.tzinfo).date().isoformat(),
        )
        return decide(state, command, ctx)

    def _stored_result(self, known: _StoredOp, op: Operation, device_id: str) -> OpResult:
        if known.args_hash != op.args_hash or known.device_id != device_id:
            return _rejected(op.op_id, Rejection(code="op_id_conflict"))
        params = json.loads(known.params) if known.params else {}
        rejection = Rejection(code=known.code, params=params) if known.code else None
        return OpResult(
            op_id=known.op_id,
            status=known.status,
            code=known.code,
            params=params,
            message_zh=rejection.message("zh") if rejection else None,
            message_en=rejection.message("en") if rejection else None,
            server_seq=known.change_seq
            if known.status in ("applied", "applied_modified")
            else None,
            result=json.loads(known.result) if known.result else None,
        )

    def device_last_seq(self, conn: Connection, device_id: str, through: int | None = None) -> int:
        query = select(func.max(ops.c.client_seq)).where(ops.c.device_id == device_id)
        if through is not None:
            query = query.where(ops.c.change_seq <= through)
        return int(conn.execute(query).scalar() or 0)

    def _clerk(self, sql: RawSql, clerk_id: str) -> Clerk | None:
        row = sql.one(_CLERK_SQL, (clerk_id,))
        if row is None:
            return None
        return Clerk(clerk_id=row[0], roles=frozenset(json.loads(row[1])), active=bool(row[2]))

    # -- pull ----------------------------------------------------------------

    def epoch(self) -> str:
        with self.engine.connect() as conn:
            return str(conn.execute(select(meta.c.value).where(meta.c.key == "epoch")).scalar_one())

    def pull(
        self,
        device_id: str,
        cursor: int,
        limit: int,
        *,
        mark: str | None = None,
        confirmed: int | None = None,
        epoch: str | None = None,
    ) -> PullResponse:
        """Rows after ``cursor``, whole operations only (a page never splits one).

        A workstation that sends ``mark`` (the fingerprint of the change at its
        cursor) and ``confirmed`` (its last operation the server confirmed) is
        checked against this server first: a cursor past the head, a different
        change at the cursor or fewer of the device's operations than it saw
        confirmed mean the server was restored from a backup behind the replica
        (and nobody started a new epoch). That is audited and answered
        ``server_behind``, and the workstation loads the data again. A device of
        another ``epoch`` is not checked: the new epoch tells it all already."""
        with self.engine.connect() as conn, conn.begin():
            head = int(
                conn.execute(
                    select(counters.c.value).where(counters.c.name == CHANGE_SEQ)
                ).scalar_one()
            )
            ours = str(conn.execute(select(meta.c.value).where(meta.c.key == "epoch")).scalar_one())
            if (mark is not None or confirmed is not None) and epoch in (None, ours):
                behind = self._behind(conn, device_id, cursor, head, mark, confirmed)
                if behind is not None:
                    raise ServerBehind(behind)
            rows = list(
                conn.execute(
                    select(change_log)
                    .where(change_log.c.seq > cursor)
                    .order_by(change_log.c.seq)
                    .limit(limit)
                )
            )
            if len(rows) == limit and rows[-1].op_id is not None:
                rows += list(
                    conn.execute(
                        select(change_log)
                        .where(
                            and_(
                                change_log.c.seq > rows[-1].seq,
                                change_log.c.op_id == rows[-1].op_id,
                            )
                        )
                        .order_by(change_log.c.seq)
                    )
                )
            next_cursor = rows[-1].seq if rows else max(cursor, 0)
            if not rows and cursor > head:
                next_cursor = cursor
            device_last_seq = self.device_last_seq(conn, device_id, through=next_cursor)
            at = rows[-1] if rows else None
            if at is None and mark is None and next_cursor > 0:
                # a workstation without a mark (just loaded): the entry at its cursor
                at = conn.execute(select(change_log).where(change_log.c.seq == next_cursor)).first()
            mark_here = (
                entry_mark(at.nonce, at.table_name, at.row_key, at.row) if at is not None else mark
            )
        changes = [
            Change(
                seq=r.seq,
                table=r.table_name,
                key=r.row_key,
                row=json.loads(r.row) if r.row else None,
            )
            for r in rows
        ]
        return PullResponse(
            mark=mark_here,
            changes=changes,
            next_cursor=next_cursor,
            head=head,
            has_more=next_cursor < head,
            epoch=ours,
            device_last_seq=device_last_seq,
            server_time=datetime.now(UTC).isoformat(timespec="milliseconds"),
        )

    def verify(
        self, conn: Connection, device_id: str, replica: ReplicaClaim, settings: dict[str, Any]
    ) -> None:
        """Before a push, in its transaction: the device's replica is of this
        server's epoch and not ahead of it. Raises EpochChanged or ServerBehind
        (nothing is applied): the workstation loads the data again and tells
        its number blocks again before it pushes, so that no operation is
        refused for what a restore forgot."""
        ours = str(settings["epoch"])
        if replica.epoch != ours:
            raise EpochChanged({"epoch": ours})
        head = int(
            conn.execute(select(counters.c.value).where(counters.c.name == CHANGE_SEQ)).scalar_one()
        )
        known = int(settings.get("last_seq") or 0)
        behind = self._behind(
            conn, device_id, replica.cursor, head, replica.mark, replica.confirmed, known
        )
        if behind is None and replica.newest_lease is not None:
            granted = conn.execute(
                select(leases.c.device_id).where(leases.c.lease_id == replica.newest_lease)
            ).scalar()
            if granted != device_id:  # a lease this server has no record of granting
                behind = {
                    "cursor": replica.cursor,
                    "head": head,
                    "device_last_seq": known,
                    "reason": "lease_lost",
                }
        if behind is not None:
            raise ServerBehind(behind, device_id)

    def _behind(
        self,
        conn: Connection,
        device_id: str,
        cursor: int,
        head: int,
        mark: str | None,
        confirmed: int | None,
        known: int | None = None,
    ) -> dict[str, Any] | None:
        """What shows this server behind the device's replica, or None.
        ``known``: the device's last op here, when the caller read it already."""
        if known is None:
            known = self.device_last_seq(conn, device_id)
        found: dict[str, Any] = {"cursor": cursor, "head": head, "device_last_seq": known}
        if cursor > head:
            return found | {"reason": "cursor_beyond_head"}
        if confirmed is not None and confirmed > known:
            return found | {"reason": "device_seq_lost", "confirmed": confirmed}
        if mark and cursor > 0:
            at = conn.execute(select(change_log).where(change_log.c.seq == cursor)).first()
            here = (
                entry_mark(at.nonce, at.table_name, at.row_key, at.row) if at is not None else None
            )
            if here != mark:
                return found | {"reason": "change_differs"}
        return None

    def audit_behind(
        self,
        device_id: str,
        clerk_id: str | None,
        found: dict[str, Any],
        session: str | None = None,
    ) -> None:
        """The audit trail keeps every workstation that found this server
        behind its replica: the sign of a restore nobody announced."""
        with writer(self.engine) as conn, conn.begin():
            append_audit(
                conn,
                clerk_id=clerk_id,
                device_id=device_id,
                action="server_behind",
                target=str(found.get("reason")),
                outcome="detected",
                detail=to_json(found),
                session=session,
            )
        log.warning("device %s finds the server behind its replica: %s", device_id, found)

    # -- snapshot ------------------------------------------------------------

    def snapshot(self, device_id: str) -> Iterator[bytes]:
        """A consistent gzip'd NDJSON snapshot: a header (cursor, epoch), rows
        in batches, and an end line with the row count and the SHA-256 of
        every line before it."""
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip container
        digest = hashlib.sha256()
        count = 0
        conn = self.engine.connect()
        if not is_sqlite(conn):
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            with conn.begin():
                head = int(
                    conn.execute(
                        select(counters.c.value).where(counters.c.name == CHANGE_SEQ)
                    ).scalar_one()
                )
                header = SnapshotHeader(
                    epoch=str(
                        conn.execute(select(meta.c.value).where(meta.c.key == "epoch")).scalar_one()
                    ),
                    cursor=head,
                    device_last_seq=self.device_last_seq(conn, device_id, through=head),
                    created_at=utc_now(),
                    tables=[rt.table for rt in ROW_TYPES],
                )
                line = (header.model_dump_json() + "\n").encode()
                digest.update(line)
                yield compressor.compress(line)
                for row_type in ROW_TYPES:
                    table = REPLICATED[row_type.table]
                    result = conn.execution_options(yield_per=SNAPSHOT_BATCH).execute(
                        select(table).order_by(table.c[row_type.key])
                    )
                    for partition in result.mappings().partitions():
                        rows = [dict(r) for r in partition]
                        count += len(rows)
                        line = (
                            json.dumps(
                                {"type": "rows", "table": row_type.table, "rows": rows},
                                ensure_ascii=False,
                                separators=(",", ":"),
                            )
                            + "\n"
                        ).encode()
                        digest.update(line)
                        chunk = compressor.compress(line)
                        if chunk:
                            yield chunk
        finally:
            conn.close()
        end = json.dumps({"type": "end", "count": count, "sha256": digest.hexdigest()}) + "\n"
        yield compressor.compress(end.encode())
        yield compressor.flush()
