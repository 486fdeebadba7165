"""Key columns compare byte for byte on every backend (issue 17, item 4).

utf8mb4_bin is a PAD SPACE collation: on MySQL/MariaDB request_id "a" and "a " were one
idempotency key, and a Stellar memo "1-b9c605f " found payment 1-b9c605f. The key columns
get the server's NO PAD binary collation: MariaDB utf8mb4_nopad_bin, MySQL 8
utf8mb4_0900_bin. Going from PAD SPACE to NO PAD only makes fewer values equal, so no
unique key can be violated by it.

Cost on a live MariaDB (10.6+, measured on 10.11):
* the columns of secondary indexes and the unindexed ones: ALGORITHM=NOCOPY, LOCK=NONE.
  No table copy; the indexes on the changed columns are rebuilt online while reads and
  writes go on.
* provider_objects.object_id and stellar_cursors.account are in their table's primary
  key: MariaDB can only change them by copying the table (ALGORITHM=COPY, LOCK=SHARED):
  reads go on, writes to that table wait until the copy ends. stellar_cursors holds one
  row per receiving account; provider_objects one per Stripe object (deployment.md,
  Migrations and upgrades, says what to expect).
MySQL 8 chooses the algorithm itself (no clause): expect a table copy that blocks writes.

PostgreSQL compares VARCHAR byte for byte already (deterministic collations), but CHAR(n)
ignores trailing spaces: its two CHAR(64) key columns become VARCHAR(64) (a rewrite of
those tables, which exist on PostgreSQL only from this release on). SQLite's default
BINARY collation is byte-exact: nothing to do.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# (column, MySQL type, NULL allowed) of every key column, per table, as of this revision.
KEY_COLUMNS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "payments": (
        ("request_id", "VARCHAR(128)", False),
        ("caller_service", "VARCHAR(128)", False),
        ("resource_type", "VARCHAR(128)", False),
        ("resource_id", "VARCHAR(255)", False),
        ("provider_payment_id", "VARCHAR(255)", True),
        ("provider_subscription_id", "VARCHAR(255)", True),
        ("provider_callback_hash", "VARCHAR(64)", False),
    ),
    "payment_events": (("provider_event_id", "VARCHAR(255)", True),),
    "payment_callbacks": (
        ("provider", "VARCHAR(32)", False),
        ("callback_hash", "VARCHAR(128)", False),
        ("provider_event_id", "VARCHAR(255)", True),
        ("dedup_key", "VARCHAR(255)", True),
    ),
    "callback_deliveries": (
        ("delivery_id", "VARCHAR(64)", False),
        ("caller_service", "VARCHAR(128)", False),
        ("lease_owner", "VARCHAR(64)", True),
    ),
    "signing_secrets": (("caller_service", "VARCHAR(128)", False),),
    "stellar_cursors": (("account", "VARCHAR(56)", False), ("paging_token", "VARCHAR(20)", False)),
    "stellar_operations": (
        ("account", "VARCHAR(56)", False),
        ("operation_id", "VARCHAR(20)", True),
        ("transaction_hash", "CHAR(64)", True),
        ("memo", "VARCHAR(64)", True),
    ),
    "refunds": (("request_id", "VARCHAR(128)", True), ("provider_refund_id", "VARCHAR(255)", True)),
    "provider_objects": (("object_id", "VARCHAR(255)", False),),
    "api_keys": (("service_name", "VARCHAR(128)", False), ("key_prefix", "VARCHAR(16)", False), ("key_hash", "CHAR(64)", False)),
}
# Tables whose primary key has a key column: MariaDB must copy them.
COPIED_ON_MARIADB = ("stellar_cursors", "provider_objects")
POSTGRESQL_CHAR_KEYS = (("api_keys", "key_hash", False), ("stellar_operations", "transaction_hash", True))


def upgrade() -> None:
    dialect = op.get_context().dialect
    if dialect.name == "mysql":
        _set_key_collation("utf8mb4_nopad_bin" if dialect.is_mariadb else "utf8mb4_0900_bin", dialect.is_mariadb)
    elif dialect.name == "postgresql":
        for table, column, nullable in POSTGRESQL_CHAR_KEYS:
            op.alter_column(table, column, type_=sa.String(64), existing_type=sa.CHAR(64), existing_nullable=nullable)


def downgrade() -> None:
    """Back to PAD SPACE. Fails on a unique key if keys differing only in trailing spaces
    were created meanwhile ("a" and "a "): those rows must be resolved by hand first."""
    dialect = op.get_context().dialect
    if dialect.name == "mysql":
        _set_key_collation("utf8mb4_bin", dialect.is_mariadb)
    elif dialect.name == "postgresql":
        for table, column, nullable in POSTGRESQL_CHAR_KEYS:
            op.alter_column(table, column, type_=sa.CHAR(64), existing_type=sa.String(64), existing_nullable=nullable)


def _set_key_collation(collation: str, mariadb: bool) -> None:
    for table, columns in KEY_COLUMNS.items():
        changes = [
            f"MODIFY {name} {mysql_type} COLLATE {collation} {'NULL' if nullable else 'NOT NULL'}"
            for name, mysql_type, nullable in columns
        ]
        if mariadb:
            changes.append("ALGORITHM=COPY, LOCK=SHARED" if table in COPIED_ON_MARIADB else "ALGORITHM=NOCOPY, LOCK=NONE")
        op.execute(f"ALTER TABLE {table} " + ", ".join(changes))
