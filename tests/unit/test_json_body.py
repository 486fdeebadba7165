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


@pytest.mark.parametrize("body, field", [
    ('{"resource_id": "a\\ud800"}', "resource_id"),
    ('{"currency": "\\udfffx"}', "currency"),
    ('{"request_id": "a\\u0000b"}', "request_id"),
    ('{"metadata": {"k\\ud800": "v"}}', "metadata"),
    ('{"metadata": {"k": "\\u0000"}}', "metadata"),
])
def test_strings_a_database_cannot_hold_are_refused_naming_the_field(body, field):
    with pytest.raises(BodyError) as refused:
        decode(body)
    assert refused.value.field == field


def test_escaped_surrogate_pairs_are_text():
    assert decode('{"resource_id": "\\ud83d\\ude00"}') == {"resource_id": "\U0001f600"}


@pytest.mark.parametrize("depth, refused", [(63, False), (64, True), (1000, True)])  # plus the body object
def test_nesting_deeper_than_the_limit_is_refused_not_a_recursion_error(depth, refused):
    body = '{"metadata": {"k": "v"}, "unknown": ' + "[" * depth + "]" * depth + "}"
    if refused:
        with pytest.raises(BodyError, match="nested more than 64 levels deep"):
            decode(body)
    else:
        assert decode(body) == {"metadata": {"k": "v"}}


def test_enum_names_are_case_folded_in_ascii_only():
    with pytest.raises(BodyError) as refused:
        decode('{"payment_method": "hoſted_card"}')  # "ſ".upper() == "S"
    assert refused.value.field == "payment_method"
