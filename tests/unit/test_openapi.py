"""openapi.json is current and valid, covers every API route, and describes what the code sends."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from aiohttp import web
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from payments_svc.api.errors import error_body
from payments_svc.api.http.live_routes import LiveRoutes
from payments_svc.api.http.openapi import build_openapi
from payments_svc.api.http.ops_routes import OpsRoutes
from payments_svc.api.http.routes import Routes
from payments_svc.api.http.stripe_routes import StripeRoutes
from payments_svc.api.http.vnpay_routes import VnpayRoutes
from payments_svc.api.payment_fields import event_fields, payment_fields
from payments_svc.domain.enums import PaymentMethod, PaymentStatus, PaymentType, ProviderType
from payments_svc.domain.errors import ErrorKind, PaymentsError, ValidationError
from payments_svc.domain.payment import Payment, PaymentEvent

from ..support import REPO

NOT_DESCRIBED = {"/metrics", "/openapi.json", "/stripe/return", "/vnpay/return"}  # operator and browser pages, not the API


def test_committed_openapi_json_is_current():
    committed = json.loads((REPO / "openapi.json").read_text())
    assert committed == build_openapi(), "openapi.json is stale: run `make proto`"


def test_every_api_route_is_described_and_nothing_else():
    app = web.Application()
    LiveRoutes(None, None).register(app)
    Routes(None, None).register(app)
    OpsRoutes(None).register(app)
    StripeRoutes(None).register(app)
    VnpayRoutes(None).register(app)
    served = {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    served = {(m, p) for m, p in served if p not in NOT_DESCRIBED}
    described = {(m, p) for p, ops in build_openapi()["paths"].items() for m in ops}
    assert served == described


def _payment() -> Payment:
    now = datetime(2026, 1, 2, 3, 4, 5)
    values = {name: None for name in Payment.__dataclass_fields__}
    values.update(id=1, request_id="r", caller_service="c", request_fingerprint="f" * 64, resource_type="t",
                  resource_id="i", amount_cents=1, currency="USD", status=PaymentStatus.PENDING,
                  payment_method=PaymentMethod.HOSTED_CARD, payment_type=PaymentType.ONE_TIME,
                  provider=ProviderType.SANDBOX, provider_callback_hash="h", provider_callback_url="u",
                  status_callback_url="s", refunded_cents=0, refundable_cents=1, received_cents=0, metadata={},
                  attention_required=False, created_at=now, updated_at=now)
    return Payment(**values)


def schema_validator(document: dict, name: str) -> Draft202012Validator:
    """A JSON Schema validator of one component schema, its $refs resolved within the document."""
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": document["components"]})


def test_json_payment_and_event_match_their_schemas():
    document = build_openapi()
    schemas = document["components"]["schemas"]
    fields = payment_fields(_payment())
    assert set(schemas["Payment"]["required"]) <= set(fields) <= set(schemas["Payment"]["properties"])
    schema_validator(document, "PaymentEnvelopeResponse").validate({"payment": fields})
    event = event_fields(PaymentEvent(1, 1, "payment_created", None, PaymentStatus.CREATED, None, False, None, datetime(2026, 1, 1)))
    assert set(event) == set(schemas["PaymentEvent"]["properties"]) == set(schemas["PaymentEvent"]["required"])
    schema_validator(document, "ListPaymentEventsResponse").validate({"events": [event]})


@pytest.mark.parametrize("providers", [None, [ProviderType.SANDBOX], [ProviderType.STRIPE, ProviderType.STELLAR]],
                         ids=["all", "sandbox", "stripe-stellar"])
def test_the_document_is_valid_openapi(providers):
    validate(build_openapi(providers))


def test_only_enabled_providers_routes_are_listed():
    assert "/webhooks/stripe" in build_openapi()["paths"]
    assert "/webhooks/stripe" in build_openapi([ProviderType.STRIPE])["paths"]
    assert "/webhooks/stripe" not in build_openapi([ProviderType.SANDBOX, ProviderType.STELLAR])["paths"]


def test_security_schemes_and_response_headers_are_described():
    document = build_openapi()
    schemes = document["components"]["securitySchemes"]
    assert {(s["in"], s["name"]) for s in schemes.values()} == {("header", "X-API-Key"), ("header", "X-Request-ID")}
    assert document["security"] == [{"ApiKey": []}]
    for path in ("/healthz", "/readyz", "/webhooks/stripe"):
        assert next(iter(document["paths"][path].values()))["security"] == []
    create = document["paths"]["/payments"]["post"]["responses"]
    assert set(create["201"]["headers"]) == {"X-Request-ID", "idempotent-replayed"}
    assert set(create["409"]["headers"]) == set(create["503"]["headers"]) == {"X-Request-ID", "Retry-After"}
    assert set(create["400"]["headers"]) == {"X-Request-ID"}
    assert "idempotent-replayed" in document["paths"]["/payments/{id}/refund"]["post"]["responses"]["200"]["headers"]
    assert "X-Request-ID" not in document["paths"]["/webhooks/stripe"]["post"]["responses"]["200"].get("headers", {})


@pytest.mark.parametrize("error", [
    ValidationError("amount_cents must be > 0", field="amount_cents"),
    PaymentsError("payment not found", ErrorKind.NOT_FOUND),
    *(PaymentsError("x", kind) for kind in ErrorKind),
])
def test_every_error_body_matches_the_error_schema(error):
    schema_validator(build_openapi(), "Error").validate(error_body(error))


def test_list_filters_describe_numbers_and_names():
    parameters = {p["name"]: p for p in build_openapi()["paths"]["/payments"]["get"]["parameters"]}
    assert {"10", "paid", "PAID", "PAYMENT_STATUS_PAID"} <= set(parameters["status"]["schema"]["enum"])
    assert {"1", "stripe", "STRIPE", "PROVIDER_TYPE_STRIPE", "100", "sandbox"} <= set(parameters["provider"]["schema"]["enum"])
