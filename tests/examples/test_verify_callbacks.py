"""examples/verify_callbacks.py, run as an integrator runs it (its own process, the
`standardwebhooks` package), receiving a real delivery of the service's callback
dispatcher (`payments-svc callbacks dispatch`), and requests signed here from the
Standard Webhooks spec without the service's signer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from payments_svc.domain.enums import DeliveryStatus

from ..jobs.helpers import OLD_SHOP_SECRET, SHOP_SECRET, delivery_rows, migrate_database, run_cli, seed_due_callbacks
from ..support import REPO, base_env, new_database

EXAMPLE = REPO / "examples" / "verify_callbacks.py"


class Example:
    """The example receiver as a process; reads its JSON lines."""

    def __init__(self, *secrets: str):
        args = [sys.executable, str(EXAMPLE), "--port", "0"]
        for secret in secrets:
            args += ["--secret", secret]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first = json.loads(self.proc.stdout.readline())
        self.url = first["listening"] + "payments/callback"

    def next_report(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            assert line, "the example exited"
            if line.startswith("{"):
                return json.loads(line)

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def example():
    receiver = Example(SHOP_SECRET)
    yield receiver
    receiver.stop()


def signed(secret: str, body: bytes, msg_id: str, timestamp: int) -> dict[str, str]:
    """The three headers, computed from the spec: HMAC-SHA256 of "id.timestamp.body" with
    the base64-decoded part of the whsec_ secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": "v1," + base64.b64encode(mac).decode()}


async def test_a_delivery_of_the_dispatcher_is_verified_and_acknowledged(example, tmp_path):
    database = new_database("sqlite", tmp_path)
    await migrate_database(database.url)
    (delivery_id,) = await seed_due_callbacks(database.url, 1, example.url)
    env = base_env(database.url, PAYMENTS_CALLBACK_SIGNING_SECRETS=f"shop={SHOP_SECRET}",
                   PAYMENTS_CALLBACK_ALLOWED_HOSTS="127.0.0.1")
    code, _, err = await run_cli(env, "callbacks", "dispatch")
    assert code == 0, err

    report = example.next_report()
    assert isinstance(report.pop("payment_id"), int)
    assert report == {"callback": "accepted", "webhook_id": delivery_id, "type": "payment.canceled", "status": 30}
    assert (await delivery_rows(database.url))[delivery_id].status == DeliveryStatus.SUCCESS


def test_independently_signed_callbacks_repeats_and_forgeries(example):
    body = json.dumps({"type": "payment.paid", "payment": {"id": 7, "status": 10, "resource_type": "order",
                                                          "resource_id": "1001"}}).encode()
    msg_id = "msg_" + uuid.uuid4().hex
    now = int(time.time())

    assert example.post(body, signed(SHOP_SECRET, body, msg_id, now)) == (200, {"received": msg_id})
    assert example.next_report()["callback"] == "accepted"
    assert example.post(body, signed(SHOP_SECRET, body, msg_id, now + 5))[0] == 200  # a retry: handled once
    assert example.next_report() == {"callback": "duplicate", "webhook_id": msg_id, "type": "payment.paid",
                                     "payment_id": 7, "status": 10}

    # A rotation in progress: the service sends one signature per secret; either verifies.
    two = signed(SHOP_SECRET, body, "msg_two", now)
    two["webhook-signature"] = f"{signed(OLD_SHOP_SECRET, body, 'msg_two', now)['webhook-signature']} {two['webhook-signature']}"
    assert example.post(body, two)[0] == 200
    assert example.next_report()["callback"] == "accepted"

    forgeries = {
        "another secret": signed(OLD_SHOP_SECRET, body, "msg_x", now),
        "a changed body": signed(SHOP_SECRET, body + b" ", "msg_x", now),
        "an old timestamp": signed(SHOP_SECRET, body, "msg_x", now - 600),
        "no signature": {"webhook-id": "msg_x", "webhook-timestamp": str(now)},
        "a malformed signature": {**signed(SHOP_SECRET, body, "msg_x", now), "webhook-signature": "garbage"},
    }
    for what, headers in forgeries.items():
        status, answer = example.post(body, headers)
        assert status == 400 and answer["error"].startswith("signature not verified"), what
        assert example.next_report()["callback"] == "rejected", what
