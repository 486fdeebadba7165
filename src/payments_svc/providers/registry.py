"""Which providers are enabled, and which one a request means."""

from __future__ import annotations

from ..domain.enums import ProviderType
from ..domain.errors import ValidationError
from ..metrics import MeteredProvider
from .base import ClosableProvider, Provider


class ProviderRegistry:
    def __init__(self, providers: list[Provider], default: ProviderType):
        self._by_type = {p.type: MeteredProvider(p) for p in providers}
        if default not in self._by_type:
            raise ValueError(f"default provider {default.code} is not enabled")
        self.default = default

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
        for provider in self._by_type.values():
            if isinstance(provider, ClosableProvider):
                await provider.close()
