"""Strict decoding of JSON request bodies into the proto request fields.

Compatible with the reference's Go binder: snake_case keys matched without regard
to case, unknown keys ignored, null meaning "not given", integers only as JSON
integers (10.5, 1e3 and "1000" are errors). Additions: enum names are accepted
("PAYMENT_METHOD_HOSTED_CARD", "hosted_card") and so are lowerCamelCase keys.
Hostile input is refused, naming the field: nesting deeper than MAX_JSON_DEPTH,
strings with NUL or unpaired surrogates ("\ud800").
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any

from ...domain.enums import PaymentMethod, PaymentType, ProviderType
from ..untrusted_input import MAX_JSON_DEPTH, json_too_deep, text_problem


class BodyError(Exception):
    """The body cannot be bound to the request type; `field` is the offending one, if any."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)

CREATE_FIELDS: dict[str, Any] = {
    "request_id": str,
    "caller_service": str,
    "resource_type": str,
    "resource_id": str,
    "customer_ref": str,
    "amount_cents": INT64,
    "currency": str,
    "payment_method": PaymentMethod,
    "payment_type": PaymentType,
    "provider": ProviderType,
    "recurring_interval": str,
    "recurring_interval_count": INT32,
    "status_callback_url": str,
    "success_url": str,
    "cancel_url": str,
    "metadata": dict,
}

CANCEL_FIELDS: dict[str, Any] = {"reason": str}

REFUND_FIELDS: dict[str, Any] = {"request_id": str, "amount_cents": INT64, "reason": str}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _enum_prefix(enum: type[IntEnum]) -> str:
    # PaymentMethod -> PAYMENT_METHOD_ (the proto value names' prefix)
    name = enum.__name__
    snake = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(name)).upper()
    return "PROVIDER_TYPE_" if enum is ProviderType else snake + "_"


def enum_by_name(enum: type[IntEnum], name: str) -> int | None:
    """The number a value name stands for ("paid", "PAID", "PAYMENT_STATUS_PAID"), or None.
    ASCII case-folding only: str.upper() would make "hoſted_card" "HOSTED_CARD"."""
    if not name.isascii():
        return None
    key = name.strip().upper().removeprefix(_enum_prefix(enum))
    return int(enum[key]) if key in enum.__members__ else None


def _enum_value(enum: type[IntEnum], name: str, value: Any) -> int:
    if isinstance(value, str):
        number = enum_by_name(enum, value)
        if number is None:
            raise BodyError(f"{name}: unknown value {value[:40]!r}", name)
        return number
    return _int_value(name, value, INT32)


def _int_value(name: str, value: Any, bounds: tuple[int, int]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BodyError(f"{name} must be an integer", name)
    if not bounds[0] <= value <= bounds[1]:
        raise BodyError(f"{name} is out of range", name)
    return value


def _text(name: str, value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise BodyError(f"{name} {problem}", name)
    return value


def decode_object(raw: bytes, fields: dict[str, Any]) -> dict[str, Any]:
    """Returns {field: value} for the fields present and not null."""
    if json_too_deep(raw):
        raise BodyError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        document = json.loads(raw)
    except ValueError:  # UnicodeDecodeError included
        raise BodyError("body is not valid JSON") from None
    if not isinstance(document, dict):
        raise BodyError("body must be a JSON object")
    lookup = {}
    for name in fields:
        lookup[name.lower()] = name
        lookup[_camel(name).lower()] = name
    out: dict[str, Any] = {}
    for key, value in document.items():
        name = lookup.get(key.lower())
        if name is None or value is None:
            continue
        kind = fields[name]
        if kind is str:
            if not isinstance(value, str):
                raise BodyError(f"{name} must be a string", name)
            out[name] = _text(name, value)
        elif kind is dict:
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise BodyError(f"{name} must be an object of string values", name)
            out[name] = {_text(name, k): _text(name, v) for k, v in value.items()}
        elif isinstance(kind, tuple):
            out[name] = _int_value(name, value, kind)
        else:
            out[name] = _enum_value(kind, name, value)
    return out
