"""Input validation. Messages of checks the reference had are kept word for word;
the checks it lacked (lengths within the columns, currency letters, URL schemes,
amount and metadata bounds) come after them."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from .enums import PaymentMethod, PaymentStatus, PaymentType, ProviderType
from .errors import ValidationError
from .payment import CreatePaymentCommand, ListPaymentsQuery

RECURRING_INTERVALS = ("day", "week", "month", "year")
MAX_INTERVAL_COUNT = {"day": 365, "week": 52, "month": 12, "year": 1}  # Stripe's bound: one year
METADATA_MAX_KEYS = 50
METADATA_MAX_KEY_LENGTH = 40
METADATA_MAX_VALUE_LENGTH = 500
MAX_LIST_LIMIT = 500
CANCEL_REASON_MAX = 255
KNOWN_PROVIDERS = frozenset(int(p) for p in ProviderType)  # 0 picks the default provider

_LENGTHS = (
    ("request_id", 128),
    ("caller_service", 128),
    ("resource_type", 128),
    ("resource_id", 255),
    ("customer_ref", 255),
    ("status_callback_url", 1024),
    ("success_url", 1024),
    ("cancel_url", 1024),
)


def _check_url(name: str, value: str) -> None:
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValidationError(f"{name} must be an absolute http or https URL", field=name) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"{name} must be an absolute http or https URL", field=name)
    if any(ch.isspace() for ch in value):
        raise ValidationError(f"{name} must not contain whitespace", field=name)


def check_iso_currency(cmd: CreatePaymentCommand) -> None:
    """The currency rule of card providers: an ISO 4217 code, three ASCII letters."""
    if len(cmd.currency) != 3 or not cmd.currency.isascii() or not cmd.currency.isalpha():
        raise ValidationError("currency must be 3 letters", field="currency")


def validate_create(
    cmd: CreatePaymentCommand,
    *,
    max_amount_cents: int,
    provider_checks: Callable[[CreatePaymentCommand], None] = check_iso_currency,
) -> None:
    """Raises ValidationError for the first problem found; `cmd` is already normalised.
    `provider_checks` (the chosen provider's `validate`) owns the currency rule, since
    what a currency may look like depends on the provider (Stellar asset codes)."""
    if not cmd.request_id:
        raise ValidationError("request_id is required", field="request_id")
    if not cmd.caller_service:
        raise ValidationError("caller_service is required", field="caller_service")
    if not cmd.resource_type:
        raise ValidationError("resource_type is required", field="resource_type")
    if not cmd.resource_id:
        raise ValidationError("resource_id is required", field="resource_id")
    if cmd.amount_cents <= 0:
        raise ValidationError("amount_cents must be > 0", field="amount_cents")
    provider_checks(cmd)
    if cmd.payment_method not in (PaymentMethod.HOSTED_CARD, PaymentMethod.PAYMENT_LINK):
        raise ValidationError("payment_method must be hosted_card or payment_link", field="payment_method")
    if cmd.payment_type not in (PaymentType.ONE_TIME, PaymentType.RECURRING):
        raise ValidationError("payment_type must be one_time or recurring", field="payment_type")
    if cmd.provider not in KNOWN_PROVIDERS:
        raise ValidationError("provider is invalid", field="provider")
    if not cmd.status_callback_url:
        raise ValidationError("status_callback_url is required", field="status_callback_url")
    if cmd.is_recurring:
        if cmd.recurring_interval not in RECURRING_INTERVALS:
            raise ValidationError("recurring_interval must be day, week, month, or year", field="recurring_interval")
        if cmd.recurring_interval_count <= 0:
            raise ValidationError("recurring_interval_count must be > 0", field="recurring_interval_count")
        limit = MAX_INTERVAL_COUNT[cmd.recurring_interval]
        if cmd.recurring_interval_count > limit:
            raise ValidationError(f"recurring_interval_count must be <= {limit} for interval {cmd.recurring_interval}",
                                  field="recurring_interval_count")

    # Checks the reference lacked.
    for name, limit in _LENGTHS:
        if len(getattr(cmd, name)) > limit:
            raise ValidationError(f"{name} must be at most {limit} characters", field=name)
    if cmd.amount_cents > max_amount_cents:
        raise ValidationError(f"amount_cents must be <= {max_amount_cents}", field="amount_cents")
    _check_url("status_callback_url", cmd.status_callback_url)
    for name in ("success_url", "cancel_url"):
        if getattr(cmd, name):
            _check_url(name, getattr(cmd, name))
    validate_metadata(cmd.metadata)


def validate_metadata(metadata: dict[str, str]) -> None:
    if len(metadata) > METADATA_MAX_KEYS:
        raise ValidationError(f"metadata must have at most {METADATA_MAX_KEYS} keys", field="metadata")
    for key, value in metadata.items():
        if not key.strip():
            raise ValidationError("metadata keys must not be empty", field="metadata")
        if len(key) > METADATA_MAX_KEY_LENGTH:
            raise ValidationError(f"metadata key {key[:METADATA_MAX_KEY_LENGTH]!r}... must be at most {METADATA_MAX_KEY_LENGTH} characters",
                                  field="metadata")
        if "[" in key or "]" in key:
            raise ValidationError(f"metadata key {key!r} must not contain square brackets", field="metadata")
        if len(value) > METADATA_MAX_VALUE_LENGTH:
            raise ValidationError(f"metadata value for {key!r} must be at most {METADATA_MAX_VALUE_LENGTH} characters",
                                  field="metadata")


def validate_payment_id(payment_id: int) -> None:
    if payment_id <= 0:
        raise ValidationError("invalid payment id", field="id")


def validate_list(query: ListPaymentsQuery) -> ListPaymentsQuery:
    """Applies the reference's defaults and bounds; returns the query to run."""
    if query.limit == 0:
        query.limit = 100
    if query.limit < 0 or query.limit > MAX_LIST_LIMIT:
        raise ValidationError("limit must be between 1 and 500", field="limit")
    if query.offset < 0:
        raise ValidationError("offset must be >= 0", field="offset")
    if query.status is not None and query.status not in set(PaymentStatus) - {PaymentStatus.UNSPECIFIED}:
        raise ValidationError("invalid status", field="status")
    return query


def validate_cancel_reason(reason: str) -> str:
    reason = reason.strip()
    if len(reason) > CANCEL_REASON_MAX:
        raise ValidationError(f"reason must be at most {CANCEL_REASON_MAX} characters", field="reason")
    return reason
