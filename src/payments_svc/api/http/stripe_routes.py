"""Stripe's routes on the HTTP server: the account-level webhook endpoints Stripe calls
directly (authenticated by their signature alone: /webhooks/stripe for the default
account, /webhooks/stripe/{account_id} for a caller's provider account), and the page a
customer's browser lands on after Checkout when the payment named no success_url/cancel_url."""

from __future__ import annotations

from aiohttp import web

from ...domain.enums import ProviderType
from ...domain.errors import NotFoundError
from ...service.payments import PaymentService
from .middleware import json_response
from .routes import read_webhook_body, signature_header

RETURN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:32rem;margin:3rem auto}}</style>
</head><body><h1>{title}</h1><p>{text}</p></body></html>
"""
RETURN_STATES = {
    "success": ("Thank you", "Your payment was submitted. You can close this window."),
    "cancel": ("Payment not completed", "You left the checkout and nothing was charged. You can close this window."),
}


class StripeRoutes:
    def __init__(self, service: PaymentService):
        self.service = service

    def register(self, app: web.Application) -> None:
        app.router.add_post("/webhooks/stripe", self.webhook)
        app.router.add_post("/webhooks/stripe/{account_id}", self.webhook)
        app.router.add_get("/stripe/return", self.return_page)

    async def webhook(self, request: web.Request) -> web.Response:
        payload = await read_webhook_body(request)
        await self.service.handle_account_callback(
            ProviderType.STRIPE.code, payload, signature_header(request, "Stripe-Signature"), account_of(request)
        )
        return json_response({"message": "Provider callback processed"})

    async def return_page(self, request: web.Request) -> web.Response:
        title, text = RETURN_STATES.get(request.query.get("state", ""), RETURN_STATES["success"])
        return web.Response(text=RETURN_PAGE.format(title=title, text=text), content_type="text/html")


def account_of(request: web.Request) -> int | None:
    """The provider account a webhook path names (None: the default account's path)."""
    raw = request.match_info.get("account_id")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise NotFoundError("provider account not found")
    return int(raw)
