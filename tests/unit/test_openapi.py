"""openapi.json is current, covers every API route, and describes what the code sends."""

from __future__ import annotations

import json
from datetime import datetime

from aiohttp import web

from payments_svc.api.http.openapi import build_openapi
from payments_svc.api.http.ops_routes import OpsRoutes
from payments_svc.api.http.routes import Routes
from payments_svc.api.http.stripe_routes import StripeRoutes
from payments_svc.api.http.vnpay_routes import VnpayRoutes
from payments_svc.api.payment_fields import event_fields, payment_fields
from payments_svc.domain.enums import PaymentMethod, PaymentStatus, PaymentType, ProviderType
from payments_svc.domain.payment import Payment, PaymentEvent

from ..support import REPO

NOT_DESCRIBED = {"/metrics", "/openapi.json", "/stripe/return", "/vnpay/return"}  # operator and browser pages, not the API


def test_committed_openapi_json_is_current():
    committed = json.loads((REPO / "openapi.json").read_text())
    assert committed == build_openapi(), "openapi.json is stale: run `make proto`"


def test_every_api_route_is_described_and_nothing_else():
    app = web.Application()
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


def test_json_payment_and_event_match_their_schemas():
    schemas = build_openapi()["components"]["schemas"]
    fields = payment_fields(_payment())
    assert set(schemas["Payment"]["required"]) <= set(fields) <= set(schemas["Payment"]["properties"])
    event = event_fields(PaymentEvent(1, 1, "payment_created", None, PaymentStatus.CREATED, None, False, None, datetime(2026, 1, 1)))
    assert set(event) == set(schemas["PaymentEvent"]["properties"]) == set(schemas["PaymentEvent"]["required"])
