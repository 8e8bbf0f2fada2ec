"""The central store's tables (SQLAlchemy Core) and engine set-up.

Replicated tables are generated from the domain's row models, so the server,
the change log and every replica hold rows of one shape. Server-only tables
hold clerks, devices, sessions, the processed operations (which are also the
audit record of every command), the change log and the number blocks.

These definitions are what the queries use. The database itself is made and
changed by the Alembic revisions in ``server/migrations`` (``server.migrate``);
a test checks that the migrated schema equals ``metadata``, so a change here
needs a new revision.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Connection

from domain.areas import ROW_TYPES
from domain.rows import Row, columns_of
from domain.state import Policy

metadata = MetaData()


def _replicated(row_type: type[Row]) -> Table:
    cols: list[Any] = []
    for name, py_type in columns_of(row_type):
        is_key = name == row_type.key
        col_type = BigInteger() if py_type is int else (String(64) if is_key else Text())
        cols.append(Column(name, col_type, primary_key=is_key, nullable=not is_key))
    table = Table(row_type.table, metadata, *cols)
    for index_name, index_cols, unique in row_type.indexes:
        Index(index_name, *(table.c[c] for c in index_cols), unique=unique)
    return table


REPLICATED: dict[str, Table] = {rt.table: _replicated(rt) for rt in ROW_TYPES}
patients = REPLICATED["patients"]
patient_aliases = REPLICATED["patient_aliases"]
cards = REPLICATED["cards"]
transfers = REPLICATED["transfers"]
# One active card a patient, kept by the server only (a replica holds pending
# cards): pushes of different workstations may be decided at the same moment.
Index(
    "cards_one_active",
    cards.c.patient_id,
    unique=True,
    sqlite_where=cards.c.status == "active",
    postgresql_where=cards.c.status == "active",
)

clerks = Table(
    "clerks",
    metadata,
    Column("clerk_id", String(40), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("roles", Text, nullable=False),  # JSON list
    Column("password_hash", Text, nullable=False),
    Column("active", Integer, nullable=False, default=1),
    Column("failed_attempts", Integer, nullable=False, default=0),
    Column("locked_until", String(40)),
    Column("created_at", String(40), nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(40), primary_key=True),
    Column("name", Text, nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("enrolled_at", String(40), nullable=False),
    Column("last_seen_at", String(40)),
    Column("active", Integer, nullable=False, default=1),
    # the last op it made before it signed ops; NULL: not said yet (0.1)
    Column("unsigned_through", BigInteger),
)

# each clerk's public signing keys, one a workstation (domain.signing)
clerk_keys = Table(
    "clerk_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("clerk_id", String(40), nullable=False),
    Column("device_id", String(40), nullable=False),
    Column("public_key", String(64), nullable=False),
    Column("registered_at", String(40), nullable=False),
    Index("clerk_keys_clerk_device", "clerk_id", "device_id"),
)

# Failed logins of a username at a workstation (server.auth): a lockout holds
# for that clerk at that workstation only; unknown usernames are counted too.
login_failures = Table(
    "login_failures",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("device_id", String(40), primary_key=True),
    Column("failed_attempts", Integer, nullable=False),
    Column("locked_until", String(40)),
)

enrollment_codes = Table(
    "enrollment_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("device_name", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("expires_at", String(40), nullable=False),
    Column("used_at", String(40)),
    Column("device_id", String(40)),
)

sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("clerk_id", String(40), nullable=False),
    Column("device_id", String(40), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("expires_at", String(40), nullable=False),
    Column("revoked", Integer, nullable=False, default=0),
)

# Every operation a workstation pushed, applied or not: the deduplication
# record (same transaction as its effects), the stored answer for a replay, and
# the audit trail of commands (who, what, when, where, outcome).
ops = Table(
    "ops",
    metadata,
    Column("op_id", String(40), primary_key=True),
    Column("device_id", String(40), nullable=False),
    Column("client_seq", BigInteger, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("args_hash", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("clerk_id", String(40), nullable=False),
    Column("client_at", String(40), nullable=False),
    Column("hlc", String(40), nullable=False),
    Column("applied_at", String(40), nullable=False),
    Column("pushed_by", String(40), nullable=False),  # the clerk whose session pushed it
    Column("status", String(20), nullable=False),
    Column("code", String(60)),
    Column("params", Text),
    Column("result", Text),
    Column("change_seq", BigInteger, nullable=False),
    # the pushing session (server.chain.session_ref), what the op wrote
    # (server.chain.effects_hash) and its place in the op log's hash chain
    Column("session", String(40)),
    Column("effects", String(64)),
    # (NULL only in a record written around the chain, which verify-audit names)
    Column("chain_seq", BigInteger),
    Column("prev_hash", String(64)),
    Column("hash", String(64)),
    # the clerk's signature (domain.signing); NULL for ops made before
    # workstations signed them
    Column("key_id", String(32)),
    Column("signature", String(128)),
    UniqueConstraint("device_id", "client_seq", name="ops_device_seq"),
)
Index("ops_device_change", ops.c.device_id, ops.c.change_seq)
Index("ops_chain_seq", ops.c.chain_seq, unique=True)

change_log = Table(
    "change_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("table_name", String(40), nullable=False),
    Column("row_key", String(64), nullable=False),
    Column("row", Text),  # JSON; NULL for a deletion
    Column("op_id", String(40)),
    # random (sync.protocol.new_nonce): equal at a cursor, equal histories up
    # to it (NULL for entries written before release 0.2)
    Column("nonce", BigInteger),
)

# Named counters; the change-log head is the one every write locks, which
# serialises appends so that no reader sees seq N+1 before N.
counters = Table(
    "counters",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(40), primary_key=True),
    Column("value", Text, nullable=False),
)

# What a workstation may use on its own (domain.leases): number blocks now;
# bed pools, slot quotas and refund budgets are kinds of the same.
leases = Table(
    "leases",
    metadata,
    Column("lease_id", String(40), primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("resource", String(64), nullable=False),
    Column("device_id", String(40), nullable=False),
    Column("first", BigInteger),  # a range
    Column("last", BigInteger),
    Column("ids", Text),  # a set: JSON list
    Column("quantity", BigInteger),  # a quantity
    Column("granted_at", String(40), nullable=False),
    Column("granted_by", String(40)),  # the clerk whose session asked for it
    Column("expires_at", String(40)),
    Column("returned_at", String(40)),
)
Index("leases_device", leases.c.kind, leases.c.resource, leases.c.device_id)

# Number-block grants and numbers granted to each device in a period (a UTC
# minute, a UTC day): the lease limits (server.leases), counted here so that
# every server process sees one count, and added to in one statement.
lease_tallies = Table(
    "lease_tallies",
    metadata,
    Column("device_id", String(40), primary_key=True),
    Column("period", String(40), primary_key=True),  # "minute:2026-12-02T09:05", "day:2026-12-02"
    Column("count", BigInteger, nullable=False),
)

# Everything that is not a pushed command (those are in ``ops``): logins,
# logouts, enrolments, leases, pulls, snapshots, clerk, device and policy
# changes, admin commands. A hash chain in ``audit_id`` order (server.chain).
audit = Table(
    "audit",
    metadata,
    Column("audit_id", Integer, primary_key=True, autoincrement=True),
    Column("at", String(40), nullable=False),
    Column("clerk_id", String(40)),
    Column("device_id", String(40)),
    Column("action", String(40), nullable=False),
    Column("target", Text),
    Column("outcome", String(40), nullable=False),
    Column("detail", Text),
    Column("session", String(40)),  # server.chain.session_ref of the request's session
    Column("operator", Text),  # who ran the admin command
    Column("prev_hash", String(64)),
    Column("hash", String(64)),
)

# The head of each hash chain ("audit", "ops"): its last position and hash,
# locked by each writer of the chain until its commit (server.chain).
chain_heads = Table(
    "chain_heads",
    metadata,
    Column("chain", String(20), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

CHANGE_SEQ = "change_seq"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


WAL_CHECKPOINT_PAGES = 40_000
MMAP_BYTES = 2**31


def make_engine(url: str, *, pool_size: int | None = None) -> Engine:
    """An engine for ``sqlite:///file`` or ``postgresql://...``; PostgreSQL:
    ``pool_size`` connections kept (default 10) and as many more at peaks."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            # SQLAlchemy's recipe: let us emit BEGIN ourselves, so writers take
            # the lock up front (BEGIN IMMEDIATE) and never fail to upgrade.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            # The log is copied back into the file by a thread of its own
            # (server.checkpoint) when the pushes pause; the commit that takes
            # the log past ~160 MB does it itself only if that thread falls
            # behind or is not running (admin commands). The log is cut back to
            # 64 MB after a checkpoint, so it stays bounded on disk.
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            cursor.execute(f"PRAGMA journal_size_limit={64 * 1024 * 1024}")
            # Each pushed op runs under a savepoint, whose journal (the pages
            # the op changed, as they were) otherwise spills to a temporary
            # file: ~33,000 writes to it in a 10,000-op push, none needed
            # once it is kept in memory (it is a few pages per op).
            cursor.execute("PRAGMA temp_store=MEMORY")
            # Pages are read through a memory map instead of one read() call
            # each: -6.5% of the server's time in a 10,000-op push (4 of 4
            # paired runs). Writes still go through the log with write(), so
            # the file's integrity is as before; the price is that an I/O
            # error on the database file ends the process (SIGBUS) instead of
            # failing one request. SQLite caps the map at its build's maximum
            # (2 GiB in Debian's); pages beyond it are read as before.
            cursor.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            writer = conn.get_execution_options().get("writer", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

        return engine
    size = pool_size or 10
    return create_engine(url, pool_pre_ping=True, pool_size=size, max_overflow=size)


def load_policy(conn: Connection) -> Policy:
    """The hospital's policy: the defaults, overridden by what an admin set."""
    raw = conn.execute(select(meta.c.value).where(meta.c.key == "policy")).scalar()
    return Policy.from_dict(json.loads(raw)) if raw else Policy()


def epoch_jump(epoch: str) -> int:
    """How far the number counters jump at ``epoch``: 1,000,000 to 9,999,999."""
    digest = hashlib.sha256(epoch.encode()).digest()
    return 1_000_000 + int.from_bytes(digest[:8], "big") % 9_000_000


def new_epoch() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(4)


def writer(engine: Engine) -> Connection:
    """A connection whose transactions take the write lock up front on SQLite."""
    return engine.connect().execution_options(writer=True)
