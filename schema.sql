-- payments-svc schema for MariaDB 10.6+ / MySQL 8, at the head migration (0003), for reading.
-- It is what `payments-svc db migrate` makes (the migrations in src/payments_svc/db/migrations/,
-- from the tables in src/payments_svc/db/tables.py, and tests/mysql/test_schema.py proves all three
-- agree). To apply SQL by hand, use `payments-svc db migrate --sql`, which also records the
-- revision in alembic_version.
-- Key columns (idempotency keys, hashes, memos, provider ids, every column a lookup or a unique
-- key compares) use a NO PAD binary collation, so they compare byte for byte: "abc", "ABC" and
-- "abc " are three different keys. This file spells MariaDB's utf8mb4_nopad_bin, MySQL 8's is
-- utf8mb4_0900_bin.

CREATE TABLE IF NOT EXISTS payments (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  request_id VARCHAR(128) COLLATE utf8mb4_nopad_bin NOT NULL,
  caller_service VARCHAR(128) COLLATE utf8mb4_nopad_bin NOT NULL,
  request_fingerprint CHAR(64) NOT NULL,
  resource_type VARCHAR(128) COLLATE utf8mb4_nopad_bin NOT NULL,
  resource_id VARCHAR(255) COLLATE utf8mb4_nopad_bin NOT NULL,
  customer_ref VARCHAR(255) NULL,
  amount_cents BIGINT NOT NULL,
  currency VARCHAR(12) NOT NULL,
  status SMALLINT NOT NULL DEFAULT 1,
  payment_method SMALLINT NOT NULL,
  payment_type SMALLINT NOT NULL,
  provider SMALLINT NOT NULL,
  recurring_interval VARCHAR(16) NULL,
  recurring_interval_count INT NULL,
  provider_payment_id VARCHAR(255) COLLATE utf8mb4_nopad_bin NULL,
  provider_subscription_id VARCHAR(255) COLLATE utf8mb4_nopad_bin NULL,
  checkout_url VARCHAR(2048) NULL,
  provider_callback_hash VARCHAR(64) COLLATE utf8mb4_nopad_bin NOT NULL,
  provider_callback_url VARCHAR(1024) NOT NULL,
  status_callback_url VARCHAR(1024) NOT NULL,
  success_url VARCHAR(1024) NULL,
  cancel_url VARCHAR(1024) NULL,
  refunded_cents BIGINT NOT NULL DEFAULT 0,
  refundable_cents BIGINT NOT NULL,
  -- What the provider reports received (Stellar: the payments matched so far, in hundredths, rounded down).
  received_cents BIGINT NOT NULL DEFAULT 0,
  metadata_json LONGTEXT NOT NULL,
  cancel_reason VARCHAR(255) NULL,
  failure_reason VARCHAR(1024) NULL,
  create_error_code VARCHAR(32) NULL,
  attention_required BOOL NOT NULL DEFAULT 0,
  create_lease_until DATETIME(6) NULL,
  -- Jobs: when reconcile next asks the provider (NULL: never asked yet), how often it
  -- asked, and the lease of the reconcile or expire run working on the payment.
  reconcile_next_at DATETIME(6) NULL,
  reconcile_attempts INT NOT NULL DEFAULT 0,
  job_lease_until DATETIME(6) NULL,
  created_at DATETIME(6) NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  -- The provider account it was created with (provider_accounts.id); NULL: the default account.
  provider_account_id BIGINT UNSIGNED NULL,
  PRIMARY KEY (id),
  UNIQUE KEY idx_payments_caller_request_id (caller_service, request_id),
  UNIQUE KEY idx_payments_provider_callback_hash (provider, provider_callback_hash),
  KEY idx_payments_caller_id (caller_service, id),
  KEY idx_payments_status_updated (status, updated_at),
  KEY idx_payments_reconcile (status, reconcile_next_at),
  KEY idx_payments_provider_payment_id (provider, provider_payment_id),
  KEY idx_payments_resource (resource_type, resource_id),
  KEY idx_payments_created_at (created_at),
  KEY idx_payments_caller_created (caller_service, created_at, status, currency, amount_cents, refunded_cents),
  KEY idx_payments_caller_customer (caller_service, customer_ref, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS payment_events (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  payment_id BIGINT UNSIGNED NOT NULL,
  event_type VARCHAR(128) NOT NULL,
  old_status SMALLINT NULL,
  new_status SMALLINT NOT NULL,
  provider_event_id VARCHAR(255) COLLATE utf8mb4_nopad_bin NULL,
  needs_attention BOOL NOT NULL DEFAULT 0,
  message VARCHAR(1024) NULL,
  payload_json LONGTEXT NULL,
  created_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  KEY idx_payment_events_payment (payment_id, id),
  CONSTRAINT fk_payment_events_payment FOREIGN KEY (payment_id) REFERENCES payments (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Every inbound provider callback as received, with its outcome. dedup_key is set
-- only on the row that applied an event, so each provider event is applied once.
CREATE TABLE IF NOT EXISTS payment_callbacks (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  payment_id BIGINT UNSIGNED NULL,
  provider VARCHAR(32) COLLATE utf8mb4_nopad_bin NOT NULL,
  callback_hash VARCHAR(128) COLLATE utf8mb4_nopad_bin NOT NULL,
  provider_event_id VARCHAR(255) COLLATE utf8mb4_nopad_bin NULL,
  dedup_key VARCHAR(255) COLLATE utf8mb4_nopad_bin NULL,
  signature VARCHAR(1024) NOT NULL,
  payload_json LONGTEXT NOT NULL,
  status SMALLINT NOT NULL,
  error VARCHAR(1024) NULL,
  created_at DATETIME(6) NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY idx_payment_callbacks_dedup (provider, dedup_key),
  KEY idx_payment_callbacks_payment (payment_id),
  CONSTRAINT fk_payment_callbacks_payment FOREIGN KEY (payment_id) REFERENCES payments (id) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Transactional outbox of status callbacks: a row is written in the same
-- transaction as the status change the caller must hear about. A dispatcher claims
-- due rows by setting lease_until and lease_owner, and records the outcome only
-- while lease_owner is still its own.
CREATE TABLE IF NOT EXISTS callback_deliveries (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  delivery_id VARCHAR(64) COLLATE utf8mb4_nopad_bin NOT NULL,
  payment_id BIGINT UNSIGNED NOT NULL,
  caller_service VARCHAR(128) COLLATE utf8mb4_nopad_bin NOT NULL,
  event_type VARCHAR(64) NOT NULL,
  payment_status SMALLINT NOT NULL,
  status SMALLINT NOT NULL DEFAULT 1,
  attempts INT NOT NULL DEFAULT 0,
  next_attempt_at DATETIME(6) NULL,
  lease_until DATETIME(6) NULL,
  lease_owner VARCHAR(64) COLLATE utf8mb4_nopad_bin NULL,
  last_error VARCHAR(1024) NULL,
  last_status_code INT NULL,
  created_at DATETIME(6) NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY idx_callback_deliveries_delivery_id (delivery_id),
  KEY idx_callback_deliveries_due (status, next_attempt_at),
  KEY idx_callback_deliveries_payment (payment_id, id),
  KEY idx_callback_deliveries_caller_status (caller_service, status, id),
  CONSTRAINT fk_callback_deliveries_payment FOREIGN KEY (payment_id) REFERENCES payments (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Every delivery attempt of a status callback: when, the receiver's answer, how long it took.
CREATE TABLE IF NOT EXISTS callback_attempts (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  callback_delivery_id BIGINT UNSIGNED NOT NULL,
  attempt INT NOT NULL,
  attempted_at DATETIME(6) NOT NULL,
  status_code INT NULL,
  latency_ms INT NOT NULL,
  error VARCHAR(1024) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY idx_callback_attempts_delivery_attempt (callback_delivery_id, attempt),
  CONSTRAINT fk_callback_attempts_delivery FOREIGN KEY (callback_delivery_id) REFERENCES callback_deliveries (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Standard Webhooks signing secrets (whsec_...) of caller services. Kept in clear:
-- signing needs them. Every secret not yet expired signs, so during a rotation the
-- old and the new secret both sign until the old one expires.
CREATE TABLE IF NOT EXISTS signing_secrets (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  caller_service VARCHAR(128) COLLATE utf8mb4_nopad_bin NOT NULL,
  secret VARCHAR(128) NOT NULL,
  created_at DATETIME(6) NOT NULL,
  expires_at DATETIME(6) NULL,
  PRIMARY KEY (id),
  KEY idx_signing_secrets_service (caller_service)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Stellar: how far each receiving account's payments feed (Horizon's
-- /accounts/{id}/payments) has been applied. It moves in the same transaction as
-- what the records it passes caused, and only ever forward.
CREATE TABLE IF NOT EXISTS stellar_cursors (
  account VARCHAR(56) COLLATE utf8mb4_nopad_bin NOT NULL,
  paging_token VARCHAR(20) COLLATE utf8mb4_nopad_bin NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (account)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Stellar: every payment to a receiving account that the feed delivered, and every
-- record it could not read (operation_id NULL, record_json raw). The unique
-- operation id applies each operation once. needs_attention rows are for an
-- operator: unmatched, refund due, overpaid, malformed.
CREATE TABLE IF NOT EXISTS stellar_operations (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  account VARCHAR(56) COLLATE utf8mb4_nopad_bin NOT NULL,
  operation_id VARCHAR(20) COLLATE utf8mb4_nopad_bin NULL,
  transaction_hash CHAR(64) COLLATE utf8mb4_nopad_bin NULL,
  payment_id BIGINT UNSIGNED NULL,
  status SMALLINT NOT NULL,
  from_account VARCHAR(56) NULL,
  asset_code VARCHAR(12) NULL,
  asset_issuer VARCHAR(56) NULL,
  amount_stroops BIGINT NULL,
  overpaid_stroops BIGINT NULL,
  memo_type VARCHAR(8) NULL,
  memo VARCHAR(64) COLLATE utf8mb4_nopad_bin NULL,
  needs_attention BOOL NOT NULL DEFAULT 0,
  error VARCHAR(1024) NULL,
  record_json LONGTEXT NOT NULL,
  created_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY idx_stellar_operations_operation (operation_id),
  KEY idx_stellar_operations_payment (payment_id, status),
  KEY idx_stellar_operations_attention (needs_attention, id),
  CONSTRAINT fk_stellar_operations_payment FOREIGN KEY (payment_id) REFERENCES payments (id) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The refund ledger: every provider refund of a payment, those asked for through the
-- API (request_id, unique per payment: the refund's idempotency key) and those made
-- at the provider (request_id NULL). refunded_cents and refundable_cents of the
-- payment are computed from it in the transaction that changes it.
CREATE TABLE IF NOT EXISTS refunds (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  payment_id BIGINT UNSIGNED NOT NULL,
  request_id VARCHAR(128) COLLATE utf8mb4_nopad_bin NULL,
  request_fingerprint CHAR(64) NULL,
  amount_cents BIGINT NOT NULL,
  reason VARCHAR(32) NULL,
  status SMALLINT NOT NULL,
  provider SMALLINT NOT NULL,
  provider_refund_id VARCHAR(255) COLLATE utf8mb4_nopad_bin NULL,
  failure_reason VARCHAR(1024) NULL,
  error_code VARCHAR(32) NULL,
  created_at DATETIME(6) NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY idx_refunds_payment_request (payment_id, request_id),
  UNIQUE KEY idx_refunds_provider_refund (provider, provider_refund_id),
  CONSTRAINT fk_refunds_payment FOREIGN KEY (payment_id) REFERENCES payments (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Provider objects created after the payment's own (payment intents, charges,
-- subscriptions, invoices), so an account-level webhook naming only them finds its
-- payment. The payment's own object is payments.provider_payment_id.
CREATE TABLE IF NOT EXISTS provider_objects (
  provider SMALLINT NOT NULL,
  object_id VARCHAR(255) COLLATE utf8mb4_nopad_bin NOT NULL,
  payment_id BIGINT UNSIGNED NOT NULL,
  created_at DATETIME(6) NOT NULL,
  PRIMARY KEY (provider, object_id),
  KEY idx_provider_objects_payment (payment_id),
  CONSTRAINT fk_provider_objects_payment FOREIGN KEY (payment_id) REFERENCES payments (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Built-in API keys: only the SHA-256 of a key is stored. acts_for lists the other
-- caller services the key may act for (comma-separated, "*" for any: a gateway).
CREATE TABLE IF NOT EXISTS api_keys (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  service_name VARCHAR(128) COLLATE utf8mb4_nopad_bin NOT NULL,
  key_prefix VARCHAR(16) COLLATE utf8mb4_nopad_bin NOT NULL,
  key_hash CHAR(64) COLLATE utf8mb4_nopad_bin NOT NULL,
  acts_for VARCHAR(1024) NOT NULL DEFAULT '',
  created_at DATETIME(6) NOT NULL,
  revoked_at DATETIME(6) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY idx_api_keys_key_hash (key_hash),
  KEY idx_api_keys_service (service_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A caller service's own credentials at a provider. secret_key and webhook_secret are
-- AES-256-GCM ciphertexts ("<key id>:<base64>") bound to the row and field; never plaintext.
CREATE TABLE IF NOT EXISTS provider_accounts (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  caller_service VARCHAR(128) COLLATE utf8mb4_nopad_bin NOT NULL,
  provider SMALLINT NOT NULL,
  enabled BOOL NOT NULL DEFAULT 1,
  settings_json TEXT NOT NULL,
  secret_key TEXT NOT NULL,
  webhook_secret TEXT NULL,
  created_at DATETIME(6) NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  KEY idx_provider_accounts_caller (caller_service, provider)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Per caller service quotas (`payments-svc keys limits`); NULL: the configured default.
CREATE TABLE IF NOT EXISTS caller_limits (
  service_name VARCHAR(128) COLLATE utf8mb4_nopad_bin NOT NULL,
  create_rps DOUBLE NULL,
  create_burst INT NULL,
  read_rps DOUBLE NULL,
  read_burst INT NULL,
  max_open_payments INT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (service_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Append-only audit trail: who (service, key id) changed what outside the normal flow, when,
-- under which request id. Never updated or deleted by the service.
CREATE TABLE IF NOT EXISTS audit_log (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  occurred_at DATETIME(6) NOT NULL,
  actor_service VARCHAR(128) COLLATE utf8mb4_nopad_bin NOT NULL,
  actor_key_id VARCHAR(64) NOT NULL,
  action VARCHAR(64) COLLATE utf8mb4_nopad_bin NOT NULL,
  target_type VARCHAR(32) COLLATE utf8mb4_nopad_bin NOT NULL,
  target_id VARCHAR(255) COLLATE utf8mb4_nopad_bin NOT NULL,
  request_id VARCHAR(255) NOT NULL,
  detail VARCHAR(1024) NOT NULL,
  PRIMARY KEY (id),
  KEY idx_audit_log_action (action, id),
  KEY idx_audit_log_target (target_type, target_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- VerifyPayment's per-payment rate limit, shared by every process.
CREATE TABLE IF NOT EXISTS verify_claims (
  payment_id BIGINT UNSIGNED NOT NULL,
  verified_at DATETIME(6) NOT NULL,
  PRIMARY KEY (payment_id),
  CONSTRAINT fk_verify_claims_payment FOREIGN KEY (payment_id) REFERENCES payments (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Each worker's last successful batch and backlog (GetSystemStatus).
CREATE TABLE IF NOT EXISTS worker_heartbeats (
  worker VARCHAR(64) COLLATE utf8mb4_nopad_bin NOT NULL,
  last_success_at DATETIME(6) NOT NULL,
  backlog BIGINT NOT NULL DEFAULT 0,
  detail VARCHAR(1024) NOT NULL DEFAULT '',
  PRIMARY KEY (worker)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The version record of the releases before versioned migrations, kept holding version 1 so
-- that such a release still runs on this schema (alembic_version is the record now).
CREATE TABLE IF NOT EXISTS schema_migrations (
  version INT NOT NULL,
  description VARCHAR(255) NOT NULL,
  applied_at DATETIME(6) NOT NULL,
  PRIMARY KEY (version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
