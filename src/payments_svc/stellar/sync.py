"""The paging entry point for jobs (reconcile) and the one-off watch. Cheap to
import: stellar-sdk is loaded only when Stellar is configured."""

from __future__ import annotations

from ..config import Settings
from ..db.engine import Database


class HorizonUnavailable(Exception):
    """Horizon could not be reached or answered something unusable; retry later."""


async def sync_stellar_payments(db: Database, settings: Settings) -> int:
    """Pages the receiving account's payments from the stored cursor until caught up;
    returns how many feed records were applied, 0 when Stellar is not configured.
    Raises HorizonUnavailable, or ConfigError when Horizon serves another network."""
    if settings.stellar is None:
        return 0
    from .feed import StellarFeed, horizon_server

    async with horizon_server(settings.stellar) as server:
        feed = StellarFeed(db, settings.stellar, server)
        await feed.prepare()
        return await feed.catch_up()
