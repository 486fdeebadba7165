"""provider_objects: which payment a provider's object (payment intent, charge,
subscription, invoice) belongs to, for webhooks that name only such objects."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import payments, provider_objects
from ..domain.enums import ProviderType


class ProviderObjectRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def owners(self, provider: ProviderType, object_ids: Iterable[str]) -> set[tuple[str, int]]:
        """(object id, payment id) for each of these objects a payment owns: the payment's
        own object, or one recorded since."""
        ids = list(object_ids)
        if not ids:
            return set()
        known = sa.select(provider_objects.c.object_id, provider_objects.c.payment_id).where(
            provider_objects.c.provider == int(provider), provider_objects.c.object_id.in_(ids))
        own = sa.select(payments.c.provider_payment_id, payments.c.id).where(
            payments.c.provider == int(provider), payments.c.provider_payment_id.in_(ids))
        return {(row[0], row[1]) for row in await self.conn.execute(sa.union(known, own))}

    async def register(self, provider: ProviderType, payment_id: int, object_ids: Iterable[str], now: datetime) -> None:
        """Records the objects not recorded yet. Callers hold the payment's row lock,
        and an object belongs to one payment, so no other writer inserts the same ids."""
        # Ids as the column keeps them (255 characters), so one seen again is known and not
        # inserted twice.
        ids = list(dict.fromkeys(i[:255] for i in object_ids))
        if not ids:
            return
        stmt = sa.select(provider_objects.c.object_id).where(
            provider_objects.c.provider == int(provider), provider_objects.c.object_id.in_(ids))
        known = {row[0] for row in await self.conn.execute(stmt)}
        rows = [dict(provider=int(provider), object_id=i, payment_id=payment_id, created_at=now)
                for i in ids if i not in known]
        if rows:
            await self.conn.execute(provider_objects.insert(), rows)
