"""Provider accounts per caller service (issue 13): the provider_accounts table, and the
account each payment was created with (payments.provider_account_id, NULL: the default
account from the environment, which every existing payment keeps).

Cost on a live database: a new, empty table, and a nullable column without a default
appended to payments: MariaDB 10.3+ adds it instantly (ALGORITHM=INSTANT, no copy, no
lock beyond a metadata lock), as do MySQL 8 and PostgreSQL. There is deliberately no
foreign key to provider_accounts: adding one would copy payments on MariaDB.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from payments_svc.db.tables import Key

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(mysql.BIGINT(unsigned=True), "mysql").with_variant(sa.Integer(), "sqlite")
RefId = sa.BigInteger().with_variant(mysql.BIGINT(unsigned=True), "mysql")
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")


def upgrade() -> None:
    op.create_table(
        "provider_accounts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("caller_service", Key(128), nullable=False),
        sa.Column("provider", sa.SmallInteger(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("settings_json", sa.Text(), nullable=False),
        sa.Column("secret_key", sa.Text(), nullable=False),
        sa.Column("webhook_secret", sa.Text()),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        mysql_engine="InnoDB", mysql_charset="utf8mb4", mysql_collate="utf8mb4_bin", sqlite_autoincrement=True,
    )
    op.create_index("idx_provider_accounts_caller", "provider_accounts", ["caller_service", "provider"])
    op.add_column("payments", sa.Column("provider_account_id", RefId))


def downgrade() -> None:
    """Drops the accounts and forgets which payments used them: do it only once no
    payment of a caller's own account is still open (their later operations would go
    through the default account)."""
    # A plain DROP COLUMN on SQLite too (3.35+; the column has no index or constraint): a
    # batch rebuild of payments would cascade-delete every row that references it.
    op.drop_column("payments", "provider_account_id")
    op.drop_index("idx_provider_accounts_caller", table_name="provider_accounts")
    op.drop_table("provider_accounts")
