"""caller_limits' repository at its edges, on SQLite, MariaDB and PostgreSQL: the limits set
per service (only the given ones change, None puts one back to the default, another
`keys limits` inserting the row first loses to the later word), listed by service name,
deleted; and the count of a caller's open payments the cap compares, up to the cap."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from payments_svc.auth.caller import Caller
from payments_svc.clock import utcnow
from payments_svc.db.tables import caller_limits, payments
from payments_svc.domain.enums import PaymentStatus
from payments_svc.repository.caller_limits import CallerLimitsRepository

from ..conftest import ALL_BACKENDS, fresh_database
from ..jobs.helpers import command

database = pytest.fixture(params=ALL_BACKENDS, name="database")(fresh_database)


async def set_limits(container, service: str, **values) -> None:
    async with container.db.transaction() as conn:
        await CallerLimitsRepository(conn).set(service, values)


async def listed(container) -> list[tuple[str, dict]]:
    async with container.db.read() as conn:
        return [(row.service_name, row.values) for row in await CallerLimitsRepository(conn).all()]


async def test_limits_are_set_per_service_and_listed_by_name(container):
    before = utcnow()
    await set_limits(container, "zeta", read_rps=1.5, read_burst=3)
    await set_limits(container, "alpha", max_open_payments=2)
    await set_limits(container, "mid", create_rps=4.0, create_burst=8)
    async with container.db.read() as conn:
        rows = await CallerLimitsRepository(conn).all()
    assert [(r.service_name, r.values) for r in rows] == [
        ("alpha", {"max_open_payments": 2}),
        ("mid", {"create_rps": 4.0, "create_burst": 8}),
        ("zeta", {"read_rps": 1.5, "read_burst": 3}),
    ]
    assert all(before <= r.updated_at <= utcnow() for r in rows)


async def test_setting_some_limits_keeps_the_others_and_none_puts_one_back(container):
    await set_limits(container, "shop", read_rps=1.0, read_burst=2)
    await set_limits(container, "billing", read_rps=7.0)
    async with container.db.read() as conn:
        [first] = [r for r in await CallerLimitsRepository(conn).all() if r.service_name == "shop"]
    await set_limits(container, "shop", create_burst=5, read_burst=None)
    async with container.db.read() as conn:
        rows = {r.service_name: r for r in await CallerLimitsRepository(conn).all()}
    assert rows["shop"].values == {"read_rps": 1.0, "create_burst": 5}
    assert rows["billing"].values == {"read_rps": 7.0}  # another service's row is not touched
    assert rows["shop"].updated_at >= first.updated_at and rows["billing"].updated_at <= rows["shop"].updated_at


class RacingConnection:
    """A connection on which another `keys limits` inserts the service's row just after
    our UPDATE found none (what two concurrent first settings of one service do)."""

    def __init__(self, conn, **theirs):
        self._conn = conn
        self._theirs = theirs
        self._raced = False

    def __getattr__(self, name):
        return getattr(self._conn, name)

    async def execute(self, statement, *args, **kwargs):
        if not self._raced:
            self._raced = True
            await self._conn.execute(caller_limits.insert().values(**self._theirs, updated_at=utcnow() - timedelta(hours=1)))
            return SimpleNamespace(rowcount=0)  # our UPDATE, before their row was there
        return await self._conn.execute(statement, *args, **kwargs)


async def test_a_row_another_setter_inserted_first_takes_our_limits(container):
    await set_limits(container, "billing", read_rps=7.0)
    before = utcnow()
    async with container.db.transaction() as conn:
        racing = RacingConnection(conn, service_name="shop", read_rps=9.0, create_burst=3)
        await CallerLimitsRepository(racing).set("shop", {"read_rps": 1.0})
    async with container.db.read() as conn:
        rows = {r.service_name: r for r in await CallerLimitsRepository(conn).all()}
    assert rows["shop"].values == {"read_rps": 1.0, "create_burst": 3}  # ours is the later word
    assert rows["shop"].updated_at >= before
    assert rows["billing"].values == {"read_rps": 7.0} and rows["billing"].updated_at < before


async def test_delete_says_whether_the_service_had_limits(container):
    await set_limits(container, "shop", read_rps=1.0)
    await set_limits(container, "billing", read_rps=2.0)
    async with container.db.transaction() as conn:
        repo = CallerLimitsRepository(conn)
        assert await repo.delete("shop") is True
        assert await repo.delete("shop") is False
        assert await repo.delete("nobody") is False
    assert await listed(container) == [("billing", {"read_rps": 2.0})]


async def test_open_payments_are_counted_per_caller_up_to_the_cap(container):
    service = container.service
    ids = [(await service.create_payment(Caller("shop"), command(f"open-{i}"))).payment.id for i in range(5)]
    await service.create_payment(Caller("billing"), command("theirs", caller_service="billing"))
    async with container.db.transaction() as conn:
        await conn.execute(payments.update().where(payments.c.id == ids[0]).values(status=int(PaymentStatus.CREATED)))
        await conn.execute(payments.update().where(payments.c.id == ids[1]).values(status=int(PaymentStatus.PAID)))
        await conn.execute(payments.update().where(payments.c.id == ids[2]).values(status=int(PaymentStatus.PROCESSING)))
    async with container.db.read() as conn:
        repo = CallerLimitsRepository(conn)
        # Open: CREATED and PENDING (ids 0, 3, 4); paid and processing ones are not.
        assert [await repo.count_open("shop", up_to) for up_to in (1, 2, 3, 4, 10)] == [1, 2, 3, 3, 3]
        assert await repo.count_open("billing", 10) == 1
        assert await repo.count_open("nobody", 10) == 0
        rows = (await conn.execute(sa.select(sa.func.count()).select_from(payments))).scalar_one()
    assert rows == 6
