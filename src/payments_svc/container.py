"""Builds the service's parts from Settings: database, providers, auth, service."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import structlog

from .accounts.credentials import AccountCredentials
from .accounts.encryption import UndecryptableError
from .accounts.resolver import AccountProviders
from .accounts.store import AccountKeysMissing, AccountStore
from .auth.authenticators import (
    Authenticator,
    BuiltinKeyAuthenticator,
    CachingAuthenticator,
    ExternalAuthenticator,
    GatewayGrants,
)
from .config import ConfigError, Settings
from .db.engine import Database, open_database
from .db.migrate import schema_state
from .domain.enums import ProviderType
from .providers.registry import ProviderRegistry
from .providers.sandbox.provider import SandboxProvider
from .providers.stellar.provider import StellarProvider
from .providers.stripe.provider import StripeProvider
from .providers.stripe.settings import StripeSettings
from .providers.vnpay.provider import VnpayProvider
from .providers.vnpay.settings import VnpayCredentials
from .resilience.breaker import Breaker
from .resilience.guard import GuardedProvider
from .resilience.quotas import Quotas
from .resilience.routing import RoutingError, check_rules
from .resilience.store import LocalStore, RedisStore, open_store
from .service.payments import PaymentService

log = structlog.get_logger("payments.container")


@dataclass
class Container:
    settings: Settings
    db: Database
    providers: ProviderRegistry
    service: PaymentService
    authenticator: Authenticator
    quotas: Quotas | None = None
    store: LocalStore | RedisStore | None = None  # the circuits' and quotas' state

    async def close(self) -> None:
        await self.authenticator.close()
        await self.providers.close()
        if isinstance(self.store, RedisStore):
            await self.store.close()
        await self.db.close()


def account_provider(settings: Settings, account: AccountCredentials):
    """The provider a caller's provider account is served by: the default account's
    kind of provider, with the account's credentials."""
    if account.provider == ProviderType.STRIPE:
        base = settings.stripe or StripeSettings(secret_key="", webhook_secrets=())
        stripe_settings = dataclasses.replace(base, secret_key=account.secret_key, webhook_secrets=account.webhook_secrets,
                                              api_base=account.settings["api_base"], account_id=account.id)
        return StripeProvider(stripe_settings, public_base_url=settings.public_base_url,
                              pending_timeout_seconds=settings.pending_timeout_seconds)
    if account.provider == ProviderType.VNPAY:
        credentials = VnpayCredentials(tmn_code=account.settings["tmn_code"], hash_secret=account.secret_key,
                                       payment_url=account.settings["payment_url"], api_url=account.settings["api_url"])
        return VnpayProvider(credentials, public_base_url=settings.public_base_url,
                             pending_timeout_seconds=settings.pending_timeout_seconds,
                             timeout_seconds=settings.provider_timeout_seconds)
    raise ValueError(f"{account.provider.code} takes no provider accounts")


def build_providers(settings: Settings, db: Database | None = None,
                    store: LocalStore | RedisStore | None = None) -> ProviderRegistry:
    providers = []
    if settings.stripe is not None:
        # First, so that it is the default provider: provider 0 meant Stripe in the reference.
        providers.append(StripeProvider(settings.stripe, public_base_url=settings.public_base_url,
                                        pending_timeout_seconds=settings.pending_timeout_seconds))
    if settings.sandbox_enabled:
        if settings.is_production:
            log.warning("sandbox_enabled_in_production", message="PAYMENTS_SANDBOX_ENABLED=true with PAYMENTS_ENV=production: "
                        "anyone holding a sandbox checkout link can mark its payment paid; never in production")
        providers.append(
            SandboxProvider(
                public_base_url=settings.public_base_url,
                webhook_secret=settings.sandbox_webhook_secret,
                delay_ms=settings.sandbox_delay_ms,
            )
        )
    if settings.stellar is not None:
        providers.append(StellarProvider(settings.stellar))
    if settings.vnpay is not None:
        providers.append(VnpayProvider(settings.vnpay, public_base_url=settings.public_base_url,
                                       pending_timeout_seconds=settings.pending_timeout_seconds,
                                       timeout_seconds=settings.provider_timeout_seconds))
    if not providers:
        raise ConfigError(
            "no payment provider is enabled; set STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET for Stripe, "
            "VNPAY_TMN_CODE and VNPAY_HASH_SECRET for VNPay, or enable the sandbox with PAYMENTS_SANDBOX_ENABLED=true (not for production)"
        )
    enabled = {p.type.code: p.type for p in providers}
    if settings.default_provider is None:
        default = providers[0].type
    elif settings.default_provider in enabled:
        default = enabled[settings.default_provider]
    else:
        raise ConfigError(
            f"PAYMENTS_DEFAULT_PROVIDER={settings.default_provider} is not an enabled provider "
            f"(enabled: {', '.join(enabled)})"
        )
    try:
        check_rules(settings.resilience.routing_rules, {p.type: p for p in providers})
    except RoutingError as exc:
        raise ConfigError(f"PAYMENTS_ROUTING_RULES: {exc}") from None
    breaker = Breaker(store or LocalStore(), settings.resilience.breaker, timeout_seconds=settings.provider_timeout_seconds)
    accounts = None
    if db is not None:
        accounts = AccountProviders(AccountStore(db, settings.encryption_keys),
                                    lambda account: account_provider(settings, account), settings.account_cache_seconds,
                                    guard=lambda provider: GuardedProvider(provider, breaker))
    return ProviderRegistry(providers, default, breaker, accounts)


def build_authenticator(settings: Settings, db: Database) -> Authenticator:
    if settings.auth_service_addr:
        if not settings.app_api_key:
            raise ConfigError("APP_API_KEY is required when AUTH_SERVICE_GRPC_ADDR is set (it authenticates us to Auth)")
        inner: Authenticator = ExternalAuthenticator(
            settings.auth_service_addr,
            app_api_key=settings.app_api_key,
            service_name=settings.service_name,
            timeout_seconds=settings.auth_timeout_seconds,
        )
    else:
        inner = BuiltinKeyAuthenticator(db)
    if settings.gateway_services:
        inner = GatewayGrants(inner, settings.gateway_services)
    return CachingAuthenticator(inner, settings.auth_cache_ttl_seconds)


def build_container(settings: Settings) -> Container:
    db = open_database(settings)
    store = open_store(settings.resilience)
    providers = build_providers(settings, db, store)
    quotas = Quotas(db, store, settings.resilience)
    return Container(
        settings=settings,
        db=db,
        providers=providers,
        service=PaymentService(db, providers, settings, quotas),
        authenticator=build_authenticator(settings, db),
        quotas=quotas,
        store=store,
    )


async def check_accounts(db: Database, settings: Settings) -> None:
    """At start-up: every stored provider account's secrets decrypt with PAYMENTS_ENCRYPTION_KEYS,
    so a missing or wrong key is one clear line now, not a failing payment later."""
    try:
        await AccountStore(db, settings.encryption_keys).check()
    except (AccountKeysMissing, UndecryptableError) as exc:
        raise ConfigError(str(exc)) from None


async def check_schema(db: Database) -> None:
    """Refuses to serve on a database not yet migrated to this release. A newer schema
    is accepted: upgrades are additive, so the previous release keeps running during a
    rolling upgrade (deployment.md)."""
    state = await schema_state(db)
    if not state.up_to_date:
        raise ConfigError(f"database schema is {state.describe()}: {state.advice()}")
