"""Reconcile and expire of a caller's payment go through the account it was created with
(not the default account, not the caller's account of today), in-process on SQLite and
MariaDB; the provider the service calls names its account (what a breaker keys on); a
create a routing rule sends to a provider uses the caller's account there too."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from datetime import timedelta

import pytest

from payments_svc.accounts.store import AccountStore
from payments_svc.auth.caller import Caller
from payments_svc.clock import utcnow
from payments_svc.db.tables import payments
from payments_svc.domain.enums import PaymentStatus, ProviderType
from payments_svc.domain.payment import CreatePaymentCommand
from payments_svc.jobs.expire import PendingExpirer
from payments_svc.jobs.reconcile import Reconciler
from payments_svc.resilience.routing import Router, parse_rules
from tests.fakes.stripe_server import FakeStripe

SHOP = Caller("shop")
KEYS = "k1:" + base64.b64encode(os.urandom(32)).decode()


@pytest.fixture(scope="module")
def fakes():
    default = FakeStripe(secret_keys=("sk_test_default",)).start_in_thread()
    own = FakeStripe(secret_keys=("sk_test_shop_own",)).start_in_thread()
    yield default, own
    default.stop_thread()
    own.stop_thread()


@pytest.fixture
async def service(make_container, fakes):
    default, own = fakes
    container = await make_container(
        STRIPE_SECRET_KEY=default.secret_key, STRIPE_WEBHOOK_SECRET="whsec_default", STRIPE_API_BASE=default.url,
        PAYMENTS_SANDBOX_ENABLED="false", PAYMENTS_PENDING_TIMEOUT_SECONDS="600",
        PAYMENTS_RECONCILE_STALE_AFTER_SECONDS="60", PAYMENTS_ENCRYPTION_KEYS=KEYS, PAYMENTS_ACCOUNT_CACHE_SECONDS="0",
    )
    store = AccountStore(container.db, container.settings.encryption_keys)
    container.account_id, _ = await store.add("shop", ProviderType.STRIPE, {"api_base": own.url}, own.secret_key,
                                              ("whsec_shop_own",))
    container.service.store = store
    yield container.service
    await container.close()


async def create(service, provider: int = 1):
    command = CreatePaymentCommand(
        request_id=uuid.uuid4().hex, caller_service="shop", resource_type="order", resource_id=uuid.uuid4().hex,
        customer_ref="", amount_cents=2500, currency="eur", payment_method=1, payment_type=1, provider=provider,
        recurring_interval="", recurring_interval_count=0, status_callback_url="https://shop.example/cb",
        success_url="", cancel_url="", metadata={},
    )
    return (await service.create_payment(SHOP, command)).payment


async def age(service, payment_id: int, seconds: float) -> None:
    then = utcnow() - timedelta(seconds=seconds)
    async with service.db.transaction() as conn:
        await conn.execute(payments.update().where(payments.c.id == payment_id).values(created_at=then, updated_at=then))


async def test_reconcile_and_expire_use_the_account_the_payment_was_created_with(service, fakes):
    default, own = fakes
    to_reconcile, to_expire = await create(service), await create(service)
    account_id = to_reconcile.provider_account_id
    assert account_id is not None
    provider = await service.providers.for_payment(to_reconcile)
    assert (provider.type, provider.account_id) == (ProviderType.STRIPE, account_id)
    own.complete_session(to_reconcile.provider_payment_id)  # its webhook never came
    # The caller gets a newer account (at the default fake): its new payments use that one,
    # the payments made before stay on theirs.
    newer, replaced = await service.store.add("shop", ProviderType.STRIPE, {"api_base": default.url}, default.secret_key,
                                              ("whsec_newer",))
    assert replaced == account_id
    assert (await create(service)).provider_account_id == newer

    await age(service, to_reconcile.id, 120)
    result = await Reconciler(service).run_batch(asyncio.Event())
    assert (result.claimed, result.done) == (1, 1)  # asked the shop's first Stripe: the default fake knows no such session
    assert (await service.get_payment(SHOP, to_reconcile.id)).status == PaymentStatus.PAID

    await age(service, to_expire.id, 700)
    result = await PendingExpirer(service).run_batch(asyncio.Event())
    assert result.done == 1
    assert (await service.get_payment(SHOP, to_expire.id)).status == PaymentStatus.EXPIRED
    assert own.get(to_expire.provider_payment_id)["status"] == "expired"
    with pytest.raises(KeyError):
        default.get(to_expire.provider_payment_id)


async def test_an_accounts_rejected_key_is_named_by_account_never_by_value(service, fakes):
    from payments_svc.accounts.credentials import AccountCredentials
    from payments_svc.container import account_provider
    from payments_svc.domain.errors import ProviderError

    default, _ = fakes
    wrong_key = "sk_test_not_known_to_the_fake_" + uuid.uuid4().hex
    provider = account_provider(service.settings, AccountCredentials(
        9, "shop", ProviderType.STRIPE, {"api_base": default.url}, wrong_key, ("whsec_z",)))
    payment = await create(service)
    try:
        with pytest.raises(ProviderError, match="Stripe rejected the secret key of provider account 9") as caught:
            await provider.fetch_status(payment)
        assert wrong_key not in caught.value.message and wrong_key not in repr(provider.__dict__)
    finally:
        await provider.close()


async def test_a_routed_create_uses_the_callers_own_account(service, fakes):
    default, own = fakes
    service.router = Router(parse_rules('[{"name": "eur-to-stripe", "currencies": ["EUR"], "providers": ["stripe"]}]'))
    routed = await create(service, provider=0)  # no provider named: the rule picks Stripe
    assert routed.provider == ProviderType.STRIPE
    assert routed.provider_account_id == (await create(service)).provider_account_id is not None
    assert own.get(routed.provider_payment_id)["status"] == "open"
    with pytest.raises(KeyError):
        default.get(routed.provider_payment_id)
