"""Fixtures of the VNPay tests: the fake VNPay (one per module, in a thread) and a real
`payments-svc serve` per backend pointed at it, whose /webhooks/vnpay is the terminal's
IPN URL. The transport clients are the Stripe tests' (plain dicts over gRPC and HTTP)."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.vnpay_server import FakeVnpay
from tests.stripe.conftest import Deployment, GrpcApi, HttpApi, _migrate_and_create_key

from ..conftest import BACKENDS
from ..support import ServerProcess, base_env, new_database


@pytest.fixture(scope="module")
def fake():
    server = FakeVnpay().start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture(scope="module", params=BACKENDS)
def module_database(request, tmp_path_factory):
    db = new_database(request.param, tmp_path_factory.mktemp(request.param))
    yield db
    db.drop()


@pytest.fixture(scope="module")
def deployment(fake, module_database, tmp_path_factory):
    from payments_svc.config import load_settings

    env = base_env(module_database.url, **fake.env(), PAYMENTS_SANDBOX_ENABLED="false",
                   PAYMENTS_AUTH_CACHE_TTL_SECONDS="60", PAYMENTS_PROVIDER_TIMEOUT_SECONDS="5",
                   PAYMENTS_RECONCILE_STALE_AFTER_SECONDS="0.2", TEST_LOG_DIR=str(tmp_path_factory.mktemp("logs")))
    api_key = asyncio.run(_migrate_and_create_key(load_settings(env)))
    server = ServerProcess(env)
    fake.ipn_url = f"{server.http_url}/webhooks/vnpay"  # as registered with VNPay for the terminal
    server.start()
    yield Deployment(module_database, server, api_key)
    server.stop()


@pytest.fixture(params=["grpc", "http"])
async def api(request, deployment):
    client = (GrpcApi if request.param == "grpc" else HttpApi)(deployment)
    yield client
    await client.close()


@pytest.fixture
async def http(deployment):
    client = HttpApi(deployment)
    yield client
    await client.close()
