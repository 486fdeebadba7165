"""Which providers are enabled, which one a request means, and which account's
credentials serve a caller's create and a payment's later operations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..domain.enums import ProviderType
from ..domain.errors import ValidationError
from ..domain.payment import Payment
from ..metrics import MeteredProvider
from ..resilience.breaker import Breaker
from ..resilience.guard import GuardedProvider
from .base import ClosableProvider, Provider

if TYPE_CHECKING:
    from ..accounts.resolver import AccountProviders


class ProviderRegistry:
    def __init__(self, providers: list[Provider], default: ProviderType, breaker: Breaker | None = None,
                 accounts: AccountProviders | None = None):
        self._by_type = {p.type: MeteredProvider(p) for p in providers}
        if breaker is not None:  # every call to a provider goes through its circuit
            self._by_type = {t: GuardedProvider(p, breaker) for t, p in self._by_type.items()}
        if default not in self._by_type:
            raise ValueError(f"default provider {default.code} is not enabled")
        self.default = default
        self.accounts = accounts  # None: the environment's (default) accounts only

    async def for_caller(self, caller_service: str, provider: Provider) -> Provider:
        """What a create calls: the caller's enabled account at this provider, else the default account."""
        if self.accounts is None:
            return provider
        account_id = await self.accounts.account_of(caller_service, provider.type)
        return provider if account_id is None else await self.accounts.provider(account_id, provider.type)

    async def for_account(self, provider_type: ProviderType, account_id: int | None) -> Provider:
        """The provider with one account's credentials (None: the default account)."""
        if account_id is None or self.accounts is None:
            return self.get(provider_type)
        return await self.accounts.provider(account_id, provider_type)

    async def for_payment(self, payment: Payment) -> Provider:
        """What every operation after the create calls: the account the payment was created with."""
        return await self.for_account(payment.provider, payment.provider_account_id)

    def resolve(self, code: int) -> Provider:
        """The provider for a request's `provider` field (0 means the default)."""
        provider_type = self.default if code == ProviderType.UNSPECIFIED else ProviderType(code)
        provider = self._by_type.get(provider_type)
        if provider is None:
            raise ValidationError("provider is not supported", field="provider")
        return provider

    def find(self, code: int) -> Provider | None:
        """Like resolve, but None for an unknown or disabled provider (validation says which)."""
        provider_type = self.default if code == ProviderType.UNSPECIFIED else ProviderType._value2member_map_.get(code)
        return self._by_type.get(provider_type)

    def get(self, provider_type: ProviderType) -> Provider:
        return self.resolve(int(provider_type))

    def by_name(self, name: str) -> Provider:
        """For webhook paths: the provider's name ("stripe") or number ("1")."""
        key = name.strip().lower()
        for provider in self._by_type.values():
            if key in (provider.type.code, str(int(provider.type))):
                return provider
        raise ValidationError("provider is not supported", field="provider")

    @property
    def enabled(self) -> list[ProviderType]:
        return list(self._by_type)

    async def close(self) -> None:
        if self.accounts is not None:
            await self.accounts.close()
        for provider in self._by_type.values():
            if isinstance(provider, ClosableProvider):
                await provider.close()
