-- payments-svc schema for MySQL 8 / MariaDB 10.6+.
-- src/payments_svc/db/tables.py mirrors this file (tests/mysql/test_schema.py proves it);
-- `payments-svc db migrate` creates or upgrades it.
-- Idempotency keys and hashes compare byte-for-byte (utf8mb4_bin): "abc" and "ABC" are different keys.

CREATE TABLE IF NOT EXISTS payments (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  request_id VARCHAR(128) NOT NULL,
  caller_service VARCHAR(128) NOT NULL,
  request_fingerprint CHAR(64) NOT NULL,
  resource_type VARCHAR(128) NOT NULL,
  resource_id VARCHAR(255) NOT NULL,
  customer_ref VARCHAR(255) NULL,
  amount_cents BIGINT NOT NULL,
  currency VARCHAR(12) NOT NULL,
  status SMALLINT NOT NULL DEFAULT 1,
  payment_method SMALLINT NOT NULL,
  payment_type SMALLINT NOT NULL,
  provider SMALLINT NOT NULL,
  recurring_interval VARCHAR(16) NULL,
  recurring_interval_count INT NULL,
  provider_payment_id VARCHAR(255) NULL,
  provider_subscription_id VARCHAR(255) NULL,
  checkout_url VARCHAR(2048) NULL,
  provider_callback_hash VARCHAR(64) NOT NULL,
  provider_callback_url VARCHAR(1024) NOT NULL,
  status_callback_url VARCHAR(1024) NOT NULL,
  success_url VARCHAR(1024) NULL,
  cancel_url VARCHAR(1024) NULL,
  refunded_cents BIGINT NOT NULL DEFAULT 0,
  refundable_cents BIGINT NOT NULL,
  metadata_json LONGTEXT NOT NULL,
  cancel_reason VARCHAR(255) NULL,
  failure_reason VARCHAR(1024) NULL,
  create_error_code VARCHAR(32) NULL,
  attention_required BOOL NOT NULL DEFAULT 0,
  create_lease_until DATETIME(6) NULL,
  created_at DATETIME(6) NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY idx_payments_caller_request_id (caller_service, request_id),
  UNIQUE KEY idx_payments_provider_callback_hash (provider, provider_callback_hash),
  KEY idx_payments_caller_id (caller_service, id),
  KEY idx_payments_status_updated (status, updated_at),
  KEY idx_payments_provider_payment_id (provider, provider_payment_id),
  KEY idx_payments_resource (resource_type, resource_id),
  KEY idx_payments_created_at (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS payment_events (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  payment_id BIGINT UNSIGNED NOT NULL,
  event_type VARCHAR(128) NOT NULL,
  old_status SMALLINT NULL,
  new_status SMALLINT NOT NULL,
  provider_event_id VARCHAR(255) NULL,
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
  provider VARCHAR(32) NOT NULL,
  callback_hash VARCHAR(128) NOT NULL,
  provider_event_id VARCHAR(255) NULL,
  dedup_key VARCHAR(255) NULL,
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
-- transaction as the status change the caller must hear about.
CREATE TABLE IF NOT EXISTS callback_deliveries (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  delivery_id VARCHAR(64) NOT NULL,
  payment_id BIGINT UNSIGNED NOT NULL,
  caller_service VARCHAR(128) NOT NULL,
  event_type VARCHAR(64) NOT NULL,
  payment_status SMALLINT NOT NULL,
  status SMALLINT NOT NULL DEFAULT 1,
  attempts INT NOT NULL DEFAULT 0,
  next_attempt_at DATETIME(6) NULL,
  lease_until DATETIME(6) NULL,
  last_error VARCHAR(1024) NULL,
  created_at DATETIME(6) NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY idx_callback_deliveries_delivery_id (delivery_id),
  KEY idx_callback_deliveries_due (status, next_attempt_at),
  KEY idx_callback_deliveries_payment (payment_id, id),
  CONSTRAINT fk_callback_deliveries_payment FOREIGN KEY (payment_id) REFERENCES payments (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Built-in API keys: only the SHA-256 of a key is stored. acts_for lists the other
-- caller services the key may act for (comma-separated, "*" for any: a gateway).
CREATE TABLE IF NOT EXISTS api_keys (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  service_name VARCHAR(128) NOT NULL,
  key_prefix VARCHAR(16) NOT NULL,
  key_hash CHAR(64) NOT NULL,
  acts_for VARCHAR(1024) NOT NULL DEFAULT '',
  created_at DATETIME(6) NOT NULL,
  revoked_at DATETIME(6) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY idx_api_keys_key_hash (key_hash),
  KEY idx_api_keys_service (service_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS schema_migrations (
  version INT NOT NULL,
  description VARCHAR(255) NOT NULL,
  applied_at DATETIME(6) NOT NULL,
  PRIMARY KEY (version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
