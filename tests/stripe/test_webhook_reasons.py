"""What a refused Stripe webhook is told, word for word: the reason is what an operator reads in
the callback log (payment_callbacks) to tell a wrong secret from a stale or broken delivery."""

from __future__ import annotations

import time

import pytest

from payments_svc.domain.errors import CallbackRejectedError
from tests.fakes.stripe_server import sign_event

from .test_provider import SECRET, fake, provider  # noqa: F401  (fixtures)

EVENT = b'{"id": "evt_reasons", "object": "event", "type": "checkout.session.completed"}'


@pytest.mark.parametrize("payload, secret, reason", [
    (b"\xff\xfe", SECRET, "payload is not UTF-8"),
    (EVENT, "whsec_other", "invalid stripe signature: no v1 signature matches a STRIPE_WEBHOOK_SECRET"),
    (EVENT, None, "invalid stripe signature: no v1 signature matches a STRIPE_WEBHOOK_SECRET"),
    (b"{not json", SECRET, "payload is not valid JSON"),
], ids=["not-utf8", "other-secret", "no-signature", "not-json"])
async def test_a_refused_webhook_says_exactly_why(provider, payload, secret, reason):  # noqa: F811
    signature = sign_event(payload if payload.isascii() else b"x", secret) if secret else ""
    with pytest.raises(CallbackRejectedError) as rejected:
        provider.parse_callback(payload, signature)
    assert rejected.value.reason == reason


async def test_a_stale_signature_names_the_tolerance(provider):  # noqa: F811
    with pytest.raises(CallbackRejectedError) as rejected:
        provider.parse_callback(EVENT, sign_event(EVENT, SECRET, timestamp=int(time.time()) - 301))
    assert rejected.value.reason == "stripe signature timestamp is more than 300 seconds old"
