"""Alembic's environment, driven by payments_svc.db.migrate: it passes an open
connection (online: `db migrate`, `db downgrade`) or a database URL and dialect options
(offline: `db migrate --sql`) in config.attributes."""

from __future__ import annotations

from alembic import context

from payments_svc.db.tables import metadata

config = context.config

if context.is_offline_mode():
    context.configure(
        url=config.attributes["url"],
        dialect_opts=config.attributes.get("dialect_opts", {}),
        target_metadata=metadata,
        literal_binds=True,
    )
else:
    # The caller holds the migration lock in the connection's transaction and commits it.
    context.configure(connection=config.attributes["connection"], target_metadata=metadata)

with context.begin_transaction():
    context.run_migrations()
