"""An IPN forwarded with its signature given apart (X-Provider-Signature, gRPC's signature
field): it must be the query's own vnp_SecureHash, in either hex case; the query's hash is
then checked as for any IPN."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from payments_svc.domain.enums import PaymentStatus
from payments_svc.domain.errors import CallbackRejectedError

from .test_provider import created, fake, provider  # noqa: F401  (fixtures)

MISMATCH = "the signature given is not the query's vnp_SecureHash"


async def test_the_signature_given_must_be_the_querys_hash_in_either_case(provider, fake):  # noqa: F811
    p = await created(provider)
    params = (await fake.pay(p.checkout_url)).params
    signed = params["vnp_SecureHash"]
    for given in (signed, signed.upper(), signed.lower()):
        assert provider.parse_callback(urlencode(params).encode(), given).status == PaymentStatus.PAID
    for given in ("f" * 128, signed[:-1]):
        with pytest.raises(CallbackRejectedError) as rejected:
            provider.parse_callback(urlencode(params).encode(), given)
        assert rejected.value.reason == MISMATCH


async def test_a_signature_given_for_a_query_without_one_is_rejected(provider, fake):  # noqa: F811
    p = await created(provider)
    params = {k: v for k, v in (await fake.pay(p.checkout_url)).params.items() if k != "vnp_SecureHash"}
    for given in ("XXXX", "xxxx", "None"):
        with pytest.raises(CallbackRejectedError) as rejected:
            provider.parse_callback(urlencode(params).encode(), given)
        assert rejected.value.reason == MISMATCH
    with pytest.raises(CallbackRejectedError) as rejected:
        provider.parse_callback(urlencode(params).encode(), "")  # nothing given: the query's own hash is missing
    assert "vnp_SecureHash" in rejected.value.reason
