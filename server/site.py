"""Site-wide settings an administrator changes: the hospital's policy, and
a new epoch after a restore. Each change is audited in its transaction
(``server.chain``)."""

from __future__ import annotations

import json

from sqlalchemy import Engine, insert, select, update

from domain.state import Policy

from .chain import append_audit
from .db import counters, epoch_jump, load_policy, meta, new_epoch, writer


def save_policy(engine: Engine, policy: Policy) -> None:
    """Set the hospital's policy; audited with what changed (old, new)."""
    with writer(engine) as conn, conn.begin():
        before = load_policy(conn).as_dict()
        value = json.dumps(policy.as_dict())
        if conn.execute(select(meta.c.key).where(meta.c.key == "policy")).first() is None:
            conn.execute(insert(meta).values(key="policy", value=value))
        else:
            conn.execute(update(meta).where(meta.c.key == "policy").values(value=value))
        changed = {k: [before.get(k), v] for k, v in policy.as_dict().items() if before.get(k) != v}
        append_audit(
            conn,
            clerk_id=None,
            device_id=None,
            action="set_policy",
            target=",".join(changed),
            outcome="ok",
            detail=json.dumps(changed),
        )


def start_new_epoch(engine: Engine) -> str:
    """After restoring the database from a backup: workstations see a new epoch,
    re-bootstrap, tell their number blocks again and push again what the
    backup lost. Number counters jump forward, as a restored counter may be
    behind numbers handed out: by one to ten million, drawn from the new
    epoch, so that two restores of one backup do not jump to the same place
    (blocks granted after each would collide)."""
    epoch = new_epoch()
    with writer(engine) as conn, conn.begin():
        conn.execute(update(meta).where(meta.c.key == "epoch").values(value=epoch))
        conn.execute(
            update(counters)
            .where(counters.c.name.like("series:%"))
            .values(value=counters.c.value + epoch_jump(epoch))
        )
        append_audit(
            conn, clerk_id=None, device_id=None, action="new_epoch", target=epoch, outcome="ok"
        )
    return epoch
