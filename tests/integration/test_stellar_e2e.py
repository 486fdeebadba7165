"""End to end on SQLite and MariaDB: a real `payments-svc serve`, a real
`payments-svc stellar watch --worker` and FakeHorizon in a thread. Payments
created over HTTP and gRPC become PAID when matching payments reach the ledger,
through the streaming watcher, and through paging (`stellar watch` one-off) for
payments made while the watcher was down."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import grpc
import pytest
from stellar_sdk import Asset, Keypair, Network

from payments_svc.gen import payments_pb2 as pb
from payments_svc.gen import payments_pb2_grpc

from ..fakes.horizon_server import FakeHorizon
from ..support import REPO, ServerProcess, base_env, cli, create_key

PAID = 10


@pytest.fixture
def horizon():
    fake = FakeHorizon(sse_retry_ms=50, keepalive_interval=0.5)
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


def http(server: ServerProcess, key: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        server.http_url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"X-Request-ID": uuid.uuid4().hex, "X-API-Key": key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def eventually(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_stellar_payments_are_paid_by_the_watcher_and_by_paging(database, tmp_path, horizon):
    issuer, shop, buyer = Keypair.random(), Keypair.random(), Keypair.random()
    usdc = Asset("USDC", issuer.public_key)
    horizon.create_account(shop, {usdc: "0"})
    horizon.create_account(buyer, {Asset.native(): "1000", usdc: "1000"})
    env = base_env(
        database.url, TEST_LOG_DIR=str(tmp_path), STELLAR_HORIZON_URL=horizon.url,
        STELLAR_NETWORK_PASSPHRASE=Network.TESTNET_NETWORK_PASSPHRASE, STELLAR_RECEIVING_ACCOUNT=shop.public_key,
        STELLAR_ASSETS=f"USDC:{issuer.public_key},XLM:native", STELLAR_SILENCE_TIMEOUT_SECONDS="5",
        STELLAR_BACKOFF_MIN_SECONDS="0.1", STELLAR_BACKOFF_MAX_SECONDS="1",
    )
    cli(env, "db", "migrate")
    key = create_key(env, "shop")
    server = ServerProcess(dict(env)).start()
    watcher_log = tmp_path / "watcher.log"
    with open(watcher_log, "w") as log:
        watcher = subprocess.Popen([sys.executable, "-m", "payments_svc", "stellar", "watch", "--worker"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    channel = grpc.insecure_channel(server.grpc_target)
    stub = payments_pb2_grpc.PaymentsServiceStub(channel)

    def grpc_payment(payment_id: int) -> pb.Payment:
        metadata = (("x-request-id", uuid.uuid4().hex), ("x-api-key", key))
        return stub.GetPayment(pb.GetPaymentRequest(id=payment_id), metadata=metadata, timeout=10).payment

    def create_over_http(amount_cents: int) -> dict:
        return http(server, key, "POST", "/payments", {
            "request_id": uuid.uuid4().hex, "caller_service": "shop", "resource_type": "order", "resource_id": "o-1",
            "amount_cents": amount_cents, "currency": "usdc", "payment_method": "payment_link",
            "payment_type": "one_time", "provider": "stellar", "status_callback_url": "https://shop.example/cb",
        })["payment"]

    try:
        over_http = create_over_http(1500)
        instructions = over_http["stellar_instructions"]
        assert (over_http["provider"], over_http["status"], instructions["amount"]) == (2, 2, "15.00")
        assert instructions["memo"] == over_http["provider_payment_id"] and instructions["destination"] == shop.public_key
        assert over_http["checkout_url"].startswith(f"web+stellar:pay?destination={shop.public_key}&amount=15.00")

        request = pb.CreatePaymentRequest(
            request_id=uuid.uuid4().hex, caller_service="shop", resource_type="order", resource_id="o-2",
            amount_cents=2000, currency="USDC", payment_method=pb.PAYMENT_METHOD_PAYMENT_LINK,
            payment_type=pb.PAYMENT_TYPE_ONE_TIME, provider=pb.PROVIDER_TYPE_STELLAR,
            status_callback_url="https://shop.example/cb",
        )
        over_grpc = stub.CreatePayment(request, metadata=(("x-request-id", "r1"), ("x-api-key", key)), timeout=10).payment
        assert over_grpc.stellar_instructions.memo == over_grpc.provider_payment_id
        assert over_grpc.stellar_instructions.asset_issuer == issuer.public_key

        # The streaming watcher: one exact payment, one paid in two parts.
        horizon.pay_sync(buyer, shop, "15", usdc, instructions["memo"])
        horizon.pay_sync(buyer, shop, "12.5", usdc, over_grpc.stellar_instructions.memo)
        horizon.pay_sync(buyer, shop, "7.5", usdc, over_grpc.stellar_instructions.memo)
        paid = eventually(lambda: (p := http(server, key, "GET", f"/payments/{over_http['id']}")["payment"])["status"] == PAID and p)
        assert paid["received_cents"] == 1500
        paid_grpc = eventually(lambda: (p := grpc_payment(over_grpc.id)).status == PAID and p)
        assert paid_grpc.received_cents == 2000
    finally:
        watcher.send_signal(signal.SIGTERM)
        code = watcher.wait(30)
    assert code == 0, watcher_log.read_text()

    try:
        # Paid while the watcher is down; the one-off watch pages from the stored cursor.
        later = create_over_http(999)
        horizon.pay_sync(buyer, shop, "9.99", usdc, later["provider_payment_id"])
        assert http(server, key, "GET", f"/payments/{later['id']}")["payment"]["status"] == 2
        result = cli(env, "stellar", "watch")
        assert result.stdout.strip() == f"caught up: applied 1 feed record(s) of {shop.public_key}"
        assert grpc_payment(later["id"]).status == PAID
    finally:
        channel.close()
        assert server.stop() == 0, server.logs()
