"""Operator endpoints: Prometheus metrics (no API key: they carry no payment data)."""

from __future__ import annotations

import contextlib

from aiohttp import web

from ... import metrics
from ...db.engine import Database
from ...domain.errors import ServiceUnavailableError
from ...service.callbacks import refresh_outbox_metrics


class OpsRoutes:
    def __init__(self, db: Database):
        self.db = db

    def register(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self.metrics)

    async def metrics(self, request: web.Request) -> web.Response:
        with contextlib.suppress(ServiceUnavailableError):  # in an outage, metrics matter most: serve the rest
            await refresh_outbox_metrics(self.db)
        body, content_type = metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})
