"""The audit trail and the op log as hash chains.

Each record of ``audit`` and of ``ops`` carries the hash of the record before
it in its chain (``prev_hash``) and its own (``hash``): SHA-256 over the
previous hash and the record's fields, serialised canonically (a JSON list in
the order of ``AUDIT_FIELDS`` / ``OPS_FIELDS``). An edited record no longer
matches its hash; a removed one leaves the next record's ``prev_hash`` naming
a hash nobody has; records removed at the end leave the chain short of its
head. ``workstation admin verify-audit`` (``server.verify``) checks all three.

The head of each chain (its last position and hash) is one row of
``chain_heads``. A writer takes it under a lock (the row's, on PostgreSQL: the
UPDATE of the row holds it to the commit; SQLite's writers are one at a time)
in the transaction that writes the records, so several server processes and
threads extend one line, never a fork. Audit records are numbered by their
``audit_id``; ops by ``chain_seq``. The push takes the ops head once a batch
(``SyncService._write_log``), after the change-log head, and hashes the
batch's records in one go.

The serialisation is part of the schema: revision 0006 chained the records
made before it with a copy of it, so a change here needs a revision that
chains again.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.engine import Connection

from .db import audit, chain_heads, utc_now

GENESIS = "0" * 64  # the "previous hash" of each chain's first record
AUDIT = "audit"
OPS = "ops"
AUDIT_FIELDS = (
    "audit_id",
    "at",
    "clerk_id",
    "session",
    "device_id",
    "operator",
    "action",
    "target",
    "outcome",
    "detail",
)
OPS_FIELDS = (
    "chain_seq",
    "op_id",
    "device_id",
    "client_seq",
    "kind",
    "args_hash",
    "payload",
    "clerk_id",
    "client_at",
    "hlc",
    "applied_at",
    "pushed_by",
    "session",
    "status",
    "code",
    "params",
    "result",
    "effects",
    "change_seq",
)
# An op's signature (domain.signing), in its record after OPS_FIELDS. Hashed
# only when the op carries one: the records of ops made before workstations
# signed hash as they always did.
SIGNATURE_FIELDS = ("key_id", "signature")
SESSION_REF_CHARS = 16

# who runs `workstation admin` (set by the command for its run): every audit
# record written meanwhile names them
OPERATOR: ContextVar[str | None] = ContextVar("operator", default=None)


def record_hash(prev_hash: str, values: Sequence[Any]) -> str:
    """The hash of a record of ``values`` (str, int or None) after ``prev_hash``."""
    text = json.dumps([prev_hash, *values], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class EntriesHash:
    """SHA-256 of change-log entries (table, key, row JSON), as the JSON list
    of them, taken one at a time (a bulk load's may not fit in memory)."""

    def __init__(self) -> None:
        self.count = 0
        self._digest = hashlib.sha256(b"[")

    def add(self, entry: Sequence[Any]) -> None:
        text = json.dumps(list(entry), ensure_ascii=False, separators=(",", ":"))
        self._digest.update((b"," if self.count else b"") + text.encode())
        self.count += 1

    def hexdigest(self) -> str | None:
        """None for no entries."""
        if not self.count:
            return None
        done = self._digest.copy()
        done.update(b"]")
        return done.hexdigest()


def effects_hash(entries: Iterable[Sequence[Any]]) -> str | None:
    """What an op wrote, as its change-log entries (table, key, row JSON) in
    order: kept in its op-log record (``effects``), so the ledger and the
    change log cannot be edited together unseen. None: it wrote nothing."""
    digest = EntriesHash()
    for entry in entries:
        digest.add(entry)
    return digest.hexdigest()


def session_ref(token: str) -> str:
    """How the trail names a session: a prefix of its token's hash (the
    sessions table's key), never the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:SESSION_REF_CHARS]


def os_operator(name: str | None = None) -> str:
    """The operator of an admin command: the OS user running it, and the name
    given with ``--operator``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a container)
        user = f"uid {os.getuid()}"
    return f"{name} (OS user {user})" if name else user


@contextmanager
def acting(operator: str) -> Iterator[None]:
    """Audit records written inside name ``operator``."""
    reset = OPERATOR.set(operator)
    try:
        yield
    finally:
        OPERATOR.reset(reset)


def append_audit(
    conn: Connection,
    *,
    clerk_id: str | None,
    device_id: str | None,
    action: str,
    target: str | None,
    outcome: str,
    detail: str | None = None,
    session: str | None = None,
    operator: str | None = None,
) -> int:
    """One audit record at the head of the chain, in ``conn``'s transaction
    (a writer's: the head stays locked until it ends). Returns its id."""
    seq, prev = conn.execute(
        update(chain_heads)
        .where(chain_heads.c.chain == AUDIT)
        .values(seq=chain_heads.c.seq + 1)
        .returning(chain_heads.c.seq, chain_heads.c.hash)
    ).one()
    values: dict[str, Any] = {
        "audit_id": int(seq),
        "at": utc_now(),
        "clerk_id": clerk_id,
        "session": session,
        "device_id": device_id,
        "operator": operator if operator is not None else OPERATOR.get(),
        "action": action,
        "target": target,
        "outcome": outcome,
        "detail": detail,
    }
    digest = record_hash(prev, [values[f] for f in AUDIT_FIELDS])
    conn.execute(insert(audit).values(**values, prev_hash=prev, hash=digest))
    conn.execute(update(chain_heads).where(chain_heads.c.chain == AUDIT).values(hash=digest))
    return int(seq)


def op_hash_values(values: Sequence[Any], key_id: str | None, signature: str | None) -> list[Any]:
    """What an op's record hash covers: its ``OPS_FIELDS`` values, and its
    signature if it has one (``SIGNATURE_FIELDS``)."""
    return [*values, key_id, signature] if key_id is not None else list(values)


def chain_rows(
    first_seq: int,
    prev_hash: str,
    rows: Iterable[Sequence[Any]],
    signatures: Iterable[tuple[str | None, str | None]],
) -> tuple[list[tuple[Any, ...]], str]:
    """Records of ``OPS_FIELDS`` without their position (``rows``), and
    their signatures, placed from ``first_seq`` after ``prev_hash``: each
    with its position first, then its signature, its previous hash and hash
    last; and the last hash."""
    chained: list[tuple[Any, ...]] = []
    for seq, (row, (key_id, signature)) in enumerate(
        zip(rows, signatures, strict=True), start=first_seq
    ):
        values = (seq, *row)
        digest = record_hash(prev_hash, op_hash_values(values, key_id, signature))
        chained.append((*values, key_id, signature, prev_hash, digest))
        prev_hash = digest
    return chained, prev_hash
