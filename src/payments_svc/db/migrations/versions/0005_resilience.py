"""Quotas per caller service (issue 12): caller_limits, one row per service that
`payments-svc keys limits` set limits for (NULL columns: the configured default).

Cost on a live database: a new, empty table; nothing else is touched, so the previous
release runs on this schema unchanged (it never reads the table).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from payments_svc.db.tables import Key

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "caller_limits",
        sa.Column("service_name", Key(128), primary_key=True),
        sa.Column("create_rps", sa.Double),
        sa.Column("create_burst", sa.Integer),
        sa.Column("read_rps", sa.Double),
        sa.Column("read_burst", sa.Integer),
        sa.Column("max_open_payments", sa.Integer),
        sa.Column("updated_at", sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql"), nullable=False),
        mysql_engine="InnoDB", mysql_charset="utf8mb4", mysql_collate="utf8mb4_bin",
    )


def downgrade() -> None:
    op.drop_table("caller_limits")
