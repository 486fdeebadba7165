"""Signers checked against values computed independently of the product's code, so that a bug
changing a signer and its verifier alike cannot pass (the other tests sign with the product's
own functions)."""

from __future__ import annotations

import pytest

from payments_svc.domain.errors import CallbackRejectedError
from payments_svc.providers.sandbox import provider as sandbox
from payments_svc.webhooks_signing import signature_header

# The Standard Webhooks specification's published example (standard-webhooks/standard-webhooks,
# spec and reference libraries' tests); reproduced with openssl:
#   printf '%s' 'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}' |
#     openssl dgst -sha256 -mac HMAC -macopt hexkey:<base64-decoded secret as hex> -binary | base64
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

# Stripe's scheme as the sandbox provider uses it, computed with
#   printf '%s' '1700000000.{"id":"evt_1","type":"payment.succeeded"}' | openssl dgst -sha256 -hmac whsec_test
SANDBOX_BODY = b'{"id":"evt_1","type":"payment.succeeded"}'
SANDBOX_MAC = "3d34f860ecc2c5fc3978518b0564a6649bd191eb2caa286ec3976e3bc9929d7d"


def test_status_callbacks_are_signed_as_the_standard_webhooks_spec_example():
    assert signature_header([SPEC_SECRET], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_status_callbacks_carry_one_signature_per_secret_while_rotating():
    other = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="  # 32 bytes of "A"
    header = signature_header([SPEC_SECRET, other], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    first, second = header.split(" ")
    assert first == SPEC_SIGNATURE and second.startswith("v1,") and second != SPEC_SIGNATURE


def test_sandbox_webhooks_use_stripes_scheme():
    assert sandbox.sign(SANDBOX_BODY, "whsec_test", timestamp=1700000000) == f"t=1700000000,v1={SANDBOX_MAC}"


def test_sandbox_verifier_accepts_the_independent_signature_and_nothing_else(monkeypatch):
    monkeypatch.setattr(sandbox.time, "time", lambda: 1700000100)
    sandbox.verify(SANDBOX_BODY, f"t=1700000000,v1={SANDBOX_MAC}", "whsec_test")
    tampered = SANDBOX_MAC[:-1] + ("0" if SANDBOX_MAC[-1] != "0" else "1")
    for header in (f"t=1700000000,v1={tampered}", f"t=1700000001,v1={SANDBOX_MAC}", f"v1={SANDBOX_MAC}"):
        with pytest.raises(CallbackRejectedError):
            sandbox.verify(SANDBOX_BODY, header, "whsec_test")
    with pytest.raises(CallbackRejectedError):
        sandbox.verify(SANDBOX_BODY + b" ", f"t=1700000000,v1={SANDBOX_MAC}", "whsec_test")
