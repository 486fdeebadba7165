"""The paging entry point for jobs (reconcile, expire) and the one-off watch, and the
two ways reading the feed fails. Cheap to import: stellar-sdk is loaded only when
Stellar is configured."""

from __future__ import annotations

from ...config import Settings
from ...db.engine import Database


class HorizonUnavailable(Exception):
    """Horizon could not be reached or answered something unusable; retry later, not
    before `retry_after` seconds when Horizon said so (Retry-After, on a 429)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class FeedRefused(Exception):
    """The feed cannot be read safely from the stored cursor: Horizon serves another
    network, or does not hold the history around the cursor (a network reset, a wrong
    STELLAR_START_CURSOR, a Horizon restored from an old backup). Nothing is applied
    until an operator acts (README, Stellar; deployment.md, runbook)."""


async def sync_stellar_payments(db: Database, settings: Settings) -> int:
    """Pages the receiving account's payments from the stored cursor until caught up;
    returns how many feed records were applied, 0 when Stellar is not configured.
    Raises HorizonUnavailable or FeedRefused."""
    if settings.stellar is None:
        return 0
    from .feed import StellarFeed, horizon_client

    async with horizon_client(settings.stellar) as horizon:
        feed = StellarFeed(db, settings.stellar, horizon)
        await feed.prepare()
        return await feed.catch_up()
