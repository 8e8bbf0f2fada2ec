"""``workstation admin verify-audit``: the audit trail, the op log and the
ledger prove themselves, or the first broken record is named.

Checked, in one consistent read of the database:

- the audit chain and the op-log chain (``server.chain``): each record's
  previous hash is the hash of the record before it (else one was removed,
  added or reordered), its hash is that of its content (else it was edited),
  and the last record is the chain's head (else records at the end were
  removed);
- what each op wrote: its change-log entries hash to the ``effects`` its
  chained record keeps (else the change log was edited);
- who made each applied op: its signature is that of a key the clerk it names
  registered on its device (``domain.signing``), or it was made before the
  device signed ops. Unlike a chain, a signature cannot be made again by
  whoever rewrites the database: only the clerk's workstation holds the key;
- the ledger against the op log: every transfer is the one its change-log
  entry holds, written by an op the log keeps as applied (or loaded in bulk,
  as an audit record fingerprinting those entries says), moves a positive
  amount between two accounts, and every transfer an op wrote is there.

A chain proves its records unchanged since they were chained; whoever can
rewrite the whole database can rewrite a chain too. Noting the heads this
command prints somewhere else (a ticket, a paper log) makes that visible.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.engine import Connection

from domain.operation import Operation, args_hash
from domain.signing import signature_valid

from .chain import (
    AUDIT,
    AUDIT_FIELDS,
    GENESIS,
    OPS,
    OPS_FIELDS,
    EntriesHash,
    op_hash_values,
    record_hash,
)
from .db import audit, chain_heads, clerk_keys, devices, is_sqlite, ops, transfers

APPLIED = ("applied", "applied_modified")
# audit records that vouch for change-log entries no op wrote
LOADS = ("bulk_load", "chain_start")
BATCH = 5_000


@dataclass(frozen=True)
class Problem:
    table: str
    record: str
    what: str

    def __str__(self) -> str:
        return f"{self.table} {self.record}: {self.what}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    audit_records: int = 0
    ops: int = 0
    transfers: int = 0
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.problems

    def add(self, table: str, record: Any, what: str) -> None:
        self.problems.append(Problem(table, str(record), what))


@dataclass(frozen=True)
class _Load:
    """Change-log entries (``op_id`` NULL) in ``first``..``last`` an audit record vouches for."""

    audit_id: int
    first: int
    last: int
    entries: int
    sha256: str | None


def verify_audit(engine: Engine) -> Report:
    report = Report()
    conn = engine.connect()
    if not is_sqlite(conn):
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
    try:
        with conn.begin():
            report.heads = {
                row.chain: (int(row.seq), row.hash) for row in conn.execute(select(chain_heads))
            }
            if set(report.heads) != {AUDIT, OPS}:
                report.add("chain_heads", ", ".join(sorted(report.heads)), "a chain's head is gone")
                return report
            loads = _verify_audit_chain(conn, report)
            recorded = _verify_ops_chain(conn, report)
            _verify_effects(conn, report, recorded)
            _verify_loads(conn, report, loads)
            _verify_ledger(conn, report, recorded, loads)
    finally:
        conn.close()
    return report


def _rows(conn: Connection, query: Any) -> Iterator[Any]:
    result = conn.execution_options(yield_per=BATCH).execute(query)
    for partition in result.partitions():
        yield from partition


def _link(
    report: Report, table: str, name: str, prev: str, before: str, row: Any, values: list[Any]
) -> None:
    """One record of a chain: linked to the one before (``prev``, the hash
    ``before`` names) and matching its hash."""
    if row.prev_hash != prev:
        report.add(
            table,
            name,
            f"its previous hash is not that of the record before it ({before}): a record "
            "between them was removed or added, or the records were reordered",
        )
    elif record_hash(prev, values) != row.hash:
        report.add(table, name, "its content does not match its hash: the record was edited")


def _head(report: Report, table: str, chain: str, last: int, last_hash: str) -> None:
    seq, head_hash = report.heads[chain]
    if (seq, head_hash) != (last, last_hash):
        report.add(
            table,
            f"{last} (last)",
            f"the chain ends here but its head is record {seq}: records after it were removed "
            "(or the head was changed)",
        )


def _verify_audit_chain(conn: Connection, report: Report) -> list[_Load]:
    loads: list[_Load] = []
    prev, before, last = GENESIS, "the start", 0
    for row in _rows(conn, select(audit).order_by(audit.c.audit_id)):
        report.audit_records += 1
        name = str(row.audit_id)
        if row.hash is None:
            report.add("audit", name, "not chained (no hash): written around the chain")
            continue
        values = [getattr(row, f) for f in AUDIT_FIELDS]
        count = len(report.problems)
        _link(report, "audit", name, prev, before, row, values)
        if row.action in LOADS and row.outcome == "ok" and len(report.problems) == count:
            found = json.loads(row.detail)
            loads.append(
                _Load(
                    row.audit_id,
                    int(found["first_seq"]),
                    int(found["last_seq"]),
                    int(found["entries"]),
                    found["sha256"],
                )
            )
        prev, before, last = row.hash, f"audit {name}", int(row.audit_id)
    _head(report, "audit", AUDIT, last, prev)
    return loads


def _verify_ops_chain(conn: Connection, report: Report) -> dict[str, tuple[str, str | None]]:
    """Walks the op log's chain; returns each op's status and effects hash."""
    recorded: dict[str, tuple[str, str | None]] = {}
    keys = {
        row.key_id: (row.clerk_id, row.device_id, bytes.fromhex(row.public_key))
        for row in conn.execute(select(clerk_keys))
    }
    unsigned = dict(conn.execute(select(devices.c.device_id, devices.c.unsigned_through)).all())
    prev, before, last = GENESIS, "the start", 0
    query = select(ops).order_by(ops.c.chain_seq.is_(None), ops.c.chain_seq)
    for row in _rows(conn, query):
        report.ops += 1
        recorded[row.op_id] = (row.status, row.effects)
        name = f"{row.op_id} (#{row.chain_seq})"
        if row.hash is None or row.chain_seq is None:
            report.add("ops", row.op_id, "not chained (no hash): written around the chain")
            continue
        values = op_hash_values([getattr(row, f) for f in OPS_FIELDS], row.key_id, row.signature)
        _link(report, "ops", name, prev, before, row, values)
        if row.status in APPLIED:
            problem = _unsigned(row, keys, unsigned)
            if problem:
                report.add("ops", name, problem)
        prev, before, last = row.hash, f"ops #{row.chain_seq}", int(row.chain_seq)
    _head(report, "ops", OPS, last, prev)
    return recorded


def _unsigned(
    row: Any, keys: dict[str, tuple[str, str, bytes]], unsigned: dict[str, int | None]
) -> str | None:
    """Why the applied op of ``row`` is not proven made by the clerk it names."""
    if row.key_id is None:
        through = unsigned.get(row.device_id)
        if through is None or row.client_seq <= through:  # made before its device signed
            return None
        return f"applied without a signature, as clerk {row.clerk_id}"
    key = keys.get(row.key_id)
    if key is None:
        return f"signed with key {row.key_id}, which no clerk registered"
    if key[:2] != (row.clerk_id, row.device_id):
        return (
            f"signed with a key of clerk {key[0]} on device {key[1]}, not of clerk {row.clerk_id}"
        )
    op = Operation.model_construct(
        op_id=row.op_id,
        kind=row.kind,
        args_hash=row.args_hash,
        clerk_id=row.clerk_id,
        at=row.client_at,
        hlc=row.hlc,
        signature=row.signature,
    )
    if not signature_valid(key[2], op, row.device_id):
        return f"its signature is not clerk {row.clerk_id}'s over what it records"
    if args_hash(row.kind, row.payload) != row.args_hash:
        return f"its arguments are not those clerk {row.clerk_id} signed"
    return None


def _verify_effects(
    conn: Connection, report: Report, recorded: dict[str, tuple[str, str | None]]
) -> None:
    """Each op's change-log entries against the ``effects`` its record keeps."""
    seen: set[str] = set()

    def check(op_id: str, digest: EntriesHash, first_seq: int) -> None:
        seen.add(op_id)
        if op_id not in recorded:
            report.add(
                "change_log",
                first_seq,
                f"written by op {op_id}, which the op log does not have",
            )
        elif recorded[op_id][1] != digest.hexdigest():
            report.add(
                "ops",
                op_id,
                "its change-log entries differ from what it recorded writing "
                "(the change log or the rows in it were edited)",
            )

    query = text(
        "SELECT op_id, seq, table_name, row_key, row FROM change_log "
        "WHERE op_id IS NOT NULL ORDER BY op_id, seq"
    )
    current: str | None = None
    digest, first_seq = EntriesHash(), 0
    for op_id, seq, table, key, row in _rows(conn, query):
        if op_id != current:
            if current is not None:
                check(current, digest, first_seq)
            current, digest, first_seq = op_id, EntriesHash(), seq
        digest.add((table, key, row))
    if current is not None:
        check(current, digest, first_seq)
    for op_id, (_, effects) in recorded.items():
        if effects is not None and op_id not in seen:
            report.add("ops", op_id, "the change-log entries it recorded writing are gone")


def _verify_loads(conn: Connection, report: Report, loads: list[_Load]) -> None:
    for load in loads:
        digest = EntriesHash()
        query = text(
            "SELECT table_name, row_key, row FROM change_log "
            "WHERE op_id IS NULL AND seq BETWEEN :first AND :last ORDER BY seq"
        ).bindparams(first=load.first, last=load.last)
        for entry in _rows(conn, query):
            digest.add(tuple(entry))
        if (digest.count, digest.hexdigest()) != (load.entries, load.sha256):
            report.add(
                "change_log",
                f"{load.first}-{load.last}",
                f"the entries loaded in bulk differ from what audit record {load.audit_id} "
                "fingerprinted",
            )


def _verify_ledger(
    conn: Connection,
    report: Report,
    recorded: dict[str, tuple[str, str | None]],
    loads: list[_Load],
) -> None:
    """Every transfer against the change-log entry that wrote it and the op
    (or bulk load) behind it; every transfer an op wrote is there."""
    starts = [load.first for load in loads]
    columns = [c.name for c in transfers.c]
    listed = ", ".join(f"t.{c}" for c in columns)
    query = text(
        f"SELECT {listed}, c.seq, c.op_id, c.row FROM transfers t "
        "LEFT JOIN change_log c ON c.table_name = 'transfers' AND c.row_key = t.transfer_id "
        "ORDER BY t.transfer_id, c.seq"
    )
    rows: dict[str, tuple[dict[str, Any], Any, Any, Any]] = {}

    def check(key: str, entry: tuple[dict[str, Any], Any, Any, Any]) -> None:
        report.transfers += 1
        row, seq, op_id, written = entry
        if seq is None:
            report.add("transfers", key, "no change-log entry wrote it: written around the ops")
            return
        if written is None or json.loads(written) != row:
            was = json.loads(written) if written else {}
            diff = ", ".join(
                f"{c} {row.get(c)!r} (written {was.get(c)!r})"
                for c in columns
                if row.get(c) != was.get(c)
            )
            report.add("transfers", key, f"differs from what wrote it (change_log {seq}): {diff}")
        if op_id is not None:
            status = recorded.get(op_id, ("missing", None))[0]
            if status not in APPLIED:
                report.add(
                    "transfers",
                    key,
                    f"written by op {op_id}, which the op log keeps as {status}, not applied",
                )
        else:
            at = bisect.bisect_right(starts, seq) - 1
            if at < 0 or seq > loads[at].last:
                report.add("transfers", key, "no op wrote it and no audited bulk load holds it")
        if not (isinstance(row["amount_fen"], int) and row["amount_fen"] > 0) or (
            row["debit_account"] == row["credit_account"]
        ):
            report.add(
                "transfers",
                key,
                "does not move a positive amount from one account to another",
            )

    previous: str | None = None
    for found in _rows(conn, query):
        values = dict(zip(columns, found[: len(columns)], strict=True))
        key = values["transfer_id"]
        if previous is not None and key != previous:
            check(previous, rows.pop(previous))
        rows[key] = (values, *found[len(columns) :])  # the last entry of the key wins
        previous = key
    if previous is not None:
        check(previous, rows.pop(previous))
    missing = text(
        "SELECT c.seq, c.row_key, c.op_id FROM change_log c WHERE c.table_name = 'transfers' "
        "AND c.row IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM transfers t WHERE t.transfer_id = c.row_key) ORDER BY c.seq"
    )
    for seq, key, op_id in conn.execute(missing):
        report.add(
            "transfers",
            key,
            f"missing: {'op ' + op_id if op_id else 'a bulk load'} wrote it (change_log {seq})",
        )
