"""A caller's own VNPay terminal (a second fake VNPay with its own code and hash secret)
beside the default terminal of the environment: its payment URL is signed for its
terminal, its IPN URL is /webhooks/vnpay/{id} and verifies with its secret, its refund
goes to its terminal; its IPN at the default terminal's URL is refused (97)."""

from __future__ import annotations

import base64
import os
import uuid

import aiohttp
import pytest

from tests.fakes.vnpay_server import FakeVnpay

from ..support import ServerProcess, base_env, cli, create_key, new_database

PAID = 10


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vnpay-accounts")
    database = new_database("sqlite", tmp)
    default = FakeVnpay().start_in_thread()
    own = FakeVnpay(tmn_code="SHOPTMN2", hash_secret="SHOPOWNVNPAYSECRET" + uuid.uuid4().hex.upper()).start_in_thread()
    env = base_env(database.url, **default.env(), PAYMENTS_SANDBOX_ENABLED="false", TEST_LOG_DIR=str(tmp),
                   PAYMENTS_ENCRYPTION_KEYS="k1:" + base64.b64encode(os.urandom(32)).decode())
    cli(env, "db", "migrate")
    api_key = create_key(env, "shop")
    (tmp / "hash").write_text(own.hash_secret)
    out = cli(env, "accounts", "add", "--caller", "shop", "--provider", "vnpay", "--tmn-code", own.tmn_code,
              "--secret-key-file", str(tmp / "hash"), "--api-base", own.api_url, "--payment-url", own.payment_url).stdout
    account_id = int(out.split("added provider account ")[1].split(":")[0])
    server = ServerProcess(env)
    default.ipn_url = f"{server.http_url}/webhooks/vnpay"
    own.ipn_url = f"{server.http_url}/webhooks/vnpay/{account_id}"  # as registered for the shop's terminal
    server.start()
    yield server, api_key, default, own
    server.stop()
    default.stop_thread()
    own.stop_thread()
    database.drop()


async def _call(server, api_key: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    headers = {"X-Request-ID": uuid.uuid4().hex, "X-API-Key": api_key}
    async with aiohttp.ClientSession() as session, \
            session.request(method, server.http_url + path, json=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def test_a_callers_own_terminal_end_to_end(stack):
    server, api_key, default, own = stack
    status, answer = await _call(server, api_key, "POST", "/payments", dict(
        request_id=uuid.uuid4().hex, caller_service="shop", resource_type="order", resource_id=uuid.uuid4().hex,
        amount_cents=150000, currency="VND", payment_method=1, payment_type=1, provider=3,
        status_callback_url="https://shop.example/cb"))
    assert status == 201, answer
    payment = answer["payment"]
    assert payment["checkout_url"].startswith(own.payment_url) and "vnp_TmnCode=SHOPTMN2" in payment["checkout_url"]

    delivery = await own.pay(payment["checkout_url"])  # the fake checks our signature with the shop's secret
    assert delivery.rsp_code == "00", delivery
    status, answer = await _call(server, api_key, "GET", f"/payments/{payment['id']}")
    assert answer["payment"]["status"] == PAID

    # The same signed IPN at the default terminal's URL: not this terminal's, nothing applies.
    txn_ref = delivery.params["vnp_TxnRef"]
    misrouted = FakeVnpay(own.tmn_code, own.hash_secret, ipn_url=default.ipn_url)
    assert (await misrouted.send_ipn(own.ipn_params(txn_ref))).rsp_code == "97"

    status, answer = await _call(server, api_key, "POST", f"/payments/{payment['id']}/refund",
                                 {"request_id": uuid.uuid4().hex, "amount_cents": 50000})
    assert status == 200, answer
    assert own.transaction(txn_ref).refunded == 50000 * 100  # vnp_Amount: the amount x 100
