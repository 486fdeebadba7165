"""Every validation rule at its boundary, with the exact message and field the caller gets (the
reference's wording where it had the check), and the idempotency fingerprints checked against
values computed here: they are stored, so a change would turn every retry of an earlier request
into a "key reused" error."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from payments_svc.domain.enums import PaymentStatus, ProviderType
from payments_svc.domain.errors import ErrorKind, NotFoundError, ValidationError
from payments_svc.domain.payment import CreatePaymentCommand, ListPaymentsQuery
from payments_svc.domain.refund import RefundCommand
from payments_svc.domain.validation import (
    validate_cancel_reason,
    validate_create,
    validate_list,
    validate_metadata,
    validate_payment_id,
)

MAX_AMOUNT = 100_000_000


def command(**overrides) -> CreatePaymentCommand:
    fields = dict(
        request_id="req-1", caller_service="shop", resource_type="order", resource_id="o-1", customer_ref="",
        amount_cents=1500, currency="USD", payment_method=1, payment_type=1, provider=0,
        recurring_interval="", recurring_interval_count=0, status_callback_url="https://shop.example/cb",
        success_url="", cancel_url="", metadata={},
    )
    fields.update(overrides)
    return CreatePaymentCommand(**fields)


def recurring(**overrides) -> CreatePaymentCommand:
    return command(**{"payment_type": 2, "recurring_interval": "month", "recurring_interval_count": 1, **overrides})


def refused(cmd: CreatePaymentCommand) -> tuple[str, str | None]:
    with pytest.raises(ValidationError) as err:
        validate_create(cmd, max_amount_cents=MAX_AMOUNT)
    assert err.value.kind == ErrorKind.INVALID_ARGUMENT
    return err.value.message, err.value.field


CREATE_RULES = [
    (command(request_id=""), "request_id is required", "request_id"),
    (command(caller_service=""), "caller_service is required", "caller_service"),
    (command(resource_type=""), "resource_type is required", "resource_type"),
    (command(resource_id=""), "resource_id is required", "resource_id"),
    (command(amount_cents=0), "amount_cents must be > 0", "amount_cents"),
    (command(amount_cents=-1), "amount_cents must be > 0", "amount_cents"),
    (command(currency="US"), "currency must be 3 letters", "currency"),
    (command(currency="USDX"), "currency must be 3 letters", "currency"),
    (command(currency="U5D"), "currency must be 3 letters", "currency"),
    (command(currency="ÜSD"), "currency must be 3 letters", "currency"),
    (command(payment_method=0), "payment_method must be hosted_card or payment_link", "payment_method"),
    (command(payment_method=3), "payment_method must be hosted_card or payment_link", "payment_method"),
    (command(payment_type=0), "payment_type must be one_time or recurring", "payment_type"),
    (command(payment_type=3), "payment_type must be one_time or recurring", "payment_type"),
    (command(provider=99), "provider is invalid", "provider"),
    (command(status_callback_url=""), "status_callback_url is required", "status_callback_url"),
    (recurring(recurring_interval="fortnight"), "recurring_interval must be day, week, month, or year", "recurring_interval"),
    (recurring(recurring_interval=""), "recurring_interval must be day, week, month, or year", "recurring_interval"),
    (recurring(recurring_interval_count=0), "recurring_interval_count must be > 0", "recurring_interval_count"),
    (recurring(recurring_interval_count=13), "recurring_interval_count must be <= 12 for interval month",
     "recurring_interval_count"),
    (command(payment_type=2, recurring_interval="day", recurring_interval_count=366),
     "recurring_interval_count must be <= 365 for interval day", "recurring_interval_count"),
    (command(payment_type=2, recurring_interval="week", recurring_interval_count=53),
     "recurring_interval_count must be <= 52 for interval week", "recurring_interval_count"),
    (command(payment_type=2, recurring_interval="year", recurring_interval_count=2),
     "recurring_interval_count must be <= 1 for interval year", "recurring_interval_count"),
    (command(request_id="r" * 129), "request_id must be at most 128 characters", "request_id"),
    (command(caller_service="c" * 129), "caller_service must be at most 128 characters", "caller_service"),
    (command(resource_type="t" * 129), "resource_type must be at most 128 characters", "resource_type"),
    (command(resource_id="i" * 256), "resource_id must be at most 255 characters", "resource_id"),
    (command(customer_ref="c" * 256), "customer_ref must be at most 255 characters", "customer_ref"),
    (command(status_callback_url="https://shop.example/" + "p" * 1004),
     "status_callback_url must be at most 1024 characters", "status_callback_url"),
    (command(success_url="https://shop.example/" + "p" * 1004), "success_url must be at most 1024 characters", "success_url"),
    (command(cancel_url="https://shop.example/" + "p" * 1004), "cancel_url must be at most 1024 characters", "cancel_url"),
    (command(amount_cents=MAX_AMOUNT + 1), f"amount_cents must be <= {MAX_AMOUNT}", "amount_cents"),
    (command(status_callback_url="ftp://shop.example/cb"), "status_callback_url must be an absolute http or https URL",
     "status_callback_url"),
    (command(status_callback_url="/cb"), "status_callback_url must be an absolute http or https URL", "status_callback_url"),
    (command(status_callback_url="http://[::1"), "status_callback_url must be an absolute http or https URL",
     "status_callback_url"),
    (command(status_callback_url="https://shop.example/a b"), "status_callback_url must not contain whitespace",
     "status_callback_url"),
    (command(success_url="shop.example/ok"), "success_url must be an absolute http or https URL", "success_url"),
    (command(cancel_url="javascript:alert(1)"), "cancel_url must be an absolute http or https URL", "cancel_url"),
    (command(metadata={"": "v"}), "metadata keys must not be empty", "metadata"),
]


# Short ids: the node ids must be plain enough for mutmut to pass them back to pytest.
@pytest.mark.parametrize("cmd, message, field", CREATE_RULES, ids=[f"{f}-{i}" for i, (_, _, f) in enumerate(CREATE_RULES)])
def test_each_create_rule_names_its_field(cmd, message, field):
    assert refused(cmd) == (message, field)


LIMIT_CASES = [
    command(amount_cents=1),
    command(amount_cents=MAX_AMOUNT),
    command(payment_method=2, payment_type=1),
    command(provider=int(ProviderType.SANDBOX)),
    command(provider=int(ProviderType.STRIPE)),
    recurring(recurring_interval_count=12),
    command(payment_type=2, recurring_interval="day", recurring_interval_count=365),
    command(payment_type=2, recurring_interval="week", recurring_interval_count=52),
    command(payment_type=2, recurring_interval="year", recurring_interval_count=1),
    command(payment_type=1, recurring_interval="fortnight", recurring_interval_count=-5),  # ignored when one-time
    command(request_id="r" * 128, caller_service="c" * 128, resource_type="t" * 128, resource_id="i" * 255,
            customer_ref="c" * 255, status_callback_url="http://shop.example/" + "p" * 1004,
            success_url="https://shop.example/" + "p" * 1003, cancel_url="https://shop.example/" + "p" * 1003),
    command(metadata={"k" * 40: "v" * 500}),
    command(metadata={f"k{i}": "v" for i in range(50)}),
]


@pytest.mark.parametrize("cmd", LIMIT_CASES, ids=[f"limits-{i}" for i in range(len(LIMIT_CASES))])
def test_values_at_the_limits_are_accepted(cmd):
    validate_create(cmd, max_amount_cents=MAX_AMOUNT)


def test_metadata_rules():
    def problem(metadata) -> str:
        with pytest.raises(ValidationError) as err:
            validate_metadata(metadata)
        assert err.value.field == "metadata"
        return err.value.message

    assert problem({f"k{i}": "v" for i in range(51)}) == "metadata must have at most 50 keys"
    assert problem({" ": "v"}) == "metadata keys must not be empty"
    assert problem({"k" * 41: "v"}) == f"metadata key {'k' * 40!r}... must be at most 40 characters"
    assert problem({"a[b": "v"}) == "metadata key 'a[b' must not contain square brackets"
    assert problem({"a]b": "v"}) == "metadata key 'a]b' must not contain square brackets"
    assert problem({"note": "v" * 501}) == "metadata value for 'note' must be at most 500 characters"


def test_list_defaults_and_bounds():
    assert validate_list(ListPaymentsQuery(limit=0)).limit == 100
    for limit in (1, 99, 100, 500):
        assert validate_list(ListPaymentsQuery(limit=limit)).limit == limit
    assert validate_list(ListPaymentsQuery(offset=0)).offset == 0
    assert validate_list(ListPaymentsQuery(status=PaymentStatus.PAID)).status == PaymentStatus.PAID
    for query, message, field in [
        (ListPaymentsQuery(limit=-1), "limit must be between 1 and 500", "limit"),
        (ListPaymentsQuery(limit=501), "limit must be between 1 and 500", "limit"),
        (ListPaymentsQuery(offset=-1), "offset must be >= 0", "offset"),
        (ListPaymentsQuery(status=PaymentStatus.UNSPECIFIED), "invalid status", "status"),
        (ListPaymentsQuery(status=7), "invalid status", "status"),
    ]:
        with pytest.raises(ValidationError) as err:
            validate_list(query)
        assert (err.value.message, err.value.field) == (message, field)


def test_payment_ids_and_cancel_reasons():
    validate_payment_id(1)
    for bad in (0, -1):
        with pytest.raises(ValidationError) as err:
            validate_payment_id(bad)
        assert (err.value.message, err.value.field) == ("invalid payment id", "id")
    assert validate_cancel_reason("  changed my mind \n") == "changed my mind"
    assert validate_cancel_reason(" " + "r" * 255 + " ") == "r" * 255
    with pytest.raises(ValidationError) as err:
        validate_cancel_reason("r" * 256)
    assert (err.value.message, err.value.field) == ("reason must be at most 255 characters", "reason")


def test_not_found_says_payment_not_found():
    assert (NotFoundError().message, NotFoundError().kind, NotFoundError().field) == (
        "payment not found", ErrorKind.NOT_FOUND, None)


def _sha256_of(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def test_the_create_fingerprint_is_the_stored_canonical_form():
    cmd = recurring(customer_ref="cus-1", success_url="https://shop.example/ok", metadata={"b": "2", "a": "é"})
    expected = _sha256_of({
        "resource_type": "order", "resource_id": "o-1", "customer_ref": "cus-1", "amount_cents": 1500, "currency": "USD",
        "payment_method": 1, "payment_type": 2, "provider": 100, "recurring_interval": "month",
        "recurring_interval_count": 1, "status_callback_url": "https://shop.example/cb",
        "success_url": "https://shop.example/ok", "cancel_url": "", "metadata": {"a": "é", "b": "2"},
    })
    assert cmd.fingerprint(ProviderType.SANDBOX) == expected
    # One-time payments ignore the recurring fields, whatever was sent in them.
    one_time = dataclasses.replace(cmd, payment_type=1, recurring_interval="week", recurring_interval_count=3)
    assert one_time.fingerprint(ProviderType.SANDBOX) == _sha256_of({
        "resource_type": "order", "resource_id": "o-1", "customer_ref": "cus-1", "amount_cents": 1500, "currency": "USD",
        "payment_method": 1, "payment_type": 1, "provider": 100, "recurring_interval": "", "recurring_interval_count": 0,
        "status_callback_url": "https://shop.example/cb", "success_url": "https://shop.example/ok", "cancel_url": "",
        "metadata": {"a": "é", "b": "2"},
    })


def test_the_refund_fingerprint_is_the_stored_canonical_form():
    expected = hashlib.sha256(b'{"amount_cents": 400, "reason": "duplicate"}').hexdigest()
    assert RefundCommand(1, "r-1", 400, "duplicate").fingerprint() == expected
    assert RefundCommand(2, "r-2", 400, "duplicate").fingerprint() == expected  # the key is not part of it


def test_normalising_trims_and_folds_ascii_only():
    cmd = command(request_id=" r ", caller_service=" shop ", resource_type=" order ", resource_id=" 1 ", customer_ref=" c ",
                  currency=" usd ", payment_type=2, recurring_interval=" MONTH ", status_callback_url=" https://s/cb ",
                  success_url=" https://s/ok ", cancel_url=" https://s/no ", metadata={"k": "v"}).normalized()
    assert (cmd.request_id, cmd.caller_service, cmd.resource_type, cmd.resource_id, cmd.customer_ref) == (
        "r", "shop", "order", "1", "c")
    assert (cmd.currency, cmd.recurring_interval) == ("USD", "month")
    assert (cmd.status_callback_url, cmd.success_url, cmd.cancel_url) == ("https://s/cb", "https://s/ok", "https://s/no")
    assert (cmd.amount_cents, cmd.payment_method, cmd.payment_type, cmd.provider, cmd.metadata) == (1500, 1, 2, 0, {"k": "v"})
    assert command(currency="ßd").normalized().currency == "ßd"  # not "SSD"
    assert command(payment_type=2, recurring_interval="\u212a").normalized().recurring_interval == "\u212a"  # Kelvin sign
