"""Test helpers for the jobs: a real HTTP receiver on 127.0.0.1, a Standard Webhooks
verifier written from the spec (independent of the service's signer), a scripted
provider, seeding of due callbacks, and job processes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from aiohttp import web

from payments_svc.clock import utcnow
from payments_svc.config import load_settings
from payments_svc.db.engine import open_database
from payments_svc.db.migrate import migrate
from payments_svc.db.tables import callback_deliveries, payments
from payments_svc.domain.enums import DeliveryStatus, PaymentStatus
from payments_svc.domain.payment import CreatePaymentCommand
from payments_svc.providers.base import CancelOutcome
from payments_svc.providers.sandbox.provider import SandboxProvider

from ..support import REPO, base_env

# Standard Webhooks secrets (whsec_ + base64 of 24..64 bytes) for the tests.
SHOP_SECRET = "whsec_" + base64.b64encode(b"shop-secret-for-the-tests-0123456").decode()
OLD_SHOP_SECRET = "whsec_" + base64.b64encode(b"old-shop-secret-for-the-tests-012").decode()


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """The receiver's side of https://www.standardwebhooks.com: HMAC-SHA256 over
    "{webhook-id}.{webhook-timestamp}.{body}" with the base64-decoded part of the
    whsec_ secret; any of the space-separated "v1,<base64>" signatures may match."""
    msg_id, timestamp, signatures = headers["webhook-id"], headers["webhook-timestamp"], headers["webhook-signature"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    key = base64.b64decode(secret[len("whsec_"):])
    signed_content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed_content, hashlib.sha256).digest())
    for candidate in signatures.split(" "):
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature.encode(), expected):
            return True
    return False


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic() on arrival

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A callback receiver: records every request on arrival, then answers from
    `responses` ((status, headers) in order; 200 once they run out) after `delay`."""

    responses: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)  # don't wait out held requests
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str = "/callbacks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received(request.path, {k.lower(): v for k, v in request.headers.items()}, body, time.monotonic()))
        if self.delay:
            await asyncio.sleep(self.delay)
        status, headers = self.responses.pop(0) if self.responses else (200, {})
        return web.Response(status=status, headers=headers)

    def counts(self) -> Counter:
        return Counter(r.webhook_id for r in self.received)


class ScriptedProvider(SandboxProvider):
    """The sandbox provider with a script for the jobs: what fetch_status reports,
    what cancel answers, errors to raise; it counts its calls."""

    def __init__(self):
        super().__init__(public_base_url="http://127.0.0.1:1", webhook_secret="whsec_test")
        self.create_keys: list[str] = []
        self.create_errors: list[Exception] = []
        self.cancel_keys: list[str] = []
        self.cancel_outcome = CancelOutcome.CANCELED
        self.cancel_errors: list[Exception] = []
        self.statuses: dict[str, PaymentStatus | None] = {}  # by provider_payment_id
        self.status_errors: list[Exception] = []
        self.status_calls: list[int] = []

    async def create_checkout(self, payment, idempotency_key):
        self.create_keys.append(idempotency_key)
        if self.create_errors:
            raise self.create_errors.pop(0)
        return await super().create_checkout(payment, idempotency_key)

    async def cancel(self, payment, idempotency_key):
        self.cancel_keys.append(idempotency_key)
        if self.cancel_errors:
            raise self.cancel_errors.pop(0)
        return self.cancel_outcome

    async def fetch_status(self, payment):
        self.status_calls.append(payment.id)
        if self.status_errors:
            raise self.status_errors.pop(0)
        return self.statuses.get(payment.provider_payment_id)


def command(request_id: str, callback_url: str = "https://shop.example/cb", **overrides) -> CreatePaymentCommand:
    fields = dict(
        request_id=request_id, caller_service="shop", resource_type="order", resource_id="o-1", customer_ref="",
        amount_cents=1500, currency="usd", payment_method=1, payment_type=1, provider=0,
        recurring_interval="", recurring_interval_count=0, status_callback_url=callback_url,
        success_url="", cancel_url="", metadata={"cart": "42"},
    )
    fields.update(overrides)
    return CreatePaymentCommand(**fields)


async def migrate_database(database_url: str) -> None:
    db = open_database(load_settings(base_env(database_url)))
    try:
        await migrate(db)
    finally:
        await db.close()


async def seed_due_callbacks(database_url: str, count: int, callback_url: str, *, caller: str = "shop") -> list[str]:
    """`count` canceled payments, each with one due callback; returns the delivery ids."""
    db = open_database(load_settings(base_env(database_url)))
    now = utcnow() - timedelta(seconds=1)
    tag = uuid.uuid4().hex[:8]
    rows = [
        dict(
            request_id=f"seed-{tag}-{i}", caller_service=caller, request_fingerprint="0" * 64, resource_type="order",
            resource_id=f"o-{i}", amount_cents=100 + i, currency="USD", status=int(PaymentStatus.CANCELED),
            payment_method=1, payment_type=1, provider=100, provider_payment_id=f"sbx_{tag}_{i}",
            provider_callback_hash=f"{tag}-{i}", provider_callback_url="http://127.0.0.1:1/cb",
            status_callback_url=callback_url, refundable_cents=100 + i, metadata_json="{}", created_at=now, updated_at=now,
        )
        for i in range(count)
    ]
    try:
        async with db.transaction() as conn:
            await conn.execute(payments.insert(), rows)
            ids = (await conn.execute(
                sa.select(payments.c.id).where(payments.c.request_id.like(f"seed-{tag}-%")).order_by(payments.c.id)
            )).scalars().all()
            deliveries = [
                dict(delivery_id=f"msg_{tag}_{i}", payment_id=pid, caller_service=caller, event_type="payment.canceled",
                     payment_status=int(PaymentStatus.CANCELED), status=int(DeliveryStatus.PENDING), attempts=0,
                     next_attempt_at=now, created_at=now, updated_at=now)
                for i, pid in enumerate(ids)
            ]
            await conn.execute(callback_deliveries.insert(), deliveries)
    finally:
        await db.close()
    return [d["delivery_id"] for d in deliveries]


async def delivery_rows(database_url: str) -> dict[str, sa.Row]:
    db = open_database(load_settings(base_env(database_url)))
    try:
        async with db.read() as conn:
            return {r.delivery_id: r for r in await conn.execute(sa.select(callback_deliveries))}
    finally:
        await db.close()


@dataclass
class JobProcess:
    """`payments-svc <args>` as a real process; stderr (JSON logs) goes to a file."""

    env: dict[str, str]
    args: tuple[str, ...]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> JobProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "payments_svc", *self.args, env=self.env, cwd=str(REPO),
            stdout=asyncio.subprocess.DEVNULL, stderr=open(self.log_path, "w"),
        )
        return self

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 20) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)

    def logs(self) -> list[dict]:
        lines = []
        for line in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append({"event": "raw", "line": line})
        return lines

    def kill_if_running(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


async def run_cli(env: dict[str, str], *args: str, timeout: float = 30) -> tuple[int, str, str]:
    """Runs a CLI command without blocking the event loop (the receiver lives on it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "payments_svc", *args, env=env, cwd=str(REPO),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def eventually(predicate: Callable[[], bool], timeout: float = 20, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def job_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a job process: the shop's signing secret, unbuffered logs."""
    return base_env(database_url, PAYMENTS_CALLBACK_SIGNING_SECRETS=f"shop={SHOP_SECRET}", PYTHONUNBUFFERED="1", **extra)
