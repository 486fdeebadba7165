"""Session fixtures of the e2e suite: one stack for the whole run.

    database    E2E_DB_URL (made and migrated by e2e/run.sh, which drops it), else a new
                database on E2E_DATABASE_URL / the local MariaDB, made and dropped here
    fakes       FakeStripe, FakeHorizon and FakeVnpay in threads of this process (the tests
                play Stripe, VNPay, the customer and the Stellar network with them)
    receiver    the callers' status callback endpoint
    stack       `payments-svc serve` and every worker, as real processes pointed at all of it

Short intervals and timeouts (the *_SECONDS variants of the job variables) keep the
run short; STACK_ENV lists them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .clients import GrpcApi, HttpApi, Receiver
from .providers import (
    CALLER,
    Chain,
    Driver,
    SandboxDriver,
    StellarDriver,
    StripeDriver,
    VnpayDriver,
    stellar_available,
    stripe_available,
    vnpay_available,
)
from .stack import Stack, clean_environ, create_database, drop_database, run_cli

PENDING_TIMEOUT_SECONDS = 25.0  # long enough that a slow, loaded run never expires a payment mid-flow
CALLBACK_HTTP_TIMEOUT_SECONDS = 2
JOB_BATCH_SIZE = JOB_CONCURRENCY = 10
# A dispatcher's lease: timeout x (ceil(batch / concurrency) + 1), see jobs/runner.py.
DISPATCH_LEASE_SECONDS = CALLBACK_HTTP_TIMEOUT_SECONDS * (-(-JOB_BATCH_SIZE // JOB_CONCURRENCY) + 1)
DRAIN_SECONDS = 1

STACK_ENV = {
    "PAYMENTS_ENV": "test",
    "LOG_LEVEL": "info",
    "PAYMENTS_SANDBOX_ENABLED": "true",
    "PAYMENTS_SANDBOX_DELAY_MS": "100",
    "PAYMENTS_DEFAULT_PROVIDER": "sandbox",
    "PAYMENTS_SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS),
    "PAYMENTS_SHUTDOWN_GRACE_SECONDS": "15",
    "PAYMENTS_AUTH_CACHE_TTL_SECONDS": "60",
    "PAYMENTS_PENDING_TIMEOUT_SECONDS": str(PENDING_TIMEOUT_SECONDS),
    "PAYMENTS_RECONCILE_STALE_AFTER_SECONDS": "1",
    "PAYMENTS_RECONCILE_BACKOFF": "1s",
    "PAYMENTS_RECONCILE_INTERVAL_SECONDS": "0.5",
    "PAYMENTS_EXPIRE_PENDING_INTERVAL_SECONDS": "0.5",
    "PAYMENTS_CALLBACK_DISPATCH_INTERVAL_SECONDS": "0.2",
    "PAYMENTS_CALLBACK_HTTP_TIMEOUT_SECONDS": str(CALLBACK_HTTP_TIMEOUT_SECONDS),
    "PAYMENTS_CALLBACK_RETRY_INTERVAL_SECONDS": "0.5",
    "PAYMENTS_CALLBACK_RETRY_MAX_INTERVAL_SECONDS": "2",
    "PAYMENTS_CALLBACK_ALLOWED_HOSTS": "127.0.0.1",
    "PAYMENTS_JOB_BATCH_SIZE": str(JOB_BATCH_SIZE),
    "PAYMENTS_JOB_CONCURRENCY": str(JOB_CONCURRENCY),
}


@dataclass
class Deployment:
    stack: Stack
    api_key: str
    signing_secret: str  # e2e-shop's, from `payments-svc keys signing-secret`
    drivers: dict[str, Driver]
    skipped: dict[str, str] = field(default_factory=dict)  # provider -> why it does not run
    fakes: dict[str, object] = field(default_factory=dict)

    def cli(self, *args: str) -> str:
        return run_cli(self.stack.env, *args)


@pytest.fixture(scope="session")
def run_dir():
    given = os.environ.get("E2E_RUN_DIR")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="payments-e2e-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(run_dir):
    given = os.environ.get("E2E_DB_URL")
    if given:  # e2e/run.sh made and migrated it, and drops it
        yield given
        return
    url = create_database(os.environ.get("E2E_DATABASE_URL"), run_dir)
    try:
        run_cli({**clean_environ(), "PAYMENTS_DATABASE_URL": url}, "db", "migrate")
        yield url
    finally:
        if not os.environ.get("E2E_KEEP_DATABASE"):
            drop_database(url)


@pytest.fixture(scope="session")
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def fakes():
    """The providers' test doubles that exist in this checkout, and why others are skipped."""
    running, skipped = {}, {}
    problem = stripe_available()
    if problem is None:
        from tests.fakes.stripe_server import FakeStripe

        running["stripe"] = FakeStripe().start_in_thread()
    else:
        skipped["stripe"] = skipped["stripe-link"] = problem
    problem = stellar_available()
    if problem is None:
        from tests.fakes.horizon_server import FakeHorizon

        horizon = FakeHorizon(sse_retry_ms=100, keepalive_interval=0.5)
        horizon.start_in_thread()
        running["horizon"] = horizon
        running["chain"] = Chain.create(horizon)
    else:
        skipped["stellar"] = problem
    problem = vnpay_available()
    if problem is None:
        from tests.fakes.vnpay_server import FakeVnpay

        running["vnpay"] = FakeVnpay().start_in_thread()
    else:
        skipped["vnpay"] = problem
    yield running, skipped
    if "stripe" in running:
        running["stripe"].stop_thread()
    if "horizon" in running:
        running["horizon"].stop_thread()
    if "vnpay" in running:
        running["vnpay"].stop_thread()


@pytest.fixture(scope="session")
def deployment(database_url, fakes, run_dir):
    running, skipped = fakes
    stack = Stack({**clean_environ(), **STACK_ENV, "PAYMENTS_DATABASE_URL": database_url}, run_dir)
    drivers: dict[str, Driver] = {"sandbox": SandboxDriver(stack.server.http_url)}
    if "stripe" in running:
        drivers["stripe"] = StripeDriver(running["stripe"])
        drivers["stripe-link"] = StripeDriver(running["stripe"], method=2)
    if "chain" in running:
        drivers["stellar"] = StellarDriver(running["chain"])
    if "vnpay" in running:
        drivers["vnpay"] = VnpayDriver(running["vnpay"], stack.server.http_url)
    for driver in drivers.values():
        stack.env.update(driver.env)
    for worker in ("dispatcher", "reconcile", "expire"):
        stack.add_worker(worker)
    if "stellar" in drivers:
        stack.add_worker("stellar-watch")

    try:
        # Each CLI run is a process start: overlap them with the stack's.
        with ThreadPoolExecutor(3) as pool:
            key = pool.submit(run_cli, stack.env, "keys", "create", "--service", CALLER)
            secret = pool.submit(run_cli, stack.env, "keys", "signing-secret", "--service", CALLER)
            started = pool.submit(stack.start)
        api_key, signing_secret = key.result().strip(), secret.result().strip()
        started.result()
        assert signing_secret.startswith("whsec_"), signing_secret
        yield Deployment(stack, api_key, signing_secret, drivers, skipped, running)
    finally:
        codes = stack.stop()
    bad = {name: code for name, code in codes.items() if code != 0}
    assert not bad, f"processes did not stop cleanly on SIGTERM: {bad}; logs in {run_dir / 'logs'}"


PROVIDERS = ["sandbox", "stripe", "stripe-link", "stellar", "vnpay"]


@pytest.fixture(params=PROVIDERS)
def driver(request, deployment) -> Driver:
    name = request.param
    if name not in deployment.drivers:
        pytest.skip(f"{name}: {deployment.skipped.get(name, 'not available')}")
    return deployment.drivers[name]


@pytest.fixture(params=["grpc", "http"])
async def api(request, deployment):
    server = deployment.stack.server
    client = GrpcApi(server.grpc_target, deployment.api_key) if request.param == "grpc" else \
        HttpApi(server.http_url, deployment.api_key)
    yield client
    await client.close()


@pytest.fixture
async def http(deployment):
    client = HttpApi(deployment.stack.server.http_url, deployment.api_key)
    yield client
    await client.close()


@pytest.fixture
async def grpc_api(deployment):
    client = GrpcApi(deployment.stack.server.grpc_target, deployment.api_key)
    yield client
    await client.close()


def pytest_report_header(config):
    from payments_svc.config import redact_url

    given = os.environ.get("E2E_DB_URL")
    return [f"e2e database: {redact_url(given) if given else 'made by the suite'}"]
