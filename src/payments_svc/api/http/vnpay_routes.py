"""VNPay's two routes on the HTTP server: the IPN URL VNPay calls (GET with signed vnp_*
parameters; VNPay authenticates by its vnp_SecureHash alone and reads our JSON answer),
and the return page the customer's browser lands on after VNPay's payment page."""

from __future__ import annotations

import html

import structlog
from aiohttp import web

from ...domain.enums import CallbackStatus, ProviderType
from ...domain.errors import CallbackAmountMismatchError, CallbackRejectedError, NotFoundError, ValidationError
from ...providers.vnpay.payment_url import callback_hash_of
from ...service.payments import PaymentService
from .middleware import json_response
from .stripe_routes import RETURN_PAGE, account_of

log = structlog.get_logger("payments.vnpay")

# VNPay's IPN answers (RspCode, Message), as its sample code words them. On 00 and 02
# VNPay stops; on anything else it calls again later.
CONFIRMED = ("00", "Confirm Success")
NOT_FOUND = ("01", "Order not found")
ALREADY_CONFIRMED = ("02", "Order already confirmed")
INVALID_AMOUNT = ("04", "Invalid amount")
INVALID_SIGNATURE = ("97", "Invalid signature")
UNKNOWN_ERROR = ("99", "Unknown error")


class VnpayRoutes:
    def __init__(self, service: PaymentService):
        self.service = service

    def register(self, app: web.Application) -> None:
        app.router.add_get("/webhooks/vnpay", self.ipn)
        app.router.add_get("/webhooks/vnpay/{account_id}", self.ipn)  # a caller's provider account
        app.router.add_get("/vnpay/return", self.return_page)

    async def ipn(self, request: web.Request) -> web.Response:
        code, message = await self._handle_ipn(request)
        return json_response({"RspCode": code, "Message": message})

    async def _handle_ipn(self, request: web.Request) -> tuple[str, str]:
        raw = request.rel_url.raw_query_string.encode()
        try:
            outcome = await self.service.handle_account_callback(
                ProviderType.VNPAY.code, raw, request.query.get("vnp_SecureHash", ""), account_of(request))
        except CallbackAmountMismatchError:
            return INVALID_AMOUNT
        except (CallbackRejectedError, ValidationError):  # unsigned, badly signed, another terminal, malformed
            return INVALID_SIGNATURE
        except NotFoundError:
            return NOT_FOUND
        except Exception:  # the database or a concurrent update: VNPay calls again
            log.exception("vnpay_ipn_failed")
            return UNKNOWN_ERROR
        if outcome.status == CallbackStatus.DUPLICATE or (outcome.previous_status and outcome.previous_status.is_terminal):
            # Applied before, or the payment had already ended (a payment after a cancel is
            # still recorded, for attention): nothing more for VNPay to tell us.
            return ALREADY_CONFIRMED
        return CONFIRMED

    async def return_page(self, request: web.Request) -> web.Response:
        """Shows what VNPay reported, or sends the customer on to the payment's
        success_url / cancel_url. Never changes the payment: only the IPN does."""
        raw = request.rel_url.raw_query_string.encode()
        # The payment first (its reference is not trusted until verified): its account's secret verifies the page.
        callback_hash = callback_hash_of(request.query.get("vnp_TxnRef", ""))
        try:
            payment = await self.service.get_checkout(ProviderType.VNPAY.code, callback_hash or "")
        except NotFoundError:
            payment = None
        provider = await (self.service.providers.for_payment(payment) if payment
                          else self.service.providers.for_account(ProviderType.VNPAY, None))
        visit = provider.read_return(raw)
        if not visit.genuine:
            return _page("Payment status unknown", "This page was not reached from VNPay's payment page.", 400)
        target = payment and (payment.success_url if visit.succeeded else payment.cancel_url)
        if target:
            raise web.HTTPSeeOther(target)
        if visit.succeeded:
            return _page("Thank you", "Your payment was received. You can close this window.")
        return _page("Payment not completed", f"VNPay reports: {visit.reason}. You can close this window.")


def _page(title: str, text: str, status: int = 200) -> web.Response:
    return web.Response(text=RETURN_PAGE.format(title=html.escape(title), text=html.escape(text)),
                        content_type="text/html", status=status)
