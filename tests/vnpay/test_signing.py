"""VNPay's checksums, pinned to values computed outside this code base, so that a bug
changing the service's signer and the fake's verifier alike cannot pass."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime

from payments_svc.providers.vnpay.signing import checksum, has_valid_hash, hash_data, signed_query, vnpay_time
from tests.fakes.vnpay_server import api_checksum, secure_hash

SECRET = "SECRETFORTESTSONLY0123456789ABCD"
# The parameters of the example payment URL in VNPay's PAY guide (2.1.0).
DOC_EXAMPLE = {
    "vnp_Amount": "1806000",
    "vnp_Command": "pay",
    "vnp_CreateDate": "20210801153333",
    "vnp_CurrCode": "VND",
    "vnp_IpAddr": "127.0.0.1",
    "vnp_Locale": "vn",
    "vnp_OrderInfo": "Thanh toan don hang :5",
    "vnp_OrderType": "other",
    "vnp_ReturnUrl": "https://domainmerchant.vn/ReturnUrl",
    "vnp_TmnCode": "DEMOV210",
    "vnp_TxnRef": "5",
    "vnp_Version": "2.1.0",
}
# That example URL's query as VNPay's guide prints it, up to its vnp_SecureHash.
DOC_QUERY = ("vnp_Amount=1806000&vnp_Command=pay&vnp_CreateDate=20210801153333&vnp_CurrCode=VND&vnp_IpAddr=127.0.0.1"
             "&vnp_Locale=vn&vnp_OrderInfo=Thanh+toan+don+hang+%3A5&vnp_OrderType=other"
             "&vnp_ReturnUrl=https%3A%2F%2Fdomainmerchant.vn%2FReturnUrl&vnp_TmnCode=DEMOV210&vnp_TxnRef=5&vnp_Version=2.1.0")
# `printf '%s' "$DOC_QUERY" | openssl dgst -sha512 -hmac "$SECRET"`
DOC_QUERY_HMAC = ("a7ad0c2509049677f1ab225a3a0d2a46effdb36fe48c39562cfb60949f3ba11d"
                  "a2fa26c715db4d19d9d9a028e91eccc36161ef55d460cc28f83d65392badb839")
# `printf '%s' '1a2b3c|2.1.0|querydr|DEMOV210|5|20210801153333|20210801160000|127.0.0.1|Query payment 5'
#  | openssl dgst -sha512 -hmac "$SECRET"`
QUERY_CHECKSUM = ("f8c0cd35448bb7ebd2d16c4e70dbf6bc1974a1f48bf81d778f963c54851022d5"
                  "bfbbd6a5cc9c353b821ecdaf93bd5a63e5e239f0ef77d689aa7d284f0495d28b")


def test_the_signed_string_is_vnpays_documented_query():
    assert hash_data(DOC_EXAMPLE) == DOC_QUERY
    # vnp_SecureHash itself and other parameters are not signed; the order of the input is irrelevant.
    shuffled = dict(reversed(list(DOC_EXAMPLE.items())), vnp_SecureHash="x", vnp_SecureHashType="HmacSHA512", other="y")
    assert hash_data(shuffled) == DOC_QUERY


def test_the_secure_hash_is_the_independently_computed_hmac():
    assert signed_query(SECRET, DOC_EXAMPLE) == f"{DOC_QUERY}&vnp_SecureHash={DOC_QUERY_HMAC}"
    assert secure_hash(SECRET, DOC_EXAMPLE) == DOC_QUERY_HMAC  # the fake VNPay agrees
    assert hmac.new(SECRET.encode(), DOC_QUERY.encode(), hashlib.sha512).hexdigest() == DOC_QUERY_HMAC


def test_a_hash_verifies_in_either_case_and_nothing_else_does():
    assert has_valid_hash(SECRET, {**DOC_EXAMPLE, "vnp_SecureHash": DOC_QUERY_HMAC})
    assert has_valid_hash(SECRET, {**DOC_EXAMPLE, "vnp_SecureHash": DOC_QUERY_HMAC.upper()})
    assert not has_valid_hash(SECRET, DOC_EXAMPLE)
    assert not has_valid_hash("another secret", {**DOC_EXAMPLE, "vnp_SecureHash": DOC_QUERY_HMAC})
    tampered = {**DOC_EXAMPLE, "vnp_Amount": "1806100", "vnp_SecureHash": DOC_QUERY_HMAC}
    assert not has_valid_hash(SECRET, tampered)


def test_the_api_checksum_joins_the_fields_with_bars():
    values = ["1a2b3c", "2.1.0", "querydr", "DEMOV210", "5", "20210801153333", "20210801160000", "127.0.0.1",
              "Query payment 5"]
    assert checksum(SECRET, values) == QUERY_CHECKSUM
    assert api_checksum(SECRET, values) == QUERY_CHECKSUM
    assert checksum(SECRET, ["a", None, "b"]) == checksum(SECRET, ["a", "", "b"])  # an absent value is empty


def test_times_are_gmt_plus_7():
    assert vnpay_time(datetime(2021, 8, 1, 8, 33, 33)) == "20210801153333"  # 08:33 UTC
    assert vnpay_time(datetime(2025, 12, 31, 20, 0, 0)) == "20260101030000"  # a new day and year in Vietnam


def test_vnpay_time_reads_the_moment_as_utc_whatever_the_machines_zone(monkeypatch):
    """The database's naive datetimes are UTC; a server whose zone is not must send the same time."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert vnpay_time(datetime(2021, 8, 1, 8, 33, 33)) == "20210801153333"
    finally:
        monkeypatch.undo()
        time.tzset()
