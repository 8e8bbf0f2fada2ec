"""Applying pushed operations, serving pulls and snapshots.

Push: the ops of one request are applied in ``client_seq`` order under the
change-log lock. Each op runs in its own savepoint together with its row in
``ops`` (the deduplication record), so an op is applied exactly once or not at
all; the request's ops are committed together (group commit) and no result is
returned before that commit is durable. A replayed op returns its stored
answer. A permanent rejection is stored too and advances the device's sequence.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, func, insert, select, update
from sqlalchemy.engine import Connection

from domain.areas import ROW_TYPES
from domain.commands import Outcome, decide
from domain.errors import DomainError, Rejection
from domain.json_text import to_json
from domain.operation import Operation
from domain.rows import Row
from domain.state import Actor, OpContext
from sync.protocol import (
    EPOCH_CHANGED,
    SERVER_BEHIND,
    Change,
    OpResult,
    PullResponse,
    PushRequest,
    PushResponse,
    SnapshotHeader,
    entry_mark,
    new_nonce,
)

from .db import (
    CHANGE_SEQ,
    REPLICATED,
    audit,
    change_log,
    clerks,
    counters,
    is_sqlite,
    leases,
    load_policy,
    meta,
    ops,
    utc_now,
    writer,
)
from .raw import RawSql, upsert_sql
from .state import ServerState

log = logging.getLogger(__name__)

CLOCK_SKEW_LIMIT_S = 300.0
_INSERT_OP = (
    "INSERT INTO ops (op_id, device_id, client_seq, kind, args_hash, payload, clerk_id, client_at, hlc, "
    "applied_at, pushed_by, status, code, params, result, change_seq) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_CHANGE = (
    "INSERT INTO change_log (seq, table_name, row_key, row, op_id, nonce) VALUES (?, ?, ?, ?, ?, ?)"
)
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


class ServerBehind(Exception):
    """This server is behind a workstation's replica (restored from a backup)."""

    code = SERVER_BEHIND
    zh = "中心服务器的数据比本机旧（可能已从备份恢复），本机将重新加载数据并补发操作。"
    en = (
        "The central server's data is older than this workstation's (restored from a "
        "backup?): this workstation loads the data again and sends its work again."
    )

    def __init__(self, found: dict[str, Any]) -> None:
        super().__init__(self.en)
        self.found = found


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
    head: int


@dataclass
class _LogRows:
    """Change-log entries and ops records of a batch, written together at its end."""

    changes: list[tuple[Any, ...]] = field(default_factory=list)
    ops: list[tuple[Any, ...]] = field(default_factory=list)

    def mark(self, head: int) -> _Mark:
        return _Mark(len(self.changes), len(self.ops), head)

    def back_to(self, mark: _Mark) -> None:
        """Forget what an op that was rolled back to its savepoint added."""
        del self.changes[mark.changes :]
        del self.ops[mark.ops :]


class SyncService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- push ----------------------------------------------------------------

    def push(self, device_id: str, pushed_by: str, request: PushRequest) -> PushResponse:
        now = datetime.now(UTC)
        device_time = _parse_time(request.device_time)
        skew = (device_time - now).total_seconds() if device_time else 0.0
        results = self._apply_batch(
            device_id, pushed_by, sorted(request.ops, key=lambda o: o.client_seq)
        )
        return PushResponse(
            results=results,
            epoch=self.epoch(),
            server_time=now.isoformat(timespec="milliseconds"),
            clock_skew_s=round(skew, 3),
            clock_skew_flagged=abs(skew) > CLOCK_SKEW_LIMIT_S,
        )

    def _apply_batch(
        self, device_id: str, pushed_by: str, batch: list[Operation]
    ) -> list[OpResult]:
        results: list[OpResult] = []
        if not batch:
            return results
        with writer(self.engine) as conn, conn.begin():
            head = self._lock_head(conn)
            policy = load_policy(conn)
            last_seq = self.device_last_seq(conn, device_id)
            stored = {
                row.op_id: row
                for row in conn.execute(
                    select(ops).where(ops.c.op_id.in_([o.op_id for o in batch]))
                )
            }
            clerk_cache: dict[str, Clerk | None] = {}
            applied_at = utc_now()
            sql = RawSql(conn)
            state = ServerState(sql, policy)
            log_rows = _LogRows()
            seen: set[str] = set()
            stop = False
            for op in batch:
                if stop:
                    results.append(OpResult(op_id=op.op_id, status="deferred", code="server_error"))
                    continue
                known = stored.get(op.op_id)
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
                    self._record(log_rows, device_id, pushed_by, op, result, head, applied_at)
                    results.append(result)
                    last_seq = op.client_seq
                    continue
                if op.clerk_id not in clerk_cache:
                    clerk_cache[op.clerk_id] = self._clerk(conn, op.clerk_id)
                sql.savepoint()
                mark = log_rows.mark(head)
                try:
                    result, head = self._apply_one(
                        sql,
                        log_rows,
                        state,
                        device_id,
                        pushed_by,
                        op,
                        clerk_cache[op.clerk_id],
                        head,
                        applied_at,
                    )
                    sql.release()
                except sql.IntegrityError as exc:
                    # a uniqueness the rules did not foresee: reject, never apply twice
                    sql.rollback_to_savepoint()
                    log_rows.back_to(mark)
                    head = mark.head
                    log.warning("op %s hit a constraint: %s", op.op_id, exc)
                    result = _rejected(op.op_id, Rejection(code="conflict"))
                    self._record(log_rows, device_id, pushed_by, op, result, head, applied_at)
                except Exception:
                    sql.rollback_to_savepoint()
                    log_rows.back_to(mark)
                    head = mark.head
                    log.exception(
                        "op %s failed on the server; it stays pending at the workstation", op.op_id
                    )
                    results.append(OpResult(op_id=op.op_id, status="deferred", code="server_error"))
                    stop = True
                    continue
                results.append(result)
                last_seq = op.client_seq
            # the change log and the ops records of the whole batch, in this same transaction
            sql.executemany(_INSERT_CHANGE, log_rows.changes)
            sql.executemany(_INSERT_OP, log_rows.ops)
            conn.execute(update(counters).where(counters.c.name == CHANGE_SEQ).values(value=head))
        return results

    def _apply_one(
        self,
        sql: RawSql,
        log_rows: _LogRows,
        state: ServerState,
        device_id: str,
        pushed_by: str,
        op: Operation,
        clerk: Clerk | None,
        head: int,
        applied_at: str,
    ) -> tuple[OpResult, int]:
        outcome = self._decide(state, device_id, op, clerk)
        if isinstance(outcome, Rejection):
            result = _rejected(op.op_id, outcome)
        else:
            for row in outcome.rows:
                head += 1
                self._write_row(sql, log_rows, row, head, op.op_id)
            notice = outcome.notice
            result = OpResult(
                op_id=op.op_id,
                status=outcome.outcome,
                code=notice.code if notice else None,
                params=notice.params if notice else {},
                message_zh=notice.message("zh") if notice else None,
                message_en=notice.message("en") if notice else None,
                server_seq=head,
                result=outcome.result,
            )
        self._record(log_rows, device_id, pushed_by, op, result, head, applied_at)
        return result, head

    def _decide(
        self, state: ServerState, device_id: str, op: Operation, clerk: Clerk | None
    ) -> Outcome:
        if not op.hash_matches():
            return Rejection(code="command_malformed", params={"detail": "args_hash"})
        if op.device_id is not None and op.device_id != device_id:
            return Rejection(code="command_malformed", params={"detail": "device_id"})
        if _parse_time(op.at) is None:
            return Rejection(code="command_malformed", params={"detail": "at"})
        if clerk is None or not clerk.active:
            return Rejection(code="clerk_unknown", params={"clerk_id": op.clerk_id})
        try:
            command = op.command()
        except DomainError as exc:
            return exc.rejection
        ctx = OpContext(
            actor=Actor(clerk.clerk_id, clerk.roles, device_id), at=op.at, op_id=op.op_id
        )
        return decide(state, command, ctx)

    def _record(
        self,
        log_rows: _LogRows,
        device_id: str,
        pushed_by: str,
        op: Operation,
        result: OpResult,
        head: int,
        applied_at: str,
    ) -> None:
        """The op's row in ``ops``: its deduplication record and its audit trail."""
        log_rows.ops.append(
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
                result.status,
                result.code,
                to_json(result.params) if result.params else "{}",
                to_json(result.result) if result.result is not None else None,
                head,
            )
        )

    def _stored_result(self, known: Any, op: Operation, device_id: str) -> OpResult:
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

    def _write_row(self, sql: RawSql, log_rows: _LogRows, row: Row, seq: int, op_id: str) -> None:
        """The row, and its entry in the change log at ``seq``."""
        upsert, values_of = upsert_sql(type(row))
        sql.execute(upsert, values_of(row))
        log_rows.changes.append(
            (seq, row.table, row.key_value, row.model_dump_json(), op_id, new_nonce())
        )

    def _lock_head(self, conn: Connection) -> int:
        query = select(counters.c.value).where(counters.c.name == CHANGE_SEQ)
        if not is_sqlite(conn):
            query = query.with_for_update()
        return int(conn.execute(query).scalar_one())

    def device_last_seq(self, conn: Connection, device_id: str, through: int | None = None) -> int:
        query = select(func.max(ops.c.client_seq)).where(ops.c.device_id == device_id)
        if through is not None:
            query = query.where(ops.c.change_seq <= through)
        return int(conn.execute(query).scalar() or 0)

    def _clerk(self, conn: Connection, clerk_id: str) -> Clerk | None:
        row = conn.execute(select(clerks).where(clerks.c.clerk_id == clerk_id)).first()
        if row is None:
            return None
        return Clerk(
            clerk_id=row.clerk_id, roles=frozenset(json.loads(row.roles)), active=bool(row.active)
        )

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
        self,
        device_id: str,
        cursor: int,
        mark: str | None,
        confirmed: int | None,
        epoch: str,
        newest_lease: str | None = None,
    ) -> None:
        """Before a push: the device's replica is of this server's epoch and
        not ahead of it. Raises EpochChanged or ServerBehind: the workstation
        loads the data again (and tells its number blocks again) before it
        pushes, so that no operation is refused for what a restore forgot."""
        with self.engine.connect() as conn:
            ours = str(conn.execute(select(meta.c.value).where(meta.c.key == "epoch")).scalar_one())
            if epoch != ours:
                raise EpochChanged({"epoch": ours})
            head = int(
                conn.execute(
                    select(counters.c.value).where(counters.c.name == CHANGE_SEQ)
                ).scalar_one()
            )
            behind = self._behind(conn, device_id, cursor, head, mark, confirmed)
            if behind is None and newest_lease is not None:
                granted = conn.execute(
                    select(leases.c.device_id).where(leases.c.lease_id == newest_lease)
                ).scalar()
                if granted != device_id:  # a lease this server has no record of granting
                    behind = {
                        "cursor": cursor,
                        "head": head,
                        "device_last_seq": self.device_last_seq(conn, device_id),
                        "reason": "lease_lost",
                    }
        if behind is not None:
            raise ServerBehind(behind)

    def _behind(
        self,
        conn: Connection,
        device_id: str,
        cursor: int,
        head: int,
        mark: str | None,
        confirmed: int | None,
    ) -> dict[str, Any] | None:
        """What shows this server behind the device's replica, or None."""
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

    def audit_behind(self, device_id: str, clerk_id: str, found: dict[str, Any]) -> None:
        """The audit trail keeps every workstation that found this server
        behind its replica: the sign of a restore nobody announced."""
        with writer(self.engine) as conn, conn.begin():
            conn.execute(
                insert(audit).values(
                    at=utc_now(),
                    clerk_id=clerk_id,
                    device_id=device_id,
                    action="server_behind",
                    target=str(found.get("reason")),
                    outcome="detected",
                    detail=to_json(found),
                )
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
