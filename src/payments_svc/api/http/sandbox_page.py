"""The sandbox provider's hosted checkout page. Pressing Pay or Decline sends the
sandbox's signed webhook through the real provider-callback path."""

from __future__ import annotations

import html
import uuid

from aiohttp import web

from ...domain.enums import PaymentStatus
from ...domain.errors import PaymentsError
from ...domain.payment import ProviderCallback
from ...providers.sandbox import OUTCOMES, SandboxProvider
from ...service.payments import PaymentService

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sandbox checkout</title>
<style>body{{font-family:sans-serif;max-width:32rem;margin:3rem auto}}button{{font-size:1.1rem;margin-right:1rem;padding:.5rem 1.5rem}}</style>
</head><body>
<h1>Sandbox checkout</h1>
<p>This page stands in for a payment provider. No money moves.</p>
<table>
<tr><th align="left">Payment</th><td>#{id}</td></tr>
<tr><th align="left">For</th><td>{resource}</td></tr>
<tr><th align="left">Amount</th><td>{amount} {currency}</td></tr>
<tr><th align="left">Status</th><td id="status">{status}</td></tr>
</table>
{actions}
</body></html>
"""

ACTIONS = """<form method="post" style="margin-top:2rem">
<button formaction="/sandbox/checkout/{hash}/pay" id="pay">Pay</button>
<button formaction="/sandbox/checkout/{hash}/decline" id="decline">Decline</button>
</form>"""


def _minor_units(amount_cents: int) -> str:
    return f"{amount_cents // 100}.{amount_cents % 100:02d}"


class SandboxPages:
    def __init__(self, service: PaymentService, provider: SandboxProvider):
        self.service = service
        self.provider = provider

    def register(self, app: web.Application) -> None:
        app.router.add_get("/sandbox/checkout/{hash}", self.show)
        app.router.add_post("/sandbox/checkout/{hash}/{action}", self.act)

    async def _payment(self, request: web.Request):
        try:
            return await self.service.get_checkout("sandbox", request.match_info["hash"])
        except PaymentsError:
            raise web.HTTPNotFound(text="unknown checkout") from None

    async def show(self, request: web.Request) -> web.Response:
        payment = await self._payment(request)
        open_ = payment.status in (PaymentStatus.PENDING, PaymentStatus.PROCESSING)
        body = PAGE.format(
            id=payment.id,
            resource=html.escape(f"{payment.resource_type} {payment.resource_id}"),
            amount=_minor_units(payment.amount_cents),
            currency=html.escape(payment.currency),
            status=payment.status.name,
            actions=ACTIONS.format(hash=html.escape(payment.provider_callback_hash)) if open_ else "",
        )
        return web.Response(text=body, content_type="text/html")

    async def act(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action not in OUTCOMES:
            raise web.HTTPNotFound(text="unknown action")
        payment = await self._payment(request)
        payload, signature = self.provider.build_event(payment, action)
        await self.service.handle_provider_callback(
            ProviderCallback(
                request_id="sandbox-" + uuid.uuid4().hex,
                provider="sandbox",
                callback_hash=payment.provider_callback_hash,
                signature=signature,
                payload=payload,
            )
        )
        target = payment.success_url if action == "pay" else payment.cancel_url
        raise web.HTTPSeeOther(target or f"/sandbox/checkout/{payment.provider_callback_hash}")
