"""The per-process cache of accounts: within the TTL a payment's provider is neither
read from the database nor decrypted again; after it, a disabled account is refused and
a rotated one rebuilt."""

from __future__ import annotations

import base64
import os

import pytest

from payments_svc.accounts.encryption import parse_keys
from payments_svc.accounts.resolver import AccountDisabledError, AccountProviders
from payments_svc.accounts.store import AccountStore
from payments_svc.domain.enums import ProviderType
from payments_svc.domain.errors import NotFoundError

KEYS = parse_keys("k1:" + base64.b64encode(os.urandom(32)).decode())


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def resolver(container):
    store = AccountStore(container.db, KEYS)
    reads, built = [], []
    original_get = store.get

    async def counted_get(account_id):
        reads.append(account_id)
        return await original_get(account_id)

    store.get = counted_get

    class Built:
        type = ProviderType.STRIPE

        def __init__(self, credentials):
            self.secret_key = credentials.secret_key
            built.append(self)

    clock = Clock()
    yield AccountProviders(store, Built, ttl_seconds=30, clock=clock), store, clock, reads, built


async def test_cached_for_the_ttl_then_read_again(resolver):
    accounts, store, clock, reads, built = resolver
    account_id, _ = await store.add("shop", ProviderType.STRIPE, {"api_base": "https://api.stripe.com"},
                                    "sk_test_one", ("whsec_one",))
    assert await accounts.account_of("shop", ProviderType.STRIPE) == account_id
    assert await accounts.account_of("mall", ProviderType.STRIPE) is None
    first = await accounts.provider(account_id, ProviderType.STRIPE)
    for _ in range(50):
        assert await accounts.provider(account_id, ProviderType.STRIPE) is first
    assert (len(reads), len(built)) == (1, 1)
    assert first.account_id == account_id and first.secret_key == "sk_test_one"

    clock.now += 31  # unchanged: read again, not rebuilt (its connections are kept)
    assert await accounts.provider(account_id, ProviderType.STRIPE) is first
    assert (len(reads), len(built)) == (2, 1)

    await store.rotate(account_id, "sk_test_two", None)
    assert (await accounts.provider(account_id, ProviderType.STRIPE)).secret_key == "sk_test_one"  # within the TTL
    clock.now += 31
    assert (await accounts.provider(account_id, ProviderType.STRIPE)).secret_key == "sk_test_two"

    await store.disable(account_id)
    clock.now += 31
    for _ in range(3):
        with pytest.raises(AccountDisabledError, match=f"provider account {account_id} .* is disabled"):
            await accounts.provider(account_id, ProviderType.STRIPE)
    assert len(reads) == 4  # the refusal is cached too
    assert await accounts.account_of("shop", ProviderType.STRIPE) is None  # creates fall back to the default

    with pytest.raises(NotFoundError, match="provider account 999 not found"):
        await accounts.provider(999, ProviderType.STRIPE)
    other, _ = await store.add("mall", ProviderType.STRIPE, {"api_base": "https://api.stripe.com"}, "sk_test_3",
                               ("whsec_3",))
    with pytest.raises(NotFoundError, match=f"provider account {other} is not a vnpay account"):
        await accounts.provider(other, ProviderType.VNPAY)
