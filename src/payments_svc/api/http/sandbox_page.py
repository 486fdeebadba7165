"""The sandbox provider's hosted checkout page. Pressing Pay or Decline sends the
sandbox's signed webhook through the real provider-callback path, then sends the
customer where the payment's outcome says: success_url only when paid, cancel_url
only when it ended unpaid, else back to this page, which confirms the outcome.

The page is self-contained (inline styles and icon, nothing fetched), works on a
phone, and escapes every caller-given string."""

from __future__ import annotations

import uuid
from html import escape
from urllib.parse import urlsplit

from aiohttp import web

from ...domain.currencies import format_amount
from ...domain.enums import PaymentStatus
from ...domain.errors import NotFoundError
from ...domain.payment import Payment, ProviderCallback
from ...providers.sandbox.provider import OUTCOMES, SandboxProvider
from ...service.payments import PaymentService

OPEN = (PaymentStatus.PENDING, PaymentStatus.PROCESSING)
UNPAID_ENDS = (PaymentStatus.FAILED, PaymentStatus.CANCELED, PaymentStatus.EXPIRED)

# A checkout must not be framed (a hidden frame could make a customer press Pay), nor
# load anything, nor hand its secret URL to the next site as a referrer.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

# Declared inline, so browsers never ask the server for /favicon.ico.
ICON = ("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
        "%3Crect width='16' height='16' rx='3' fill='%23635bff'/%3E%3Crect x='3' y='5' width='10' height='2' "
        "fill='white'/%3E%3Crect x='3' y='9' width='5' height='2' fill='white'/%3E%3C/svg%3E")

STYLE = """
*{box-sizing:border-box}
body{margin:0;background:#f6f8fa;color:#1a1f36;font:16px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
main{max-width:28rem;margin:3rem auto;padding:0 1rem}
.card{background:#fff;border-radius:12px;box-shadow:0 1px 3px rgba(0,0,0,.12),0 8px 24px rgba(0,0,0,.06);padding:1.75rem}
.badge{display:inline-block;font-size:.75rem;font-weight:600;letter-spacing:.04em;text-transform:uppercase;
color:#9a5b00;background:#fff4d6;border-radius:999px;padding:.15rem .6rem}
.merchant{margin:.9rem 0 0;font-size:1.05rem;font-weight:600;overflow-wrap:anywhere}
.item{margin:.1rem 0 0;color:#5c6677;overflow-wrap:anywhere}
.amount{margin:1rem 0 1.25rem;font-size:2.25rem;font-weight:700;letter-spacing:-.01em;overflow-wrap:anywhere}
.amount .currency{font-size:1.1rem;font-weight:600;color:#5c6677}
dl{display:grid;grid-template-columns:auto 1fr;gap:.35rem 1rem;margin:0 0 1.5rem;font-size:.9rem}
dt{color:#5c6677}dd{margin:0;text-align:right;overflow-wrap:anywhere}
form{display:flex;gap:.75rem}
button{flex:1;font:inherit;font-weight:600;border-radius:8px;padding:.8rem 1rem;cursor:pointer;min-height:3rem}
button.pay{background:#635bff;color:#fff;border:1px solid #635bff}
button.pay:hover{background:#5146e8}
button.decline{background:#fff;color:#1a1f36;border:1px solid #c9ced6}
button.decline:hover{background:#f1f3f6}
button:focus-visible{outline:3px solid #a5a0ff;outline-offset:2px}
.outcome{border-radius:8px;padding:1rem;margin:0 0 1rem;font-weight:600}
.outcome.paid{background:#e6f6ec;color:#0b6b36}
.outcome.ended{background:#fdecec;color:#a11d1d}
.back{display:inline-block;color:#635bff;font-weight:600;text-decoration:none}
.note{color:#5c6677;font-size:.85rem;margin:1.25rem 0 0;text-align:center}
@media (max-width:480px){main{margin:0;padding:0}.card{border-radius:0;box-shadow:none;min-height:100vh;padding:1.25rem}
form{flex-direction:column-reverse}.amount{font-size:2rem}}
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="{icon}">
<style>{style}</style>
</head><body><main><div class="card">
<span class="badge">Sandbox &middot; no money moves</span>
<p class="merchant" id="merchant">{merchant}</p>
<p class="item" id="item">{item}</p>
<p class="amount" id="amount">{amount} <span class="currency">{currency}</span></p>
<dl><dt>Payment</dt><dd id="payment">#{payment_id}</dd><dt>Status</dt><dd id="status">{status}</dd></dl>
{body}
</div>
<p class="note">A test checkout of payments-svc's sandbox provider.</p>
</main></body></html>
"""

ACTIONS = """<form method="post">
<button type="submit" formaction="{base}/decline" id="decline" class="decline">Decline</button>
<button type="submit" formaction="{base}/pay" id="pay" class="pay">Pay</button>
</form>"""

OUTCOME = '<p class="outcome {kind}" id="outcome" role="status">{text}</p>{back}'


def page_path(payment: Payment) -> str:
    return f"/sandbox/checkout/{payment.provider_callback_hash}"


def next_location(payment: Payment) -> str:
    """Where the customer goes after pressing a button: the caller's success page only
    for a paid payment, its cancel page only for one that ended unpaid."""
    if payment.status == PaymentStatus.PAID and payment.success_url:
        return payment.success_url
    if payment.status in UNPAID_ENDS and payment.cancel_url:
        return payment.cancel_url
    return page_path(payment)


def _back_link(payment: Payment) -> str:
    """A way back to the caller's site: the page its outcome names, else the site of
    any page the caller gave (never the cancel page for a paid payment)."""
    if payment.status == PaymentStatus.PAID:
        target = payment.success_url or _site(payment.cancel_url)
    else:
        target = payment.cancel_url or _site(payment.success_url)
    if not target:
        return '<p class="item">You can close this page.</p>'
    host = urlsplit(target).hostname or target
    return f'<a class="back" id="back" href="{escape(target)}">&larr; Back to {escape(host)}</a>'


def _site(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/"


def _outcome(payment: Payment) -> str:
    if payment.status == PaymentStatus.PAID:
        kind, text = "paid", f"Payment received. {payment.caller_service} has been told."
    elif payment.status == PaymentStatus.FAILED:
        kind, text = "ended", "Payment declined. Nothing was charged."
    elif payment.status not in UNPAID_ENDS:  # CREATED: the provider step is not finished yet
        kind, text = "ended", "This checkout is not open yet: reload the page in a moment."
    else:
        kind, text = "ended", f"This checkout is closed: the payment was {payment.status.name.lower()}."
    return OUTCOME.format(kind=kind, text=escape(text), back=_back_link(payment))


def render(payment: Payment) -> str:
    open_ = payment.status in OPEN
    amount = format_amount(payment.amount_cents, payment.currency)
    return PAGE.format(
        title=escape(f"Pay {payment.caller_service}" if open_ else f"Payment {payment.status.name.lower()}"),
        icon=ICON,
        style=STYLE,
        merchant=escape(payment.caller_service),
        item=escape(f"{payment.resource_type} {payment.resource_id}"),
        amount=escape(amount),
        currency=escape(payment.currency.upper()),
        payment_id=payment.id,
        status=payment.status.name,
        body=ACTIONS.format(base=escape(page_path(payment))) if open_ else _outcome(payment),
    )


class SandboxPages:
    def __init__(self, service: PaymentService, provider: SandboxProvider):
        self.service = service
        self.provider = provider

    def register(self, app: web.Application) -> None:
        app.router.add_get("/sandbox/checkout/{hash}", self.show)
        app.router.add_post("/sandbox/checkout/{hash}/{action}", self.act)

    async def _payment(self, request: web.Request) -> Payment:
        try:
            return await self.service.get_checkout("sandbox", request.match_info["hash"])
        except NotFoundError:
            raise web.HTTPNotFound(text="unknown checkout") from None

    async def show(self, request: web.Request) -> web.Response:
        payment = await self._payment(request)
        return web.Response(text=render(payment), content_type="text/html", headers=HEADERS)

    async def act(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action not in OUTCOMES:
            raise web.HTTPNotFound(text="unknown action")
        payment = await self._payment(request)
        # A button pressed again (a second click, a stale tab) after the outcome sends
        # nothing: as at a real provider, a checkout that ended cannot be paid.
        if payment.status in OPEN:
            payload, signature = self.provider.build_event(payment, action)
            # Not recorded (the database away): the error answer says retry, and pressing
            # again sends the same outcome.
            await self.service.handle_provider_callback(
                ProviderCallback(
                    request_id="sandbox-" + uuid.uuid4().hex,
                    provider="sandbox",
                    callback_hash=payment.provider_callback_hash,
                    signature=signature,
                    payload=payload,
                )
            )
            payment = await self._payment(request)  # the outcome as applied
        raise web.HTTPSeeOther(next_location(payment), headers=HEADERS)
