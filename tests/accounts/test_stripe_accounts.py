"""Two caller services with their own Stripe accounts (two fake Stripes with different
keys), beside the default account of the environment (a third): each caller's payments
are created, webhooked, canceled and refunded only through its own account; the
accounts table holds no plaintext secret; rotation, re-encryption, disabling, and the
start-up check of PAYMENTS_ENCRYPTION_KEYS. A real `payments-svc serve` and real CLI
processes, on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from dataclasses import dataclass

import aiohttp
import pytest

from tests.fakes.stripe_server import FakeStripe, deliver, sign_event

from ..conftest import BACKENDS
from ..stripe.conftest import db_rows
from ..support import ServerProcess, base_env, cli, create_key, new_database, wait_until
from ..support import TestDatabase as Database  # not collected as a test class

K1 = "k1:" + base64.b64encode(os.urandom(32)).decode()
K2 = "k2:" + base64.b64encode(os.urandom(32)).decode()
CACHE_SECONDS = 1
PENDING, PAID, CANCELED = 2, 10, 30


@dataclass
class Account:
    caller: str
    fake: FakeStripe
    webhook_secret: str
    id: int = 0
    api_key: str = ""


@dataclass
class Stack:
    database: Database
    env: dict[str, str]
    server: ServerProcess
    default: FakeStripe
    shop: Account
    mall: Account


def _fake(key: str) -> FakeStripe:
    return FakeStripe(secret_keys=(key,)).start_in_thread()


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("accounts")
    database = new_database(request.param, tmp)
    default = _fake("sk_test_default_" + uuid.uuid4().hex)
    shop = Account("shop", _fake("sk_test_shop_" + uuid.uuid4().hex), "whsec_shop_" + uuid.uuid4().hex)
    mall = Account("mall", _fake("sk_test_mall_" + uuid.uuid4().hex), "whsec_mall_" + uuid.uuid4().hex)
    env = base_env(database.url, STRIPE_SECRET_KEY=default.secret_key, STRIPE_WEBHOOK_SECRET="whsec_default",
                   STRIPE_API_BASE=default.url, PAYMENTS_SANDBOX_ENABLED="false", PAYMENTS_ENCRYPTION_KEYS=K1,
                   PAYMENTS_ACCOUNT_CACHE_SECONDS=str(CACHE_SECONDS), TEST_LOG_DIR=str(tmp))
    cli(env, "db", "migrate")
    for account in (shop, mall):
        account.api_key = create_key(env, account.caller)
        key_file, whsec_file = tmp / f"{account.caller}.key", tmp / f"{account.caller}.whsec"
        key_file.write_text(account.fake.secret_key + "\n")
        whsec_file.write_text(account.webhook_secret + "\n")
        out = cli(env, "accounts", "add", "--caller", account.caller, "--provider", "stripe", "--secret-key-file",
                  str(key_file), "--webhook-secret-file", str(whsec_file), "--api-base", account.fake.url).stdout
        account.id = int(out.split("added provider account ")[1].split(":")[0])
        assert f"/webhooks/stripe/{account.id}" in out
    server = ServerProcess(env).start()
    yield Stack(database, env, server, default, shop, mall)
    server.stop()
    for fake in (default, shop.fake, mall.fake):
        fake.stop_thread()
    database.drop()


async def _call(stack: Stack, account: Account, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    headers = {"X-Request-ID": uuid.uuid4().hex, "X-API-Key": account.api_key}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, stack.server.http_url + path, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)


async def _create(stack: Stack, account: Account) -> dict:
    status, answer = await _call(stack, account, "POST", "/payments", dict(
        request_id=uuid.uuid4().hex, caller_service=account.caller, resource_type="order", resource_id=uuid.uuid4().hex,
        amount_cents=1500, currency="usd", payment_method=1, payment_type=1, provider=1,
        status_callback_url="https://shop.example/cb"))
    assert status == 201, answer
    return answer["payment"]


def _last_reject(stack: Stack) -> str:
    """Why the latest refused webhook was refused (the answer says only "callback rejected")."""
    return db_rows(stack.database, "SELECT error FROM payment_callbacks WHERE status = 20 ORDER BY id DESC LIMIT 1")[0][0]


def _recorded_account(stack: Stack, payment_id: int):
    return db_rows(stack.database, "SELECT provider_account_id FROM payments WHERE id = ?", payment_id)[0][0]


async def test_each_caller_creates_through_its_own_account(stack):
    for account, other in ((stack.shop, stack.mall), (stack.mall, stack.shop)):
        payment = await _create(stack, account)
        session_id = payment["provider_payment_id"]
        assert account.fake.get(session_id)["id"] == session_id
        for elsewhere in (other.fake, stack.default):
            with pytest.raises(KeyError):
                elsewhere.get(session_id)
        assert _recorded_account(stack, payment["id"]) == account.id


async def test_webhooks_only_through_the_accounts_own_endpoint_and_secret(stack):
    shop, mall = stack.shop, stack.mall
    payment = await _create(stack, shop)
    events = shop.fake.complete_session(payment["provider_payment_id"])
    completed = next(e for e in events if e["type"] == "checkout.session.completed")
    base = stack.server.http_url + "/webhooks/stripe"

    # Signed with the shop account's secret, but at the mall's endpoint or the default one: refused.
    for url in (f"{base}/{mall.id}", base):
        status, text = await deliver(completed, url, shop.webhook_secret)
        assert status == 400, text
        assert "no v1 signature matches" in _last_reject(stack)
    # The mall's endpoint, signed with the mall's secret, about the shop's payment: refused too.
    status, text = await deliver(completed, f"{base}/{mall.id}", mall.webhook_secret)
    assert status == 400, text
    assert "of another provider account than this endpoint's" in _last_reject(stack)
    status, text = await deliver(completed, f"{base}/999999", shop.webhook_secret)
    assert status == 404, text
    assert (await _call(stack, shop, "GET", f"/payments/{payment['id']}"))[1]["payment"]["status"] == PENDING

    status, text = await deliver(completed, f"{base}/{shop.id}", shop.webhook_secret)
    assert status == 200, text
    assert (await _call(stack, shop, "GET", f"/payments/{payment['id']}"))[1]["payment"]["status"] == PAID


async def test_the_per_payment_url_verifies_with_the_payments_account(stack):
    mall = stack.mall
    payment = await _create(stack, mall)
    completed = next(e for e in mall.fake.complete_session(payment["provider_payment_id"])
                     if e["type"] == "checkout.session.completed")
    payload = json.dumps(completed).encode()
    url = f"{stack.server.http_url}/webhooks/providers/stripe/{payment['provider_callback_hash']}"

    async def post(secret: str) -> int:
        headers = {"X-Request-ID": uuid.uuid4().hex, "X-API-Key": mall.api_key, "Content-Type": "application/json",
                   "Stripe-Signature": sign_event(payload, secret)}
        async with aiohttp.ClientSession() as session, session.post(url, data=payload, headers=headers) as response:
            return response.status

    assert await post("whsec_default") == 400  # the default account's secret does not verify the mall's payment
    assert f"matches a webhook secret of provider account {mall.id}" in _last_reject(stack)
    assert await post(mall.webhook_secret) == 200
    assert (await _call(stack, mall, "GET", f"/payments/{payment['id']}"))[1]["payment"]["status"] == PAID


async def test_cancel_and_refund_use_the_payments_account(stack):
    shop = stack.shop
    open_payment = await _create(stack, shop)
    status, answer = await _call(stack, shop, "POST", f"/payments/{open_payment['id']}/cancel", {})
    assert status == 200 and answer["payment"]["status"] == CANCELED, answer
    assert shop.fake.get(open_payment["provider_payment_id"])["status"] == "expired"

    paid = await _create(stack, shop)
    for event in shop.fake.complete_session(paid["provider_payment_id"]):
        await deliver(event, f"{stack.server.http_url}/webhooks/stripe/{shop.id}", shop.webhook_secret)
    status, answer = await _call(stack, shop, "POST", f"/payments/{paid['id']}/refund",
                                 {"request_id": uuid.uuid4().hex, "amount_cents": 500})
    assert status == 200, answer
    assert shop.fake.get(answer["refund"]["provider_refund_id"])["amount"] == 500


async def test_the_accounts_table_holds_no_plaintext_secret(stack):
    rows = db_rows(stack.database, "SELECT * FROM provider_accounts")
    assert len(rows) == 2
    dump = "\n".join(str(value) for row in rows for value in row)
    for account in (stack.shop, stack.mall):
        for secret in (account.fake.secret_key, account.webhook_secret):
            assert secret not in dump
            assert base64.b64encode(secret.encode()).decode() not in dump
    ciphertexts = db_rows(stack.database, "SELECT secret_key, webhook_secret FROM provider_accounts")
    assert all(value.startswith("k1:") for row in ciphertexts for value in row)
    listing = cli(stack.env, "accounts", "list").stdout
    assert "shop\tstripe\tenabled" in listing and "encrypted-with=k1" in listing
    assert "sk_test" not in listing and "whsec_" not in listing


async def test_rotated_webhook_secret_is_used_within_the_cache_ttl(stack, tmp_path):
    mall = stack.mall
    new_secret = "whsec_mall_rotated_" + uuid.uuid4().hex
    (tmp_path / "whsec").write_text(new_secret)
    cli(stack.env, "accounts", "rotate-secret", str(mall.id), "--webhook-secret-file", str(tmp_path / "whsec"))
    payment = await _create(stack, mall)
    events = mall.fake.complete_session(payment["provider_payment_id"])
    completed = next(e for e in events if e["type"] == "checkout.session.completed")
    url = f"{stack.server.http_url}/webhooks/stripe/{mall.id}"

    async def accepted() -> bool:
        status, _ = await deliver(completed, url, new_secret)
        return status == 200

    await wait_until(accepted, timeout=CACHE_SECONDS + 5)
    status, _ = await deliver(completed, url, mall.webhook_secret)
    assert status == 400  # the old secret no longer verifies
    mall.webhook_secret = new_secret


async def test_a_disabled_account_is_refused_and_new_payments_use_the_default(stack):
    shop = stack.shop
    payment = await _create(stack, shop)
    assert "disabled provider account" in cli(stack.env, "accounts", "disable", str(shop.id)).stdout
    await asyncio.sleep(CACHE_SECONDS + 0.2)

    status, answer = await _call(stack, shop, "POST", f"/payments/{payment['id']}/cancel", {})
    assert status == 400 and f"provider account {shop.id} (stripe, caller service shop) is disabled" in answer["error"]
    assert answer["code"] == "failed_precondition"
    events = shop.fake.complete_session(payment["provider_payment_id"])
    status, text = await deliver(events[0], f"{stack.server.http_url}/webhooks/stripe/{shop.id}", shop.webhook_secret)
    assert status == 400 and f"provider account {shop.id} (stripe, caller service shop) is disabled" in text

    later = await _create(stack, shop)
    assert stack.default.get(later["provider_payment_id"])["id"] == later["provider_payment_id"]
    assert _recorded_account(stack, later["id"]) is None
    again = cli(stack.env, "accounts", "disable", str(shop.id), check=False)
    assert again.returncode == 1 and f"no enabled provider account with id {shop.id}" in again.stderr


async def test_key_rotation_and_reencrypt(stack):
    rotated = {**stack.env, "PAYMENTS_ENCRYPTION_KEYS": f"{K2},{K1}"}
    assert "re-encrypted 2 provider account(s) with key k2; 0 already were" in cli(rotated, "accounts", "reencrypt").stdout
    assert "re-encrypted 0" in cli(rotated, "accounts", "reencrypt").stdout  # a second run has nothing left
    ciphertexts = db_rows(stack.database, "SELECT secret_key, webhook_secret FROM provider_accounts")
    assert all(value.startswith("k2:") for row in ciphertexts for value in row)
    # Only the new key is needed now, and the old one alone no longer decrypts.
    only_new = {**stack.env, "PAYMENTS_ENCRYPTION_KEYS": K2}
    assert "webhook-secrets=1" in cli(only_new, "accounts", "list").stdout
    failed = cli(stack.env, "accounts", "list", check=False)
    assert failed.returncode == 1 and "which PAYMENTS_ENCRYPTION_KEYS does not list" in failed.stderr
    stack.env["PAYMENTS_ENCRYPTION_KEYS"] = f"{K2},{K1}"  # for the later tests' CLI calls


@pytest.mark.parametrize("keys, message", [
    (None, "PAYMENTS_ENCRYPTION_KEYS is not set, and 2 provider account(s) are stored encrypted"),
    ("k2:" + base64.b64encode(b"w" * 32).decode(), "does not decrypt with key 'k2'"),
    ("k2:short", "PAYMENTS_ENCRYPTION_KEYS: key 'k2' is not valid base64"),
])
def test_missing_or_wrong_keys_stop_serve_with_one_line(stack, keys, message):
    env = {k: v for k, v in stack.env.items() if k != "PAYMENTS_ENCRYPTION_KEYS"}
    if keys:
        env["PAYMENTS_ENCRYPTION_KEYS"] = keys
    result = cli(env, "serve", check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


async def test_account_changes_are_in_the_audit_trail(stack, tmp_path):
    (tmp_path / "sk").write_text("sk_test_audited_" + uuid.uuid4().hex)
    (tmp_path / "whsec").write_text("whsec_audited_" + uuid.uuid4().hex)
    added = cli(stack.env, "accounts", "add", "--caller", "audited", "--provider", "stripe", "--secret-key-file",
                str(tmp_path / "sk"), "--webhook-secret-file", str(tmp_path / "whsec"), "--api-base", stack.default.url).stdout
    account_id = added.split("added provider account ", 1)[1].split(":", 1)[0]
    cli(stack.env, "accounts", "rotate-secret", account_id, "--secret-key-file", str(tmp_path / "sk"))
    cli(stack.env, "accounts", "disable", account_id)
    listed = cli(stack.env, "audit", "list", "--target-type", "provider_account", "--target-id", account_id).stdout
    entries = [json.loads(line) for line in listed.splitlines()]
    assert [(e["action"], e["detail"]) for e in entries] == [  # newest first
        ("provider_account.disabled", ""),
        ("provider_account.rotated", "replaced the secret key"),
        ("provider_account.added", "stripe for caller service audited"),
    ]
    assert all(e["actor_service"] == "cli" and "_audited_" not in json.dumps(e) for e in entries)  # never a secret
