"""Alembic's environment for the central database.

This directory is not a Python package: Alembic reads ``env.py`` and the
revisions in ``versions/`` as files (package data of ``server``). It is
configured in code by ``server.migrate`` (no alembic.ini), which runs it with
an open connection, inside the transaction that also takes the migration lock,
so a migration applies completely or not at all (PostgreSQL and SQLite both
have transactional DDL). SQL-script ("offline") mode is not offered: a site
migrates with ``workstation admin --db URL migrate``.
"""

from alembic import context

from server.db import metadata

connection = context.config.attributes.get("connection")
if context.is_offline_mode() or connection is None:
    raise RuntimeError("the central database is migrated with `workstation admin --db URL migrate`")

context.configure(
    connection=connection,
    # only for comparing (tests/test_central_migrations.py); revisions are
    # written by hand, never generated at run time
    target_metadata=metadata,
    # SQLite alters a table by copying it: op.batch_alter_table in revisions
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
