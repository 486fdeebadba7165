"""The HTTP shim binds JSON as the reference's Go binder did, plus enum names."""

from __future__ import annotations

import pytest

from payments_svc.api.http.json_body import CREATE_FIELDS, BodyError, decode_object


def decode(text: str) -> dict:
    return decode_object(text.encode(), CREATE_FIELDS)


def test_keys_match_without_case_and_unknown_keys_are_ignored():
    assert decode('{"REQUEST_ID": "a", "Amount_Cents": 5, "whatever": [1]}') == {"request_id": "a", "amount_cents": 5}


def test_camel_case_keys_are_accepted_too():
    assert decode('{"requestId": "a", "statusCallbackUrl": "u"}') == {"request_id": "a", "status_callback_url": "u"}


def test_null_means_not_given():
    assert decode('{"request_id": null, "metadata": null}') == {}


@pytest.mark.parametrize("body", ['{"amount_cents": 10.5}', '{"amount_cents": 1e3}', '{"amount_cents": "1000"}',
                                  '{"amount_cents": true}', '{"recurring_interval_count": 2147483648}',
                                  '{"amount_cents": 9223372036854775808}', '{"request_id": 5}',
                                  '{"metadata": {"a": 1}}', '[1]', 'not json', '{"payment_method": "bitcoin"}'])
def test_type_errors(body):
    with pytest.raises(BodyError):
        decode(body)


@pytest.mark.parametrize("value, expected", [(1, 1), ('"PAYMENT_METHOD_HOSTED_CARD"', 1), ('"hosted_card"', 1),
                                             ('"payment_link"', 2), ('"PAYMENT_LINK"', 2)])
def test_enums_take_numbers_or_names(value, expected):
    assert decode(f'{{"payment_method": {value}}}')["payment_method"] == expected


def test_provider_and_type_names():
    assert decode('{"provider": "PROVIDER_TYPE_SANDBOX", "payment_type": "recurring"}') == {"provider": 100, "payment_type": 2}
