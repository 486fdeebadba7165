"""`make run` as a developer runs it (the Makefile's own recipe, `serve --with-workers` on
SQLite): a payment paid on the sandbox checkout page through its Pay action sends its
status callback, signed with the secret `keys signing-secret` shows, and GetPayment
reports it delivered. A second `make run` replaces the dev key instead of adding one."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from ..jobs.helpers import Receiver, verify_standard_webhook
from ..support import REPO, base_env, cli, free_port, wait_until

KEY = re.compile(r"^(psk_\S+)$", re.MULTILINE)
DELIVERED = 10

pytestmark = pytest.mark.skipif(subprocess.run(["which", "make"], capture_output=True).returncode != 0,
                                reason="make is not installed")


@dataclass
class MakeRun:
    proc: subprocess.Popen
    output: Path
    http_url: str

    def text(self) -> str:
        return self.output.read_text()

    def api_key(self) -> str:
        return KEY.findall(self.text())[-1]

    def stop(self) -> None:
        """Ctrl-C, as at a terminal: SIGINT to make and the server it runs."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(60)


def start_make_run(env: dict[str, str], output: Path) -> MakeRun:
    venv = Path(sys.executable).parent.parent
    http_port = free_port()
    env = dict(env, HTTP_HOST="127.0.0.1", GRPC_HOST="127.0.0.1", HTTP_PORT=str(http_port), GRPC_PORT=str(free_port()),
               PAYMENTS_PUBLIC_BASE_URL=f"http://127.0.0.1:{http_port}", LOG_LEVEL="info")
    # `-o install`: this environment is installed already (the suite runs in it).
    proc = subprocess.Popen(["make", "-s", "-o", "install", "run", f"VENV={venv}"], cwd=REPO, env=env,
                            stdout=output.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    run = MakeRun(proc, output, f"http://127.0.0.1:{http_port}")
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"make run exited with {proc.returncode}:\n{run.text()}")
        try:
            import urllib.request

            with urllib.request.urlopen(run.http_url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return run
        except OSError:
            if time.monotonic() > deadline:
                run.stop()
                raise AssertionError(f"make run not ready in time:\n{run.text()}") from None
            time.sleep(0.1)


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


async def test_make_run_delivers_a_paid_sandbox_payments_callback(tmp_path, receiver):
    env = base_env(f"sqlite+aiosqlite:///{tmp_path / 'dev.sqlite3'}")
    run = await asyncio.to_thread(start_make_run, env, tmp_path / "make-run-1.log")
    try:
        key = run.api_key()
        headers = {"X-API-Key": key, "X-Request-ID": uuid.uuid4().hex}
        async with aiohttp.ClientSession(run.http_url, headers=headers) as http:
            body = dict(request_id="order-1001-attempt-1", caller_service="shop", resource_type="order", resource_id="1001",
                        amount_cents=1999, currency="usd", payment_method="hosted_card", payment_type="one_time",
                        status_callback_url=receiver.url("/payments/callback"))
            async with http.post("/payments", json=body) as resp:
                assert resp.status == 201, await resp.text()
                payment = (await resp.json())["payment"]

            # The buyer's side: the checkout page, and its Pay button's form action.
            async with aiohttp.ClientSession() as browser:
                async with browser.get(payment["checkout_url"]) as page:
                    assert page.status == 200
                    [pay_action] = re.findall(r'formaction="([^"]+/pay)"', await page.text())
                async with browser.post(run.http_url + pay_action, allow_redirects=False) as paid:
                    assert paid.status == 303, await paid.text()

            await wait_until(lambda: _true(len(receiver.received) >= 1), timeout=30)
            [callback] = receiver.received
            assert callback.path == "/payments/callback" and callback.json()["type"] == "payment.paid"
            assert callback.json()["payment"]["id"] == payment["id"]

            async def delivered():
                async with http.get(f"/payments/{payment['id']}") as resp:
                    state = (await resp.json())["payment"].get("callback_delivery")
                return state if state and state["status"] == DELIVERED else None

            state = await wait_until(delivered, timeout=30)
            assert state["delivery_id"] == callback.webhook_id and state["attempts"] == 1 and state["last_status_code"] == 200

        # The dispatcher made shop's signing secret at its first delivery; the CLI shows that one.
        shown = await asyncio.to_thread(cli, env, "keys", "signing-secret", "--service", "shop")
        assert verify_standard_webhook(shown.stdout.strip(), callback.headers, callback.body)
    finally:
        await asyncio.to_thread(run.stop)
    assert '"event": "stopped"' in run.text(), run.text()

    again = await asyncio.to_thread(start_make_run, env, tmp_path / "make-run-2.log")
    try:
        assert "revoked the previous key(s) of dev-caller" in again.text()
        assert again.api_key() != key
        listed = (await asyncio.to_thread(cli, env, "keys", "list")).stdout.splitlines()
        dev_keys = [line for line in listed if "\tdev-caller\t" in line]
        assert len(dev_keys) == 2 and sum(line.endswith("\tactive") for line in dev_keys) == 1, listed
        async with aiohttp.ClientSession(again.http_url) as http:
            async with http.get("/payments/1", headers={"X-API-Key": key, "X-Request-ID": "r"}) as resp:
                assert resp.status == 401  # the first run's key is revoked
            async with http.get("/payments/1", headers={"X-API-Key": again.api_key(), "X-Request-ID": "r"}) as resp:
                assert resp.status == 200
    finally:
        await asyncio.to_thread(again.stop)


async def _true(value):
    return value
