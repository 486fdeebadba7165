"""A use-case module that is part of PaymentService (refunds, provider events)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import Settings
from ..db.engine import Database
from ..providers.registry import ProviderRegistry

if TYPE_CHECKING:
    from .payments import PaymentService


class ServicePart:
    """Reads the database, providers and settings through the PaymentService it is
    part of, so that a test or a job swapping one of them swaps it for every part."""

    def __init__(self, service: PaymentService):
        self.service = service

    @property
    def db(self) -> Database:
        return self.service.db

    @property
    def providers(self) -> ProviderRegistry:
        return self.service.providers

    @property
    def settings(self) -> Settings:
        return self.service.settings
