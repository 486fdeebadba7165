"""Routing rules and failover through the payment service, with fault-injecting provider
doubles: a create naming no provider goes by the first matching rule; it fails over to the
rule's next provider only when the first certainly created nothing (connection refused,
circuit open), and then still makes exactly one payment; a timeout after sending is never
failed over. The rules are checked at start-up."""

from __future__ import annotations

import asyncio
import json

import pytest
import sqlalchemy as sa

from payments_svc.auth.caller import Caller
from payments_svc.config import ConfigError, load_settings
from payments_svc.container import build_providers
from payments_svc.db.tables import payments
from payments_svc.domain.enums import PaymentStatus, ProviderType
from payments_svc.domain.errors import ProviderError, ServiceUnavailableError
from payments_svc.domain.payment import CreatePaymentCommand
from payments_svc.providers.registry import ProviderRegistry
from payments_svc.providers.sandbox.provider import SandboxProvider
from payments_svc.repository.events import EventRepository
from payments_svc.resilience.breaker import Breaker
from payments_svc.resilience.routing import Router, RoutingError, parse_rules
from payments_svc.resilience.store import LocalStore

from ..support import base_env

SHOP = Caller("shop")
RULES = json.dumps([
    {"name": "gbp-any", "currencies": ["GBP"], "providers": ["sandbox", "stripe", "vnpay"]},
    {"name": "eur-small", "currencies": ["EUR"], "max_amount_cents": 999, "providers": ["sandbox"]},
    {"name": "shop-cards", "caller_services": ["shop"], "payment_methods": ["hosted_card"],
     "providers": ["sandbox", "stripe"]},
])


class Double(SandboxProvider):
    """A provider double that answers, refuses the connection, answers 503 or hangs."""

    def __init__(self, provider_type: ProviderType):
        super().__init__(public_base_url="http://127.0.0.1:1", webhook_secret="whsec_test")
        self.type = provider_type
        self.mode = "ok"
        self.calls = 0

    async def create_checkout(self, payment, idempotency_key):
        self.calls += 1
        if self.mode == "refuse":
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except ConnectionRefusedError as exc:
                raise ProviderError(f"{self.type.code} unreachable", retryable=True) from exc
        if self.mode == "fail":
            raise ProviderError(f"{self.type.code} answered 503", retryable=True)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return await super().create_checkout(payment, idempotency_key)


def command(request_id: str, **overrides) -> CreatePaymentCommand:
    fields = dict(
        request_id=request_id, caller_service="shop", resource_type="order", resource_id="o-1", customer_ref="",
        amount_cents=1500, currency="usd", payment_method=1, payment_type=1, provider=0,
        recurring_interval="", recurring_interval_count=0, status_callback_url="https://shop.example/cb",
        success_url="", cancel_url="", metadata={},
    )
    fields.update(overrides)
    return CreatePaymentCommand(**fields)


@pytest.fixture
async def routed(make_container):
    """The service with the rules above over three doubles (sandbox first, stripe second,
    vnpay third: only the GBP rule lists it)."""
    container = await make_container(PAYMENTS_PROVIDER_TIMEOUT_SECONDS="1", PAYMENTS_BREAKER_FAILURE_THRESHOLD="1")
    first, second, third = Double(ProviderType.SANDBOX), Double(ProviderType.STRIPE), Double(ProviderType.VNPAY)
    settings = container.settings
    registry = ProviderRegistry([first, second, third], ProviderType.SANDBOX,
                                Breaker(LocalStore(), settings.resilience.breaker,
                                        timeout_seconds=settings.provider_timeout_seconds))
    container.service.providers = registry
    container.service.router = Router(parse_rules(RULES))  # Stripe is a double here: not enabled by settings
    yield container, first, second, third
    await container.close()


async def rows(container, request_id: str):
    async with container.db.read() as conn:
        return (await conn.execute(sa.select(payments).where(payments.c.request_id == request_id))).all()


async def events(container, payment_id: int):
    async with container.db.read() as conn:
        return await EventRepository(conn).list(payment_id, limit=100, after_id=0)


async def test_the_first_matching_rule_decides_and_is_recorded(routed):
    container, first, second, _ = routed
    result = await container.service.create_payment(SHOP, command("r-1"))
    created = result.payment
    assert created.provider == ProviderType.SANDBOX and created.status == PaymentStatus.PENDING
    assert result.routing_rule == "shop-cards"  # returned (PaymentEnvelopeResponse.routing_rule)
    timeline = await events(container, created.id)
    assert timeline[0].event_type == "payment_created" and timeline[0].message == "routed to sandbox by rule shop-cards"
    # A create naming its provider is not routed.
    named_result = await container.service.create_payment(SHOP, command("r-2", provider=1))
    named = named_result.payment
    assert named.provider == ProviderType.STRIPE and named_result.routing_rule == ""
    assert (await events(container, named.id))[0].message is None


async def test_a_refused_connection_fails_over_to_the_next_provider_making_exactly_one_payment(routed):
    container, first, second, _ = routed
    first.mode = "refuse"
    created = (await container.service.create_payment(SHOP, command("r-3"))).payment
    assert created.provider == ProviderType.STRIPE and created.status == PaymentStatus.PENDING
    assert (first.calls, second.calls) == (1, 1)
    assert created.provider_callback_url.split("/")[-2] == "stripe"
    assert [e.event_type for e in await events(container, created.id)] == [
        "payment_created", "provider_failover", "checkout_created"]
    # The retry of the same request is a replay of that one payment; no provider is called again.
    replay = await container.service.create_payment(SHOP, command("r-3"))
    assert replay.replayed and replay.payment.id == created.id and replay.routing_rule == "shop-cards"
    assert (first.calls, second.calls) == (1, 1)
    assert len(await rows(container, "r-3")) == 1


async def test_a_timeout_after_sending_is_not_failed_over(routed):
    container, first, second, _ = routed
    first.mode = "hang"
    with pytest.raises(ServiceUnavailableError):
        await container.service.create_payment(SHOP, command("r-4"))
    assert second.calls == 0
    [row] = await rows(container, "r-4")
    assert row.provider == ProviderType.SANDBOX and row.status == PaymentStatus.CREATED  # for reconcile, at sandbox


async def test_a_5xx_is_not_failed_over_but_an_open_circuit_is_skipped(routed):
    container, first, second, _ = routed
    first.mode = "fail"
    with pytest.raises(ServiceUnavailableError):
        await container.service.create_payment(SHOP, command("r-5"))
    assert second.calls == 0  # the first may have created something: the payment stays with it
    # The failure opened the first's circuit (threshold 1): the next create goes to the second, not calling the first.
    created = (await container.service.create_payment(SHOP, command("r-6"))).payment
    assert created.provider == ProviderType.STRIPE and (first.calls, second.calls) == (1, 1)
    assert (await events(container, created.id))[0].message == \
        "routed to stripe by rule shop-cards (sandbox skipped: circuit open)"


async def test_every_provider_skipped_for_its_open_circuit_is_named(routed):
    container, first, second, third = routed
    first.mode = second.mode = "fail"
    for request_id in ("g-1", "g-2"):  # the first opens sandbox's circuit, the second (skipping it) stripe's
        with pytest.raises(ServiceUnavailableError):
            await container.service.create_payment(SHOP, command(request_id, currency="gbp"))
    created = (await container.service.create_payment(SHOP, command("g-3", currency="gbp"))).payment
    assert created.provider == ProviderType.VNPAY and (first.calls, second.calls, third.calls) == (1, 1, 1)
    assert (await events(container, created.id))[0].message == \
        "routed to vnpay by rule gbp-any (sandbox, stripe skipped: circuit open)"


def test_rules_are_checked_at_start_up(tmp_path):
    def providers(rules):
        return build_providers(load_settings(base_env("sqlite+aiosqlite:///x", PAYMENTS_ROUTING_RULES=rules),
                                             base_dir=tmp_path))

    with pytest.raises(ConfigError, match="routing rule 'x': provider stripe is not enabled"):
        providers('[{"name": "x", "providers": ["stripe"]}]')
    with pytest.raises(ConfigError, match="provider vnpay is not enabled"):
        providers('[{"name": "x", "currencies": ["VND"], "providers": ["sandbox", "vnpay"]}]')
    with pytest.raises(ConfigError, match="cannot take currency EURO"):
        providers('[{"name": "x", "currencies": ["EURO"], "providers": ["sandbox"]}]')
    assert providers('[{"name": "x", "currencies": ["EUR"], "providers": ["sandbox"]}]').default == ProviderType.SANDBOX


@pytest.mark.parametrize("rules, problem", [
    ("{", "not valid JSON"),
    ('{"name": "x"}', "must be a JSON list"),
    ('[{"providers": ["sandbox"]}]', "routing rule 1 needs a name"),
    ('[{"name": "x", "providers": []}]', "providers must be a non-empty list"),
    ('[{"name": "x", "providers": ["paypal"]}]', "unknown provider 'paypal'"),
    ('[{"name": "x", "providers": ["sandbox"], "currency": ["USD"]}]', "unknown field(s) currency"),
    ('[{"name": "x", "providers": ["sandbox"], "payment_methods": ["cash"]}]', "unknown payment_method 'cash'"),
    ('[{"name": "x", "providers": ["sandbox"], "min_amount_cents": 5, "max_amount_cents": 1}]', "min_amount_cents is above"),
    ('[{"name": "x", "providers": ["sandbox"]}, {"name": "x", "providers": ["sandbox"]}]', "defined twice"),
])
def test_malformed_rules_are_one_clear_line(rules, problem):
    with pytest.raises(RoutingError) as refused:
        parse_rules(rules)
    assert problem in str(refused.value) and "\n" not in str(refused.value)
