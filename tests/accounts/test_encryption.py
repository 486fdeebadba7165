"""PAYMENTS_ENCRYPTION_KEYS and the ciphertexts: what parses, what decrypts, and what
does not (another key, another row, another field)."""

from __future__ import annotations

import base64

import pytest

from payments_svc.accounts.encryption import EncryptionKeyError, UndecryptableError, key_id_of, parse_keys
from payments_svc.config import ConfigError, load_settings

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()
SECRET = "sk_test_plaintext_that_must_not_show"


def test_round_trip_under_the_first_key_and_never_the_plaintext():
    keys = parse_keys(f"k2:{K2}, k1:{K1}")
    stored = keys.encrypt(SECRET, row=7, name="secret_key")
    assert key_id_of(stored) == "k2" and SECRET not in stored
    assert keys.encrypt(SECRET, row=7, name="secret_key") != stored  # a fresh nonce each time
    assert keys.decrypt(stored, row=7, name="secret_key") == SECRET


def test_reads_accept_every_listed_key():
    old = parse_keys(f"k1:{K1}").encrypt(SECRET, row=3, name="secret_key")
    assert parse_keys(f"k2:{K2},k1:{K1}").decrypt(old, row=3, name="secret_key") == SECRET
    with pytest.raises(UndecryptableError, match="encrypted with key 'k1', which PAYMENTS_ENCRYPTION_KEYS does not list"):
        parse_keys(f"k2:{K2}").decrypt(old, row=3, name="secret_key")


@pytest.mark.parametrize("row, name", [(8, "secret_key"), (7, "webhook_secret")])
def test_a_ciphertext_copied_to_another_row_or_field_does_not_decrypt(row, name):
    keys = parse_keys(f"k1:{K1}")
    stored = keys.encrypt(SECRET, row=7, name="secret_key")
    with pytest.raises(UndecryptableError, match="does not decrypt") as caught:
        keys.decrypt(stored, row=row, name=name)
    assert SECRET not in str(caught.value)


def test_another_key_under_the_same_id_does_not_decrypt():
    stored = parse_keys(f"k1:{K1}").encrypt(SECRET, row=1, name="secret_key")
    with pytest.raises(UndecryptableError, match="does not decrypt with key 'k1'"):
        parse_keys(f"k1:{K2}").decrypt(stored, row=1, name="secret_key")


@pytest.mark.parametrize("raw, message", [
    (K1, "entry #1 must be id:base64-key"),
    (f"k1:{K1},k1:{K2}", "key id 'k1' is listed twice"),
    ("k1:not base64!", "key 'k1' is not valid base64"),
    (f"k1:{base64.b64encode(b'short').decode()}", "key 'k1' is 5 bytes; AES-256 needs 32"),
    (f"bad id:{K1}", "entry #1 must be id:base64-key"),
])
def test_malformed_keys_are_one_clear_line_without_the_key(raw, message):
    with pytest.raises(EncryptionKeyError, match=message) as caught:
        parse_keys(raw)
    assert K1 not in str(caught.value) and K2 not in str(caught.value)
    with pytest.raises(ConfigError, match=message):
        load_settings({"PAYMENTS_ENCRYPTION_KEYS": raw})


def test_unset_means_no_keys_and_settings_never_show_them():
    assert parse_keys(None) is None and parse_keys("  ") is None
    settings = load_settings({"PAYMENTS_ENCRYPTION_KEYS": f"k1:{K1}"})
    assert settings.encryption_keys.ids == ("k1",)
    assert K1 not in repr(settings) and K1 not in repr(settings.encryption_keys)
