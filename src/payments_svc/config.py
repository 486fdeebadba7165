"""Settings read from the environment, with the reference service's variable names.

Unlike the reference, a value that does not parse is an error at start-up, never a
silent fall back to the default.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from .accounts.encryption import EncryptionKeyError, EncryptionKeys, parse_keys
from .callback_policy import CallbackDestinations, IPNetwork, parse_host_pattern, parse_network
from .env_values import env_value
from .providers.stellar.settings import StellarSettings, stellar_settings_from_env
from .providers.stripe.settings import StripeSettings, stripe_settings_from_env
from .providers.vnpay.settings import VnpayCredentials, vnpay_credentials_from_env
from .resilience.routing import RoutingError
from .resilience.settings import ResilienceSettings, SettingError, resilience_settings_from_env
from .webhooks_signing import secret_key


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


def _int(environ, name: str, default: int, *, minimum: int | None = None) -> int:
    raw = env_value(environ, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _bool(environ, name: str, default: bool) -> bool:
    raw = env_value(environ, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _timeout(environ, name: str, default: float) -> float:
    """A positive number of seconds (fractions allowed)."""
    raw = env_value(environ, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {raw}")
    return value


def _seconds(environ, minutes_name: str, default_minutes: float, *, minimum: float = 0) -> float:
    """A duration given as NAME_MINUTES, or as NAME_SECONDS (finer, used by tests)."""
    seconds_name = minutes_name.removesuffix("_MINUTES") + "_SECONDS"
    raw_seconds = env_value(environ, seconds_name)
    if raw_seconds is not None:
        try:
            value = float(raw_seconds)
        except ValueError:
            raise ConfigError(f"{seconds_name} must be a number, got {raw_seconds!r}") from None
        name = seconds_name
    else:
        value = _int(environ, minutes_name, default_minutes) * 60.0
        name = minutes_name
    if value <= minimum:
        raise ConfigError(f"{name} must be > {minimum}")
    return value


_DURATION = re.compile(r"^(?P<n>\d+(\.\d+)?)(?P<unit>ms|s|m|h|d)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _durations(environ, name: str, default: str) -> tuple[float, ...]:
    """A comma-separated list of durations such as `5m,1h,1d` (units ms, s, m, h, d), in seconds."""
    raw = env_value(environ, name) or default
    out = []
    for part in raw.split(","):
        match = _DURATION.match(part.strip())
        if match is None or float(match["n"]) <= 0:
            raise ConfigError(f"{name} must be positive durations like 5m,1h,1d; got {part.strip()!r}")
        out.append(float(match["n"]) * _UNIT_SECONDS[match["unit"]])
    return tuple(out)


def _host_patterns(environ, name: str) -> tuple[str, ...]:
    try:
        return tuple(parse_host_pattern(p) for p in (env_value(environ, name) or "").split(",") if p.strip())
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _networks(environ, name: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(parse_network(n) for n in (env_value(environ, name) or "").split(",") if n.strip())
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _signing_secrets(environ, name: str) -> tuple[tuple[str, str], ...]:
    """`service=whsec_...` pairs, comma-separated; a service named twice signs with both (rotation)."""
    pairs = []
    for entry in (env_value(environ, name) or "").split(","):
        if not entry.strip():
            continue
        service, sep, secret = entry.partition("=")
        if not sep or not service.strip():
            raise ConfigError(f"{name} must be service=whsec_... entries separated by commas")
        try:
            secret_key(secret.strip())
        except ValueError as exc:
            raise ConfigError(f"{name}: secret of {service.strip()!r}: {exc}") from None
        pairs.append((service.strip(), secret.strip()))
    return tuple(pairs)


_GO_ADDRESS = re.compile(r"^(?P<net>tcp|unix)\((?P<addr>[^)]*)\)$")


def mysql_dsn_to_url(dsn: str) -> str:
    """Turns a Go MySQL DSN (`user:pass@tcp(host:port)/db?...`) into a SQLAlchemy URL.

    Parsed the way go-sql-driver does: the last "/" starts the database name, the last
    "@" before it ends the credentials (so passwords may hold "@" and ":"). Driver
    parameters that mean nothing to PyMySQL (parseTime, loc, ...) are dropped; the
    service always works in UTC.
    """
    if "://" in dsn:
        return dsn  # already a URL
    head, slash, tail = dsn.rpartition("/")
    db, _, params = tail.partition("?")
    credentials, at, address = head.rpartition("@")
    if not at:
        credentials, address = "", head
    net = _GO_ADDRESS.match(address) if address else None
    if not slash or not db or (address and net is None):
        raise ConfigError("MYSQL_DSN must look like user:pass@tcp(host:port)/dbname")
    user, _, password = credentials.partition(":")
    auth = quote(user or "root", safe="") + (":" + quote(password, safe="") if password else "")
    query = {"charset": "utf8mb4"}
    for key, value in parse_qsl(params):
        if key == "charset":
            query["charset"] = value.split(",")[0]
    if net is not None and net["net"] == "unix":
        query["unix_socket"] = net["addr"]
        host = "localhost"
    else:
        host = (net["addr"] if net else "") or "127.0.0.1:3306"
    return f"mysql+asyncmy://{auth}@{host}/{db}?{urlencode(query)}"


def default_sqlite_url(base_dir: Path | None = None) -> str:
    path = (base_dir or Path.cwd()) / "var" / "payments.sqlite3"
    return f"sqlite+aiosqlite:///{path}"


def redact_url(url: str) -> str:
    """The database URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


@dataclass(frozen=True)
class Settings:
    environment: str = "development"
    service_name: str = "payments-service"
    app_api_key: str = field(default="", repr=False)
    auth_service_addr: str | None = None
    auth_cache_ttl_seconds: float = 30.0
    auth_timeout_seconds: float = 2.0
    gateway_services: frozenset[str] = frozenset()

    http_host: str = "0.0.0.0"
    http_port: int = 8080
    grpc_host: str = "0.0.0.0"
    grpc_port: int = 9090
    public_base_url: str = "http://localhost:8080"
    http_max_body_bytes: int = 1024 * 1024
    http_read_timeout_seconds: float = 15.0
    shutdown_grace_seconds: float = 10.0
    shutdown_drain_seconds: float = 0.0
    metrics_port: int = 0  # workers only (serve has /metrics on HTTP_PORT); 0: not exposed

    database_url: str = ""
    db_pool_size: int = 10
    db_pool_recycle_seconds: int = 1800
    db_connect_timeout_seconds: float = 5.0
    db_pool_timeout_seconds: float = 5.0
    db_statement_timeout_seconds: float = 10.0
    readiness_timeout_seconds: float = 1.5
    log_level: str = "info"
    uvloop: bool = True  # the event loop every command runs on (False: asyncio's own)

    default_provider: str | None = None
    sandbox_enabled: bool = True
    sandbox_delay_ms: int = 0
    sandbox_webhook_secret: str = field(default="whsec_sandbox_development_only", repr=False)

    provider_callback_base_url: str | None = None
    provider_timeout_seconds: float = 10.0
    create_lease_seconds: float = 60.0
    group_commit_max: int = 32
    max_amount_cents: int = 100_000_000_000

    callback_max_attempts: int = 10
    callback_retry_interval_seconds: float = 300.0
    callback_http_timeout_seconds: float = 10.0
    callback_retry_max_interval_seconds: float = 43200.0
    callback_allowed_hosts: tuple[str, ...] = ()
    callback_allowed_networks: tuple[IPNetwork, ...] = ()
    callback_signing_secrets: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    pending_timeout_seconds: float = 3600.0
    reconcile_stale_after_seconds: float = 900.0
    job_batch_size: int = 100
    job_concurrency: int = 10
    reconcile_backoff_seconds: tuple[float, ...] = (300.0, 3600.0, 86400.0)
    reconcile_interval_seconds: float = 120.0
    callback_dispatch_interval_seconds: float = 60.0
    expire_pending_interval_seconds: float = 300.0
    watch_poll_interval_seconds: float = 0.25  # the process's one events-table tail (service/watch.py)
    watch_keepalive_seconds: float = 15.0
    watch_queue_size: int = 256
    verify_min_interval_seconds: float = 10.0
    worker_stale_after_seconds: float = 600.0
    stellar: StellarSettings | None = None  # None: the Stellar provider is disabled
    stripe: StripeSettings | None = None  # None: Stripe is disabled (no STRIPE_SECRET_KEY)
    vnpay: VnpayCredentials | None = None  # the default VNPay account; None: VNPay is disabled (no VNPAY_TMN_CODE)
    encryption_keys: EncryptionKeys | None = field(default=None, repr=False)  # provider accounts' secrets
    account_cache_seconds: float = 30.0  # how long a process uses an account's credentials before reading them again
    resilience: ResilienceSettings = ResilienceSettings()  # circuit breakers, quotas, their shared store

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def callback_destinations(self) -> CallbackDestinations:
        """Where status callbacks may be sent; loopback (the tests' receivers) only outside production."""
        return CallbackDestinations(self.callback_allowed_hosts, self.callback_allowed_networks,
                                    allow_loopback=not self.is_production)

    @property
    def callback_base_url(self) -> str:
        """Where providers are told to call back; defaults to this server's own webhook route."""
        return self.provider_callback_base_url or self.public_base_url.rstrip("/") + "/webhooks/providers"



def _stellar(environ) -> StellarSettings | None:
    try:
        return stellar_settings_from_env(environ)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _stripe(environ) -> StripeSettings | None:
    try:
        return stripe_settings_from_env(environ)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _encryption_keys(environ) -> EncryptionKeys | None:
    try:
        return parse_keys(environ.get("PAYMENTS_ENCRYPTION_KEYS"))
    except EncryptionKeyError as exc:
        raise ConfigError(str(exc)) from None


def _resilience(environ) -> ResilienceSettings:
    try:
        return resilience_settings_from_env(environ)
    except (SettingError, RoutingError) as exc:
        raise ConfigError(str(exc)) from None


def _vnpay(environ) -> VnpayCredentials | None:
    try:
        return vnpay_credentials_from_env(environ)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


LOG_LEVELS = ("debug", "info", "warning", "warn", "error", "critical")


def load_settings(environ: dict[str, str] | None = None, *, base_dir: Path | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    environment = (env_value(env, "PAYMENTS_ENV") or "development").lower()
    if environment not in ("development", "production", "test"):
        raise ConfigError(f"PAYMENTS_ENV must be development, test or production, got {environment!r}")

    database_url = env_value(env, "PAYMENTS_DATABASE_URL")
    if database_url is None and env_value(env, "MYSQL_DSN"):
        database_url = mysql_dsn_to_url(env_value(env, "MYSQL_DSN"))
    if database_url is None:
        database_url = default_sqlite_url(base_dir)
    if database_url.startswith("mysql://") or database_url.startswith("mysql+pymysql://"):
        # Only an async driver works here; accept the common spellings. asyncmy (Cython)
        # parses result packets for a fraction of aiomysql's CPU; `mysql+aiomysql://`
        # URLs still select aiomysql.
        database_url = "mysql+asyncmy://" + database_url.split("://", 1)[1]
    if database_url.startswith("sqlite://") or database_url.startswith("sqlite+pysqlite://"):
        database_url = "sqlite+aiosqlite://" + database_url.split("://", 1)[1]

    log_level = (env_value(env, "LOG_LEVEL") or "info").lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f'invalid LOG_LEVEL "{log_level}"')

    production = environment == "production"
    public_base_url = env_value(env, "PAYMENTS_PUBLIC_BASE_URL") or f"http://localhost:{_int(env, 'HTTP_PORT', 8080)}"
    default_provider = env_value(env, "PAYMENTS_DEFAULT_PROVIDER")
    if default_provider is not None:
        default_provider = default_provider.lower()

    return Settings(
        environment=environment,
        service_name=env_value(env, "APP_SERVICE_NAME") or "payments-service",
        app_api_key=env_value(env, "APP_API_KEY") or "",
        auth_service_addr=env_value(env, "AUTH_SERVICE_GRPC_ADDR"),
        auth_cache_ttl_seconds=float(_int(env, "PAYMENTS_AUTH_CACHE_TTL_SECONDS", 30, minimum=0)),
        auth_timeout_seconds=float(_int(env, "PAYMENTS_AUTH_TIMEOUT_SECONDS", 2, minimum=1)),
        gateway_services=frozenset(n.strip() for n in (env_value(env, "PAYMENTS_GATEWAY_SERVICES") or "").split(",") if n.strip()),
        http_host=env_value(env, "HTTP_HOST") or "0.0.0.0",
        http_port=_int(env, "HTTP_PORT", 8080, minimum=0),
        grpc_host=env_value(env, "GRPC_HOST") or "0.0.0.0",
        grpc_port=_int(env, "GRPC_PORT", 9090, minimum=0),
        public_base_url=public_base_url.rstrip("/"),
        http_max_body_bytes=_int(env, "PAYMENTS_HTTP_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
        http_read_timeout_seconds=float(_int(env, "PAYMENTS_HTTP_READ_TIMEOUT_SECONDS", 15, minimum=1)),
        shutdown_grace_seconds=float(_int(env, "PAYMENTS_SHUTDOWN_GRACE_SECONDS", 10, minimum=0)),
        shutdown_drain_seconds=float(_int(env, "PAYMENTS_SHUTDOWN_DRAIN_SECONDS", 0, minimum=0)),
        metrics_port=_int(env, "PAYMENTS_METRICS_PORT", 0, minimum=0),
        database_url=database_url,
        db_pool_size=_int(env, "MYSQL_MAX_OPEN_CONNS", 10, minimum=1),
        db_pool_recycle_seconds=_int(env, "MYSQL_CONN_MAX_LIFETIME_MINUTES", 30, minimum=1) * 60,
        db_connect_timeout_seconds=_timeout(env, "PAYMENTS_DB_CONNECT_TIMEOUT_SECONDS", 5.0),
        db_pool_timeout_seconds=_timeout(env, "PAYMENTS_DB_POOL_TIMEOUT_SECONDS", 5.0),
        db_statement_timeout_seconds=_timeout(env, "PAYMENTS_DB_STATEMENT_TIMEOUT_SECONDS", 10.0),
        readiness_timeout_seconds=_timeout(env, "PAYMENTS_READINESS_TIMEOUT_SECONDS", 1.5),
        log_level=log_level,
        uvloop=_bool(env, "PAYMENTS_UVLOOP", True),
        default_provider=default_provider,
        sandbox_enabled=_bool(env, "PAYMENTS_SANDBOX_ENABLED", not production),
        sandbox_delay_ms=_int(env, "PAYMENTS_SANDBOX_DELAY_MS", 0, minimum=0),
        sandbox_webhook_secret=env_value(env, "PAYMENTS_SANDBOX_WEBHOOK_SECRET") or "whsec_sandbox_development_only",
        provider_callback_base_url=env_value(env, "PAYMENTS_PROVIDER_CALLBACK_BASE_URL"),
        provider_timeout_seconds=float(_int(env, "PAYMENTS_PROVIDER_TIMEOUT_SECONDS", 10, minimum=1)),
        create_lease_seconds=float(_int(env, "PAYMENTS_CREATE_LEASE_SECONDS", 60, minimum=1)),
        group_commit_max=_int(env, "PAYMENTS_GROUP_COMMIT_MAX", 32, minimum=1),
        max_amount_cents=_int(env, "PAYMENTS_MAX_AMOUNT_CENTS", 100_000_000_000, minimum=1),
        callback_max_attempts=max(1, _int(env, "PAYMENTS_CALLBACK_MAX_ATTEMPTS", 10)),
        callback_retry_interval_seconds=_seconds(env, "PAYMENTS_CALLBACK_RETRY_INTERVAL_MINUTES", 5),
        callback_http_timeout_seconds=float(_int(env, "PAYMENTS_CALLBACK_HTTP_TIMEOUT_SECONDS", 10, minimum=1)),
        callback_retry_max_interval_seconds=_seconds(env, "PAYMENTS_CALLBACK_RETRY_MAX_INTERVAL_MINUTES", 720),
        callback_allowed_hosts=_host_patterns(env, "PAYMENTS_CALLBACK_ALLOWED_HOSTS"),
        callback_allowed_networks=_networks(env, "PAYMENTS_CALLBACK_ALLOWED_NETWORKS"),
        callback_signing_secrets=_signing_secrets(env, "PAYMENTS_CALLBACK_SIGNING_SECRETS"),
        pending_timeout_seconds=_seconds(env, "PAYMENTS_PENDING_TIMEOUT_MINUTES", 60),
        reconcile_stale_after_seconds=_seconds(env, "PAYMENTS_RECONCILE_STALE_AFTER_MINUTES", 15),
        job_batch_size=_int(env, "PAYMENTS_JOB_BATCH_SIZE", 100, minimum=1),
        job_concurrency=_int(env, "PAYMENTS_JOB_CONCURRENCY", 10, minimum=1),
        reconcile_backoff_seconds=_durations(env, "PAYMENTS_RECONCILE_BACKOFF", "5m,1h,1d"),
        reconcile_interval_seconds=_seconds(env, "PAYMENTS_RECONCILE_INTERVAL_MINUTES", 2),
        callback_dispatch_interval_seconds=_seconds(env, "PAYMENTS_CALLBACK_DISPATCH_INTERVAL_MINUTES", 1),
        expire_pending_interval_seconds=_seconds(env, "PAYMENTS_EXPIRE_PENDING_INTERVAL_MINUTES", 5),
        watch_poll_interval_seconds=_timeout(env, "PAYMENTS_WATCH_POLL_INTERVAL_SECONDS", 0.25),
        watch_keepalive_seconds=_timeout(env, "PAYMENTS_WATCH_KEEPALIVE_SECONDS", 15.0),
        watch_queue_size=_int(env, "PAYMENTS_WATCH_QUEUE_SIZE", 256, minimum=1),
        verify_min_interval_seconds=_timeout(env, "PAYMENTS_VERIFY_MIN_INTERVAL_SECONDS", 10.0),
        worker_stale_after_seconds=_timeout(env, "PAYMENTS_WORKER_STALE_AFTER_SECONDS", 600.0),
        stellar=_stellar(env),
        stripe=_stripe(env),
        vnpay=_vnpay(env),
        encryption_keys=_encryption_keys(env),
        account_cache_seconds=float(_int(env, "PAYMENTS_ACCOUNT_CACHE_SECONDS", 30, minimum=0)),
        resilience=_resilience(env),
    )
