"""Built-in API keys in-process on SQLite and MariaDB: what is stored, which keys authenticate
(only the exact key, not one sharing its shown prefix), revocation, and the authenticator in
front of them. The HTTP and gRPC tests cover the same through real servers; these run in the
test's own process, where `make mutate` can see them."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
import sqlalchemy as sa

from payments_svc.auth.authenticators import INVALID_KEY
from payments_svc.auth.caller import Caller
from payments_svc.auth.keys import ApiKeyRepository
from payments_svc.clock import utcnow
from payments_svc.db.tables import api_keys
from payments_svc.domain.errors import UnauthenticatedError


async def create(container, service: str, acts_for: frozenset[str] = frozenset()):
    async with container.db.transaction() as conn:
        return await ApiKeyRepository(conn).create(service, acts_for)


async def find(container, api_key: str) -> Caller | None:
    async with container.db.read() as conn:
        return await ApiKeyRepository(conn).find_active(api_key)


async def test_a_key_is_shown_once_and_only_its_sha256_and_prefix_are_stored(container):
    before = utcnow()
    api_key, record = await create(container, "shop", frozenset({"billing", "ads"}))
    assert api_key.startswith("psk_") and len(api_key) == 4 + 43  # 32 random bytes, base64url
    assert record.service_name == "shop" and record.key_prefix == api_key[:12]
    assert record.acts_for == {"billing", "ads"} and record.revoked_at is None
    assert before - timedelta(seconds=1) <= record.created_at <= utcnow() + timedelta(seconds=1)
    async with container.db.read() as conn:
        row = (await conn.execute(sa.select(api_keys))).one()
    assert row.id == record.id
    assert row.key_hash == hashlib.sha256(api_key.encode()).hexdigest()  # computed here, not by the product
    assert row.key_prefix == api_key[:12] and api_key not in row._mapping.values()
    assert row.acts_for == "ads,billing"  # sorted, comma-separated


async def test_two_keys_differ_and_each_finds_its_own_service(container):
    shop_key, shop = await create(container, "shop")
    gateway_key, gateway = await create(container, "gateway", frozenset({"*"}))
    assert shop_key != gateway_key
    # key_id: the key's row id, what the audit trail records (never the key)
    assert await find(container, shop_key) == Caller("shop", frozenset(), key_id=str(shop.id))
    assert await find(container, gateway_key) == Caller("gateway", frozenset({"*"}), key_id=str(gateway.id))


async def test_only_the_exact_key_authenticates_not_one_sharing_its_prefix(container):
    api_key, record = await create(container, "shop")
    near_misses = [
        api_key[:-1] + ("A" if api_key[-1] != "A" else "B"),  # the shown prefix, another ending
        record.key_prefix,  # what `keys list` shows
        api_key + "x",
        api_key.upper(),
        " " + api_key,
        hashlib.sha256(api_key.encode()).hexdigest(),  # the stored hash itself is not a key
    ]
    for wrong in near_misses:
        assert await find(container, wrong) is None, wrong
        with pytest.raises(UnauthenticatedError) as err:
            await container.authenticator.authenticate(wrong)
        assert err.value.message == INVALID_KEY
    assert await container.authenticator.authenticate(api_key) == Caller("shop", frozenset(), key_id=str(record.id))


async def test_list_shows_every_key_in_creation_order_with_its_state(container):
    first, first_record = await create(container, "shop")
    _, second_record = await create(container, "gateway", frozenset({"shop", "ads"}))
    async with container.db.transaction() as conn:
        assert await ApiKeyRepository(conn).revoke(first_record.id) is True
    async with container.db.read() as conn:
        listed = await ApiKeyRepository(conn).list()
    assert [r.id for r in listed] == [first_record.id, second_record.id]
    revoked, active = listed
    assert (revoked.service_name, revoked.key_prefix, revoked.acts_for) == ("shop", first[:12], frozenset())
    assert revoked.revoked_at is not None and active.revoked_at is None
    assert (active.service_name, active.acts_for) == ("gateway", frozenset({"shop", "ads"}))
    created = second_record.created_at.replace(tzinfo=None)
    assert abs(active.created_at.replace(tzinfo=None) - created) < timedelta(seconds=1)


async def test_revoking_stops_the_key_once_and_leaves_the_others(container):
    api_key, record = await create(container, "shop")
    other_key, other = await create(container, "shop")
    async with container.db.transaction() as conn:
        repo = ApiKeyRepository(conn)
        assert await repo.revoke(record.id) is True
        assert await repo.revoke(record.id) is False  # already revoked: nothing to do
        assert await repo.revoke(record.id + 100) is False  # no such key
    assert await find(container, api_key) is None
    assert await find(container, other_key) == Caller("shop", frozenset(), key_id=str(other.id))
