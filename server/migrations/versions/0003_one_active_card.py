"""A patient holds at most one active card, held by the database.

Pushes of different workstations are applied side by side on PostgreSQL
(``server.sync_service``): two windows issuing a card to one patient at the
same moment would both find no active card. With this index the second
insert fails, the server decides that op again, sees the first card and
refuses it (``patient_has_active_card``), as if they had come one after the
other. A database that already holds a patient with two active cards is
refused, with the patients named, before anything changes.

Frozen: written out here, never generated from ``server.db``.

Revision ID: 0003_one_active_card
Revises: 0002_leases_and_shifts
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_one_active_card"
down_revision = "0002_leases_and_shifts"
branch_labels = None
depends_on = None

ACTIVE = sa.text("status = 'active'")


def upgrade() -> None:
    twice = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT patient_id FROM cards WHERE status = 'active' "
                "GROUP BY patient_id HAVING COUNT(*) > 1 ORDER BY patient_id LIMIT 10"
            )
        )
        .scalars()
        .all()
    )
    if twice:
        raise RuntimeError(
            "patients with more than one active card (cancel all but one with cancel_card, "
            f"then migrate again): {', '.join(twice)}"
        )
    op.create_index(
        "cards_one_active",
        "cards",
        ["patient_id"],
        unique=True,
        sqlite_where=ACTIVE,
        postgresql_where=ACTIVE,
    )
