"""SQLAlchemy Core tables: the schema at the head migration (db/migrations/). schema.sql
is its MySQL/MariaDB rendering; tests/mysql/test_schema.py proves the three agree.

A schema change is three edits: these tables, a new revision in db/migrations/versions/
(the next number, down_revision the current head, safe on a live table: deployment.md,
Migrations and upgrades, says what it costs) and schema.sql."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

metadata = sa.MetaData()

# MySQL spellings where SQLite's generic types would lose meaning (unsigned ids,
# microsecond DATETIME, LONGTEXT); SQLite gets its own INTEGER PRIMARY KEY so that
# AUTOINCREMENT applies and ids are never reused.
Id = sa.BigInteger().with_variant(mysql.BIGINT(unsigned=True), "mysql").with_variant(sa.Integer(), "sqlite")
RefId = sa.BigInteger().with_variant(mysql.BIGINT(unsigned=True), "mysql")
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")
LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql")
Status = sa.SmallInteger()


def key_collation(dialect: sa.Dialect) -> str:
    """The NO PAD binary collation of this MySQL-family server: with utf8mb4_bin (PAD
    SPACE) "a" and "a " are one key."""
    return "utf8mb4_nopad_bin" if dialect.is_mariadb else "utf8mb4_0900_bin"


class Key(sa.types.TypeDecorator):
    """A string that is compared byte for byte: idempotency keys, hashes, memos, provider
    ids, every column a lookup or a unique key compares. MySQL/MariaDB: a NO PAD binary
    collation; PostgreSQL: VARCHAR (its deterministic collations compare bytes; CHAR(n)
    would ignore trailing spaces); SQLite: BINARY, its default."""

    impl = sa.String
    cache_ok = True

    def __init__(self, length: int, *, fixed: bool = False):
        super().__init__(length)
        self.fixed = fixed

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine:
        length = self.impl.length
        if dialect.name == "mysql":
            spelling = mysql.CHAR if self.fixed else mysql.VARCHAR
            return dialect.type_descriptor(spelling(length, collation=key_collation(dialect)))
        if dialect.name == "postgresql" or not self.fixed:
            return dialect.type_descriptor(sa.String(length))
        return dialect.type_descriptor(sa.CHAR(length))


_MYSQL_TABLE = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin", "sqlite_autoincrement": True}


def _id() -> sa.Column:
    return sa.Column("id", Id, primary_key=True, autoincrement=True)


payments = sa.Table(
    "payments",
    metadata,
    _id(),
    sa.Column("request_id", Key(128), nullable=False),
    sa.Column("caller_service", Key(128), nullable=False),
    sa.Column("request_fingerprint", sa.CHAR(64), nullable=False),
    sa.Column("resource_type", Key(128), nullable=False),
    sa.Column("resource_id", Key(255), nullable=False),
    sa.Column("customer_ref", sa.String(255)),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(12), nullable=False),
    sa.Column("status", Status, nullable=False, server_default=sa.text("1")),
    sa.Column("payment_method", Status, nullable=False),
    sa.Column("payment_type", Status, nullable=False),
    sa.Column("provider", Status, nullable=False),
    sa.Column("recurring_interval", sa.String(16)),
    sa.Column("recurring_interval_count", sa.Integer),
    sa.Column("provider_payment_id", Key(255)),
    sa.Column("provider_subscription_id", Key(255)),
    sa.Column("checkout_url", sa.String(2048)),
    sa.Column("provider_callback_hash", Key(64), nullable=False),
    sa.Column("provider_callback_url", sa.String(1024), nullable=False),
    sa.Column("status_callback_url", sa.String(1024), nullable=False),
    sa.Column("success_url", sa.String(1024)),
    sa.Column("cancel_url", sa.String(1024)),
    sa.Column("refunded_cents", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("refundable_cents", sa.BigInteger, nullable=False),
    sa.Column("received_cents", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("metadata_json", LongText, nullable=False),
    sa.Column("cancel_reason", sa.String(255)),
    sa.Column("failure_reason", sa.String(1024)),
    sa.Column("create_error_code", sa.String(32)),
    sa.Column("attention_required", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("create_lease_until", Timestamp),
    sa.Column("reconcile_next_at", Timestamp),
    sa.Column("reconcile_attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("job_lease_until", Timestamp),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    # The provider account the payment was created with (provider_accounts.id); NULL: the
    # default account, from the environment. No foreign key: adding one would copy the table.
    sa.Column("provider_account_id", RefId),
    sa.UniqueConstraint("caller_service", "request_id", name="idx_payments_caller_request_id"),
    sa.UniqueConstraint("provider", "provider_callback_hash", name="idx_payments_provider_callback_hash"),
    sa.Index("idx_payments_caller_id", "caller_service", "id"),
    sa.Index("idx_payments_status_updated", "status", "updated_at"),
    sa.Index("idx_payments_reconcile", "status", "reconcile_next_at"),
    sa.Index("idx_payments_provider_payment_id", "provider", "provider_payment_id"),
    sa.Index("idx_payments_resource", "resource_type", "resource_id"),
    sa.Index("idx_payments_created_at", "created_at"),
    # GetPaymentStats: a caller's range, answered from the index alone (covering).
    sa.Index("idx_payments_caller_created", "caller_service", "created_at", "status", "currency", "amount_cents",
             "refunded_cents"),
    sa.Index("idx_payments_caller_customer", "caller_service", "customer_ref", "created_at"),
    **_MYSQL_TABLE,
)

payment_events = sa.Table(
    "payment_events",
    metadata,
    _id(),
    sa.Column("payment_id", RefId, sa.ForeignKey("payments.id", ondelete="CASCADE", name="fk_payment_events_payment"), nullable=False),
    sa.Column("event_type", sa.String(128), nullable=False),
    sa.Column("old_status", Status),
    sa.Column("new_status", Status, nullable=False),
    sa.Column("provider_event_id", Key(255)),
    sa.Column("needs_attention", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("message", sa.String(1024)),
    sa.Column("payload_json", LongText),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("idx_payment_events_payment", "payment_id", "id"),
    **_MYSQL_TABLE,
)

payment_callbacks = sa.Table(
    "payment_callbacks",
    metadata,
    _id(),
    sa.Column("payment_id", RefId, sa.ForeignKey("payments.id", ondelete="SET NULL", name="fk_payment_callbacks_payment")),
    sa.Column("provider", Key(32), nullable=False),
    sa.Column("callback_hash", Key(128), nullable=False),
    sa.Column("provider_event_id", Key(255)),
    sa.Column("dedup_key", Key(255)),
    sa.Column("signature", sa.String(1024), nullable=False),
    sa.Column("payload_json", LongText, nullable=False),
    sa.Column("status", Status, nullable=False),
    sa.Column("error", sa.String(1024)),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("provider", "dedup_key", name="idx_payment_callbacks_dedup"),
    sa.Index("idx_payment_callbacks_payment", "payment_id"),
    **_MYSQL_TABLE,
)

callback_deliveries = sa.Table(
    "callback_deliveries",
    metadata,
    _id(),
    sa.Column("delivery_id", Key(64), nullable=False),
    sa.Column("payment_id", RefId, sa.ForeignKey("payments.id", ondelete="CASCADE", name="fk_callback_deliveries_payment"), nullable=False),
    sa.Column("caller_service", Key(128), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("payment_status", Status, nullable=False),
    sa.Column("status", Status, nullable=False, server_default=sa.text("1")),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("next_attempt_at", Timestamp),
    sa.Column("lease_until", Timestamp),
    sa.Column("lease_owner", Key(64)),
    sa.Column("last_error", sa.String(1024)),
    sa.Column("last_status_code", sa.Integer),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("delivery_id", name="idx_callback_deliveries_delivery_id"),
    sa.Index("idx_callback_deliveries_due", "status", "next_attempt_at"),
    sa.Index("idx_callback_deliveries_payment", "payment_id", "id"),
    # ListCallbackDeliveries: a caller's dead (or any status's) deliveries, newest first.
    sa.Index("idx_callback_deliveries_caller_status", "caller_service", "status", "id"),
    **_MYSQL_TABLE,
)

callback_attempts = sa.Table(
    "callback_attempts",
    metadata,
    _id(),
    sa.Column(
        "callback_delivery_id",
        RefId,
        sa.ForeignKey("callback_deliveries.id", ondelete="CASCADE", name="fk_callback_attempts_delivery"),
        nullable=False,
    ),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("attempted_at", Timestamp, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("latency_ms", sa.Integer, nullable=False),
    sa.Column("error", sa.String(1024)),
    sa.UniqueConstraint("callback_delivery_id", "attempt", name="idx_callback_attempts_delivery_attempt"),
    **_MYSQL_TABLE,
)

signing_secrets = sa.Table(
    "signing_secrets",
    metadata,
    _id(),
    sa.Column("caller_service", Key(128), nullable=False),
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp),
    sa.Index("idx_signing_secrets_service", "caller_service"),
    **_MYSQL_TABLE,
)

stellar_cursors = sa.Table(
    "stellar_cursors",
    metadata,
    sa.Column("account", Key(56), primary_key=True),
    sa.Column("paging_token", Key(20), nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

stellar_operations = sa.Table(
    "stellar_operations",
    metadata,
    _id(),
    sa.Column("account", Key(56), nullable=False),
    sa.Column("operation_id", Key(20)),
    sa.Column("transaction_hash", Key(64, fixed=True)),
    sa.Column("payment_id", RefId, sa.ForeignKey("payments.id", ondelete="SET NULL", name="fk_stellar_operations_payment")),
    sa.Column("status", Status, nullable=False),
    sa.Column("from_account", sa.String(56)),
    sa.Column("asset_code", sa.String(12)),
    sa.Column("asset_issuer", sa.String(56)),
    sa.Column("amount_stroops", sa.BigInteger),
    sa.Column("overpaid_stroops", sa.BigInteger),
    sa.Column("memo_type", sa.String(8)),
    sa.Column("memo", Key(64)),
    sa.Column("needs_attention", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("error", sa.String(1024)),
    sa.Column("record_json", LongText, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint("operation_id", name="idx_stellar_operations_operation"),
    sa.Index("idx_stellar_operations_payment", "payment_id", "status"),
    sa.Index("idx_stellar_operations_attention", "needs_attention", "id"),
    **_MYSQL_TABLE,
)

refunds = sa.Table(
    "refunds",
    metadata,
    _id(),
    sa.Column("payment_id", RefId, sa.ForeignKey("payments.id", ondelete="CASCADE", name="fk_refunds_payment"), nullable=False),
    sa.Column("request_id", Key(128)),
    sa.Column("request_fingerprint", sa.CHAR(64)),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.String(32)),
    sa.Column("status", Status, nullable=False),
    sa.Column("provider", Status, nullable=False),
    sa.Column("provider_refund_id", Key(255)),
    sa.Column("failure_reason", sa.String(1024)),
    sa.Column("error_code", sa.String(32)),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("payment_id", "request_id", name="idx_refunds_payment_request"),
    sa.UniqueConstraint("provider", "provider_refund_id", name="idx_refunds_provider_refund"),
    **_MYSQL_TABLE,
)

provider_objects = sa.Table(
    "provider_objects",
    metadata,
    sa.Column("provider", Status, primary_key=True, autoincrement=False),
    sa.Column("object_id", Key(255), primary_key=True),
    sa.Column(
        "payment_id", RefId, sa.ForeignKey("payments.id", ondelete="CASCADE", name="fk_provider_objects_payment"), nullable=False
    ),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("idx_provider_objects_payment", "payment_id"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    _id(),
    sa.Column("service_name", Key(128), nullable=False),
    sa.Column("key_prefix", Key(16), nullable=False),
    sa.Column("key_hash", Key(64, fixed=True), nullable=False),
    sa.Column("acts_for", sa.String(1024), nullable=False, server_default=sa.text("''")),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("revoked_at", Timestamp),
    sa.UniqueConstraint("key_hash", name="idx_api_keys_key_hash"),
    sa.Index("idx_api_keys_service", "service_name"),
    **_MYSQL_TABLE,
)

# A caller service's own credentials at a provider (accounts/). The secrets are
# AES-256-GCM ciphertexts bound to their row and field (accounts/encryption.py);
# settings_json holds what is not secret (a VNPay terminal code, a Stripe API base).
provider_accounts = sa.Table(
    "provider_accounts",
    metadata,
    _id(),
    sa.Column("caller_service", Key(128), nullable=False),
    sa.Column("provider", Status, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("settings_json", sa.Text, nullable=False),
    sa.Column("secret_key", sa.Text, nullable=False),
    sa.Column("webhook_secret", sa.Text),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Index("idx_provider_accounts_caller", "caller_service", "provider"),
    **_MYSQL_TABLE,
)

# Per caller service quotas (`payments-svc keys limits`); NULL: the configured default.
caller_limits = sa.Table(
    "caller_limits",
    metadata,
    sa.Column("service_name", Key(128), primary_key=True),
    sa.Column("create_rps", sa.Double),
    sa.Column("create_burst", sa.Integer),
    sa.Column("read_rps", sa.Double),
    sa.Column("read_burst", sa.Integer),
    sa.Column("max_open_payments", sa.Integer),
    sa.Column("updated_at", Timestamp, nullable=False),
    **_MYSQL_TABLE,
)

# Append-only: who changed what outside the normal flow (service/audit.py). Never updated or deleted.
audit_log = sa.Table(
    "audit_log",
    metadata,
    _id(),
    sa.Column("occurred_at", Timestamp, nullable=False),
    sa.Column("actor_service", Key(128), nullable=False),
    sa.Column("actor_key_id", sa.String(64), nullable=False),
    sa.Column("action", Key(64), nullable=False),
    sa.Column("target_type", Key(32), nullable=False),
    sa.Column("target_id", Key(255), nullable=False),
    sa.Column("request_id", sa.String(255), nullable=False),
    sa.Column("detail", sa.String(1024), nullable=False),
    sa.Index("idx_audit_log_action", "action", "id"),
    sa.Index("idx_audit_log_target", "target_type", "target_id", "id"),
    **_MYSQL_TABLE,
)

# VerifyPayment's rate limit, shared by every process: one row per verified payment.
verify_claims = sa.Table(
    "verify_claims",
    metadata,
    sa.Column("payment_id", RefId, sa.ForeignKey("payments.id", ondelete="CASCADE", name="fk_verify_claims_payment"),
              primary_key=True, autoincrement=False),
    sa.Column("verified_at", Timestamp, nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

# Each worker's last successful batch and backlog, for GetSystemStatus (jobs/health.py).
worker_heartbeats = sa.Table(
    "worker_heartbeats",
    metadata,
    sa.Column("worker", Key(64), primary_key=True),
    sa.Column("last_success_at", Timestamp, nullable=False),
    sa.Column("backlog", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("detail", sa.String(1024), nullable=False, server_default=sa.text("''")),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

# The version record of the releases before versioned migrations (Alembic's alembic_version
# has replaced it). Kept, holding version 1, so that such a release still runs on this
# database: the previous release during a rolling upgrade, or after a rollback of the code.
schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(255), nullable=False),
    sa.Column("applied_at", Timestamp, nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)
