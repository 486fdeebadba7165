"""One driver per provider the suite runs its lifecycles through. A driver knows how to
ask for a payment at its provider and how to play the customer and the provider
(pay, decline) with the provider's test double; the tests are written once against
this interface and parametrized over DRIVERS.

Adding a provider: write its driver, add it to `build_drivers` (with what it needs in
the stack's environment), and every lifecycle test runs through it.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .clients import HOSTED_CARD, ONE_TIME, PAYMENT_LINK, new_id

STRIPE_WEBHOOK_SECRET = "whsec_e2e_stripe_endpoint_secret"
CALLER = "e2e-shop"


def module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def base_fields(callback_url: str, **overrides: Any) -> dict[str, Any]:
    fields = dict(request_id=new_id("req"), caller_service=CALLER, resource_type="order", resource_id=new_id("order"),
                  amount_cents=1500, currency="usd", payment_method=HOSTED_CARD, payment_type=ONE_TIME,
                  status_callback_url=callback_url, metadata={"suite": "e2e"})
    fields.update(overrides)
    return fields


@dataclass
class Driver:
    name: str
    provider: int  # proto ProviderType
    can_refund: bool = True
    can_decline: bool = True
    cancel_stops_payment: bool = True  # False: the provider has no cancel; its checkout stays payable until it expires
    env: dict[str, str] = field(default_factory=dict)  # what the stack needs for this provider

    def fields(self, callback_url: str, **overrides: Any) -> dict[str, Any]:
        return base_fields(callback_url, provider=self.provider, **overrides)

    async def pay(self, api, payment: dict[str, Any]) -> None:
        raise NotImplementedError

    async def decline(self, api, payment: dict[str, Any]) -> None:
        raise NotImplementedError

    async def after_refund(self, api, payment: dict[str, Any], since: int) -> None:
        """What the provider sends after a refund it made for us (nothing, by default)."""

    def marker(self) -> int:
        """A position in the provider's event stream (for after_refund)."""
        return 0

    def stopped_at_provider(self, payment: dict[str, Any]) -> bool:
        """After a cancel or expiry: the provider's object can no longer be paid."""
        return True


class SandboxDriver(Driver):
    """The sandbox's checkout page: its Pay / Decline buttons post to the server, which
    sends itself the signed provider webhook through the real callback path."""

    def __init__(self, http_url: str):
        super().__init__("sandbox", 100)
        self.http_url = http_url

    async def _press(self, payment: dict[str, Any], action: str) -> None:
        url = f"{self.http_url}/sandbox/checkout/{payment['provider_callback_hash']}/{action}"
        assert payment["checkout_url"].endswith(f"/sandbox/checkout/{payment['provider_callback_hash']}")
        async with aiohttp.ClientSession() as session, session.post(url, allow_redirects=False) as response:
            assert response.status == 303, (response.status, await response.text())

    async def pay(self, api, payment):
        await self._press(payment, "pay")

    async def decline(self, api, payment):
        await self._press(payment, "decline")


class StripeDriver(Driver):
    """FakeStripe plays Stripe (and the customer at Checkout); its webhooks reach the
    server signed as Stripe signs them: over HTTP at /webhooks/stripe, over gRPC as a
    gateway forwards them (HandleProviderCallback)."""

    def __init__(self, fake, method: int = HOSTED_CARD):
        super().__init__("stripe" if method == HOSTED_CARD else "stripe-link", 1)
        self.fake = fake
        self.method = method
        self.env = {"STRIPE_SECRET_KEY": fake.secret_key, "STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
                    "STRIPE_API_BASE": fake.url, "STRIPE_HTTP_TIMEOUT_SECONDS": "5"}
        self.can_decline = method == HOSTED_CARD

    def fields(self, callback_url, **overrides):
        return base_fields(callback_url, provider=self.provider, payment_method=self.method, **overrides)

    async def deliver(self, api, payment, events) -> None:
        from tests.fakes.stripe_server import sign_event

        for event in events:
            payload = json.dumps(event).encode()
            await api.provider_webhook("stripe", payment, payload, sign_event(payload, STRIPE_WEBHOOK_SECRET))

    async def pay(self, api, payment):
        if self.method == PAYMENT_LINK:
            events = self.fake.pay_payment_link(payment["provider_payment_id"])
        else:
            events = self.fake.complete_session(payment["provider_payment_id"])
        await self.deliver(api, payment, events)

    async def decline(self, api, payment):
        # A delayed payment method (bank debit) that fails after Checkout completed.
        await self.deliver(api, payment, self.fake.complete_session(payment["provider_payment_id"], paid=False))
        await self.deliver(api, payment, self.fake.async_payment_result(payment["provider_payment_id"], False))

    def marker(self) -> int:
        return len(self.fake.events)

    async def after_refund(self, api, payment, since):
        await self.deliver(api, payment, self.fake.events[since:])

    def stopped_at_provider(self, payment):
        obj = self.fake.get(payment["provider_payment_id"])
        return obj["active"] is False if self.method == PAYMENT_LINK else obj["status"] == "expired"


@dataclass
class Chain:
    """The FakeHorizon ledger: an issuer of USDC, our receiving account, a buyer."""

    horizon: Any
    issuer: Any
    usdc: Any
    shop: Any
    buyer: Any

    @classmethod
    def create(cls, horizon) -> Chain:
        from stellar_sdk import Asset, Keypair

        issuer, shop, buyer = (Keypair.random() for _ in range(3))
        usdc = Asset("USDC", issuer.public_key)
        horizon.create_account(shop, {usdc: "0"})
        horizon.create_account(buyer, {Asset.native(): "1000", usdc: "100000"})
        return cls(horizon, issuer, usdc, shop, buyer)


class StellarDriver(Driver):
    """The buyer pays our account on FakeHorizon with the payment's memo; the
    `stellar watch --worker` process (and reconcile's paging) credit it."""

    def __init__(self, chain: Chain):
        super().__init__("stellar", 2, can_refund=False, can_decline=False)
        self.chain = chain
        self.env = {
            "STELLAR_HORIZON_URL": chain.horizon.url,
            "STELLAR_NETWORK_PASSPHRASE": chain.horizon.network_passphrase,
            "STELLAR_RECEIVING_ACCOUNT": chain.shop.public_key,
            "STELLAR_ASSETS": f"USDC:{chain.issuer.public_key},XLM:native",
            "STELLAR_SILENCE_TIMEOUT_SECONDS": "3",
            "STELLAR_BACKOFF_MIN_SECONDS": "0.1",
            "STELLAR_BACKOFF_MAX_SECONDS": "1",
        }

    def fields(self, callback_url, **overrides):
        return base_fields(callback_url, provider=self.provider, currency="USDC", payment_method=PAYMENT_LINK,
                           **overrides)

    async def pay(self, api, payment, amount: str | None = None):
        instructions = payment.get("stellar_instructions") or {}
        assert instructions.get("destination") == self.chain.shop.public_key, payment
        assert instructions.get("memo") == payment["provider_payment_id"]
        cents = payment["amount_cents"]
        await self.chain.horizon.pay(self.chain.buyer, self.chain.shop, amount or f"{cents // 100}.{cents % 100:02d}",
                                     self.chain.usdc, payment["provider_payment_id"])


class VnpayDriver(Driver):
    """FakeVnpay plays VNPay: the customer's browser opens the payment URL and presses Pay
    or Cancel on its page; the fake then calls the server's IPN URL (GET /webhooks/vnpay)
    as VNPay does, whichever transport the test drives, and sends the browser back to the
    return page. VNPay has no cancel: a canceled payment's URL works until it expires."""

    def __init__(self, fake, http_url: str):
        super().__init__("vnpay", 3, cancel_stops_payment=False)
        self.fake = fake
        fake.ipn_url = f"{http_url}/webhooks/vnpay"  # the terminal's IPN URL, as registered with VNPay
        self.env = fake.env()

    def fields(self, callback_url, **overrides):
        return base_fields(callback_url, provider=self.provider, currency="VND", **overrides)

    async def _press(self, payment: dict[str, Any], button: str) -> None:
        assert payment["checkout_url"].startswith(self.fake.payment_url + "?"), payment["checkout_url"]
        async with aiohttp.ClientSession() as browser:
            async with browser.get(payment["checkout_url"]) as page:
                assert page.status == 200, await page.text()
            url = f"{self.fake.url}/paymentv2/customer/{payment['provider_payment_id']}/{button}"
            async with browser.post(url, allow_redirects=False) as pressed:
                assert pressed.status == 303, (pressed.status, await pressed.text())
                back = pressed.headers["Location"]
            async with browser.get(back) as returned:  # the service's return page
                assert returned.status == 200, await returned.text()

    async def pay(self, api, payment):
        await self._press(payment, "pay")

    async def decline(self, api, payment):
        await self._press(payment, "cancel")

    def stopped_at_provider(self, payment):
        from tests.fakes.vnpay_server import PageError

        try:
            self.fake.open(payment["checkout_url"])
        except PageError:
            return True
        return False


def stripe_available() -> str | None:
    """None, or why the Stripe lifecycles cannot run."""
    if not module_exists("payments_svc.providers.stripe"):
        return "src/payments_svc/providers/stripe/ has not landed"
    if not module_exists("tests.fakes.stripe_server"):
        return "tests/fakes/stripe_server.py (FakeStripe) is missing"
    from tests.fakes.stripe_server import DEFAULT_SPEC_DIR

    if not DEFAULT_SPEC_DIR.is_dir():
        return f"Stripe's OpenAPI spec, which FakeStripe validates against, is not at {DEFAULT_SPEC_DIR}"
    return None


def stellar_available() -> str | None:
    if not module_exists("payments_svc.providers.stellar"):
        return "src/payments_svc/providers/stellar/ has not landed"
    if not module_exists("tests.fakes.horizon_server"):
        return "tests/fakes/horizon_server.py (FakeHorizon) is missing"
    from payments_svc.cli import main

    if main.get_command(None, "stellar") is None:
        return "`payments-svc stellar watch` is not registered"
    return None


def vnpay_available() -> str | None:
    if not module_exists("payments_svc.providers.vnpay.provider"):
        return "src/payments_svc/providers/vnpay/ has not landed"
    if not module_exists("tests.fakes.vnpay_server"):
        return "tests/fakes/vnpay_server.py (FakeVnpay) is missing"
    return None
