"""`mysql+aiomysql://` URLs still work: asyncmy is the default MySQL driver, aiomysql the
pure-Python one an operator may keep. The service's idempotency rests on the unique key
on either."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from payments_svc.auth.caller import Caller
from payments_svc.config import load_settings
from payments_svc.container import build_container
from payments_svc.db.migrate import migrate
from payments_svc.db.tables import payments
from payments_svc.domain.errors import IdempotencyInProgressError
from payments_svc.domain.payment import ListPaymentsQuery
from payments_svc.providers.registry import ProviderRegistry

from ..integration.test_payment_service import ScriptedProvider, command
from ..support import base_env, new_database

pytestmark = pytest.mark.mysql


async def test_aiomysql_urls_serve_creates_replays_and_races(tmp_path):
    database = new_database("mysql", tmp_path)
    url = database.url.replace("mysql+asyncmy://", "mysql+aiomysql://")
    container = build_container(load_settings(base_env(url), base_dir=tmp_path))
    try:
        assert type(container.db.engine.sync_engine.dialect).__module__.endswith("aiomysql")
        await migrate(container.db)
        provider = ScriptedProvider()
        provider.delay = 0.2
        service = container.service
        service.providers = ProviderRegistry([provider], provider.type)
        shop = Caller("shop")
        results = await asyncio.gather(*(service.create_payment(shop, command("race")) for _ in range(10)),
                                       return_exceptions=True)
        created = {r.payment.id for r in results if not isinstance(r, Exception)}
        assert len(created) == 1
        assert all(isinstance(r, IdempotencyInProgressError) for r in results if isinstance(r, Exception))
        replay = await service.create_payment(shop, command("race"))
        assert replay.replayed and replay.payment.id in created
        assert [p.id for p in await service.list_payments(shop, ListPaymentsQuery(limit=5))] == list(created)
        async with container.db.read() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(payments))).scalar() == 1
        assert len(provider.create_calls) == 1
    finally:
        await container.close()
        database.drop()
