"""Live status and operator visibility (issue 15): the audit trail, VerifyPayment's
per-payment rate limit, the workers' heartbeats, and the indexes of GetPaymentStats and
ListCallbackDeliveries.

Cost on a live MariaDB: three new, empty tables; three secondary indexes added online
(ALGORITHM=INPLACE, LOCK=NONE: reads and writes go on while they are built; on a
10-million-row payments table expect minutes of I/O, no blocking). PostgreSQL builds the
indexes holding a write lock on the table for their duration (on a large table, plan a
quiet moment, or apply `db migrate --sql` by hand with CREATE INDEX CONCURRENTLY).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from payments_svc.db.tables import Key

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen copies of the types as of this revision (tables.py may change later).
Id = sa.BigInteger().with_variant(mysql.BIGINT(unsigned=True), "mysql").with_variant(sa.Integer(), "sqlite")
RefId = sa.BigInteger().with_variant(mysql.BIGINT(unsigned=True), "mysql")
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")
_TABLE = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

INDEXES = (
    ("idx_payments_caller_created", "payments",
     ["caller_service", "created_at", "status", "currency", "amount_cents", "refunded_cents"]),
    ("idx_payments_caller_customer", "payments", ["caller_service", "customer_ref", "created_at"]),
    ("idx_callback_deliveries_caller_status", "callback_deliveries", ["caller_service", "status", "id"]),
)


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("occurred_at", Timestamp, nullable=False),
        sa.Column("actor_service", Key(128), nullable=False),
        sa.Column("actor_key_id", sa.String(64), nullable=False),
        sa.Column("action", Key(64), nullable=False),
        sa.Column("target_type", Key(32), nullable=False),
        sa.Column("target_id", Key(255), nullable=False),
        sa.Column("request_id", sa.String(255), nullable=False),
        sa.Column("detail", sa.String(1024), nullable=False),
        sqlite_autoincrement=True,
        **_TABLE,
    )
    op.create_index("idx_audit_log_action", "audit_log", ["action", "id"])
    op.create_index("idx_audit_log_target", "audit_log", ["target_type", "target_id", "id"])
    op.create_table(
        "verify_claims",
        sa.Column("payment_id", RefId, sa.ForeignKey("payments.id", ondelete="CASCADE", name="fk_verify_claims_payment"),
                  primary_key=True, autoincrement=False),
        sa.Column("verified_at", Timestamp, nullable=False),
        **_TABLE,
    )
    op.create_table(
        "worker_heartbeats",
        sa.Column("worker", Key(64), primary_key=True),
        sa.Column("last_success_at", Timestamp, nullable=False),
        sa.Column("backlog", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("detail", sa.String(1024), nullable=False, server_default=sa.text("''")),
        **_TABLE,
    )
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_table("worker_heartbeats")
    op.drop_table("verify_claims")
    op.drop_table("audit_log")
