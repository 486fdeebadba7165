"""The Standard Webhooks bounds of a callback signing secret's key, both ends inclusive:
24..64 decoded bytes. A receiver's 64-byte key must be usable (accepted at start-up and
signing with exactly those bytes); one byte more or one less is refused with the reason."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from payments_svc.config import ConfigError, load_settings
from payments_svc.webhooks_signing import MAX_KEY_BYTES, MIN_KEY_BYTES, secret_key, signature_header


def whsec(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


@pytest.mark.parametrize("size", [MIN_KEY_BYTES, MAX_KEY_BYTES])
def test_a_key_at_either_bound_is_accepted_and_signs_with_its_bytes(size):
    key = bytes(range(size))
    assert secret_key(whsec(key)) == key
    expected = base64.b64encode(hmac.new(key, b"msg_1.1700000000.{}", hashlib.sha256).digest()).decode()
    assert signature_header([whsec(key)], "msg_1", 1700000000, b"{}") == "v1," + expected
    settings = load_settings({"PAYMENTS_CALLBACK_SIGNING_SECRETS": f"shop={whsec(key)}"})
    assert settings.callback_signing_secrets == (("shop", whsec(key)),)


@pytest.mark.parametrize("size", [MIN_KEY_BYTES - 1, MAX_KEY_BYTES + 1])
def test_a_key_one_byte_outside_the_bounds_is_refused(size):
    with pytest.raises(ValueError, match=r"^a signing secret must decode to 24\.\.64 bytes$"):
        secret_key(whsec(b"k" * size))
    with pytest.raises(ConfigError, match="PAYMENTS_CALLBACK_SIGNING_SECRETS: secret of 'shop': .*24..64 bytes"):
        load_settings({"PAYMENTS_CALLBACK_SIGNING_SECRETS": f"shop={whsec(b'k' * size)}"})
