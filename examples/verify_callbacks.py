"""Receiving payments-svc status callbacks, as a caller service would.

Each callback is `POST {"type": "payment.paid", "payment": {...}}` signed per Standard
Webhooks (https://www.standardwebhooks.com): `webhook-id`, `webhook-timestamp` and
`webhook-signature` headers. This receiver

  1. verifies the signature (and that the timestamp is within 5 minutes) with the
     `standardwebhooks` package, answering 400 to anything that does not verify;
  2. drops a repeat of a callback it has already handled: the webhook-id stays the same
     across retries, so dedupe on it (a real service records it in the same database
     transaction as its own change, not in memory as here);
  3. acts on the payment's status, then answers 2xx. Anything else (or no answer
     within the service's timeout) makes payments-svc retry, with backoff, for about a
     day and a half.

Run it:

    pip install standardwebhooks
    python examples/verify_callbacks.py --secret whsec_... [--port 8000]

and give payments `status_callback_url: http://<this host>:8000/payments/callback`.
The secret is the caller service's signing secret (README, "Status callbacks"); pass
--secret twice while you move to a rotated one.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PAID, FAILED, CANCELED, EXPIRED = 10, 20, 30, 40


def verify(webhooks: list[Webhook], headers: dict[str, str], body: bytes) -> dict:
    """The callback's JSON once one of the secrets verifies it; raises WebhookVerificationError."""
    problem = "no signing secret configured"
    for webhook in webhooks:
        try:
            return webhook.verify(body, headers)
        except WebhookVerificationError as exc:
            problem = str(exc)
        except ValueError:  # a malformed signature header or a body that is not UTF-8 JSON
            problem = "malformed callback"
    raise WebhookVerificationError(problem)


def handle(event: dict) -> None:
    """Your service's reaction. Statuses are final from PAID on; "payment.refunded" and
    other types may follow a PAID payment."""
    payment = event["payment"]
    if event["type"] == "payment.paid" and payment["status"] == PAID:
        print(f"fulfil {payment['resource_type']} {payment['resource_id']}", flush=True)
    elif payment["status"] in (FAILED, CANCELED, EXPIRED):
        print(f"release {payment['resource_type']} {payment['resource_id']}", flush=True)


class CallbackReceiver(ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int], secrets: list[str]):
        super().__init__(address, CallbackHandler)
        self.webhooks = [Webhook(secret) for secret in secrets]
        self.handled: set[str] = set()
        self.lock = threading.Lock()


class CallbackHandler(BaseHTTPRequestHandler):
    server: CallbackReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            event = verify(self.server.webhooks, dict(self.headers.items()), body)
        except WebhookVerificationError as exc:
            self._report("rejected", reason=str(exc))
            self._answer(400, {"error": f"signature not verified: {exc}"})
            return
        webhook_id = self.headers["webhook-id"]
        with self.server.lock:  # one thread per callback: handle each webhook-id once
            duplicate = webhook_id in self.server.handled
            if not duplicate:
                handle(event)
                self.server.handled.add(webhook_id)
        self._report("duplicate" if duplicate else "accepted", webhook_id=webhook_id, type=event["type"],
                     payment_id=event["payment"]["id"], status=event["payment"]["status"])
        self._answer(200, {"received": webhook_id})

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _report(self, outcome: str, **fields) -> None:
        print(json.dumps({"callback": outcome, **fields}), flush=True)

    def log_message(self, format: str, *args) -> None:
        pass  # _report says what happened, one JSON line per callback


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Verify payments-svc status callbacks (Standard Webhooks).")
    parser.add_argument("--secret", action="append", required=True, help="a whsec_ signing secret (repeatable)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    server = CallbackReceiver((args.host, args.port), args.secret)
    print(json.dumps({"listening": f"http://{args.host}:{server.server_address[1]}/"}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
