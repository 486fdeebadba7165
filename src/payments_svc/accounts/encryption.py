"""AES-256-GCM for provider account secrets at rest, keys from PAYMENTS_ENCRYPTION_KEYS.

PAYMENTS_ENCRYPTION_KEYS is `id:base64,id:base64,...` of 32-byte keys. New writes use
the first; reads accept every listed key, so a key is rotated by putting a new one first,
running `payments-svc accounts reencrypt`, and then dropping the old one.

A stored value is `<key id>:<base64 of nonce (12 bytes) + ciphertext + tag>`. The
associated data names the row and the field ("provider_accounts/7/secret_key"), so a
ciphertext copied into another row or another field fails to decrypt instead of handing
one account's secret to another.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VARIABLE = "PAYMENTS_ENCRYPTION_KEYS"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce, random per encryption
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class EncryptionKeyError(ValueError):
    """PAYMENTS_ENCRYPTION_KEYS is malformed; the message names the entry."""


class UndecryptableError(Exception):
    """A stored secret does not decrypt with the configured keys."""


@dataclass(frozen=True, slots=True)
class EncryptionKeys:
    ids: tuple[str, ...]  # in the configured order: ids[0] encrypts new writes
    _ciphers: dict[str, AESGCM] = field(repr=False)

    @property
    def current(self) -> str:
        return self.ids[0]

    def encrypt(self, plaintext: str, *, row: int, name: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.current].encrypt(nonce, plaintext.encode(), _associated(row, name))
        return f"{self.current}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, stored: str, *, row: int, name: str) -> str:
        key_id, _, body = stored.partition(":")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UndecryptableError(f"provider account {row}: its {name} is encrypted with key {key_id!r}, "
                                     f"which {VARIABLE} does not list (keys: {', '.join(self.ids)})")
        try:
            raw = base64.b64decode(body, validate=True)
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _associated(row, name)).decode()
        except (InvalidTag, binascii.Error, ValueError):
            raise UndecryptableError(f"provider account {row}: its {name} does not decrypt with key {key_id!r} of "
                                     f"{VARIABLE} (a different key under that id, or a value copied from another "
                                     "row or field)") from None


def key_id_of(stored: str) -> str:
    return stored.partition(":")[0]


def _associated(row: int, name: str) -> bytes:
    return f"provider_accounts/{row}/{name}".encode()


def parse_keys(raw: str | None) -> EncryptionKeys | None:
    """None when unset. Raises EncryptionKeyError naming the bad entry (never its value)."""
    if raw is None or not raw.strip():
        return None
    ciphers: dict[str, AESGCM] = {}
    ids: list[str] = []
    for position, entry in enumerate(raw.split(","), 1):
        key_id, sep, encoded = entry.strip().partition(":")
        if not sep or not KEY_ID.match(key_id):
            raise EncryptionKeyError(f"{VARIABLE}: entry #{position} must be id:base64-key (id of 1-32 letters, "
                                     "digits, _ or -), e.g. k1:$(openssl rand -base64 32)")
        if key_id in ciphers:
            raise EncryptionKeyError(f"{VARIABLE}: key id {key_id!r} is listed twice")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise EncryptionKeyError(f"{VARIABLE}: key {key_id!r} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise EncryptionKeyError(f"{VARIABLE}: key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES} "
                                     "(openssl rand -base64 32)")
        ciphers[key_id] = AESGCM(key)
        ids.append(key_id)
    return EncryptionKeys(tuple(ids), ciphers)
