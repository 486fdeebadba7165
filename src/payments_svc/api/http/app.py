"""Builds the aiohttp application."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ...auth.authenticators import Authenticator
from ...config import Settings
from ...domain.enums import ProviderType
from ...resilience.quotas import Quotas
from ...service.payments import PaymentService
from ...service.watch import WatchHub
from .live_routes import LiveRoutes
from .middleware import build_middlewares
from .ops_routes import OpsRoutes
from .routes import Routes
from .sandbox_page import SandboxPages
from .stripe_routes import StripeRoutes
from .vnpay_routes import VnpayRoutes


def build_http_app(
    settings: Settings,
    service: PaymentService,
    authenticator: Authenticator,
    readiness: Callable[[], Awaitable[str | None]],
    quotas: Quotas | None = None,
    hub: WatchHub | None = None,
) -> web.Application:
    app = web.Application(middlewares=build_middlewares(authenticator, quotas), client_max_size=settings.http_max_body_bytes)
    app["read_timeout"] = settings.http_read_timeout_seconds
    app["max_body"] = settings.http_max_body_bytes
    LiveRoutes(service, hub if hub is not None else WatchHub(service.db, settings)).register(app)  # before Routes: /payments/stats
    Routes(service, readiness).register(app)
    OpsRoutes(service.db).register(app)
    if ProviderType.SANDBOX in service.providers.enabled:
        SandboxPages(service, service.providers.get(ProviderType.SANDBOX)).register(app)
    if ProviderType.STRIPE in service.providers.enabled:
        StripeRoutes(service).register(app)
    if ProviderType.VNPAY in service.providers.enabled:
        VnpayRoutes(service).register(app)
    return app
