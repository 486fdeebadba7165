"""Property-based fuzzing of the HTTP shim against the OpenAPI document it serves
(schemathesis, on hypothesis), on both backends: requests that fit the document and
requests that break it in every way it can express, plus hostile JSON bodies and
header values the document cannot express. Never a 5xx; every error answer is the
JSON error shape; every answer matches the document.

Bounded and derandomized: the same examples on every run, so CI is repeatable."""

from __future__ import annotations

import json
import string
import urllib.request

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from .conftest import new_id

EXAMPLES = 150
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                         suppress_health_check=list(HealthCheck))


def served_document(deployment) -> dict:
    with urllib.request.urlopen(deployment.server.http_url + "/openapi.json", timeout=30) as response:
        return json.load(response)


def without_streams(document: dict) -> dict:
    """The document less its SSE watch streams, which answer for as long as the client
    listens (tests/live covers them, their refusals included)."""
    def streams(operation: dict) -> bool:
        return "text/event-stream" in operation["responses"].get("200", {}).get("content", {})

    paths = {path: {m: op for m, op in ops.items() if not streams(op)} for path, ops in document["paths"].items()}
    return {**document, "paths": {path: ops for path, ops in paths.items() if ops}}


def assert_error_shape(status: int, content_type: str, content: bytes, codes: list[str]) -> None:
    assert status < 500, (status, content)
    if status >= 400:
        assert content_type.startswith("application/json"), (status, content_type, content)
        body = json.loads(content)
        assert isinstance(body.get("error"), str) and body["error"], body
        assert body.get("code") in codes, body
        assert isinstance(body.get("field", ""), str), body


def test_served_document_lists_what_this_configuration_serves(deployment):
    paths = served_document(deployment)["paths"]
    assert "/webhooks/stripe" in paths  # Stripe is enabled in this package's deployment


def test_every_operation_against_the_document(deployment, seeded):
    document = served_document(deployment)
    codes = document["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
    schema = schemathesis.openapi.from_dict(without_streams(document))
    strategy = st.one_of(schema.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE),
                         schema.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE))
    session = requests.Session()

    @FUZZ_SETTINGS
    @given(case=strategy)
    def check(case):
        response = case.call(base_url=deployment.server.http_url, session=session, headers={"X-API-Key": deployment.api_key},
                             timeout=30)
        assert_error_shape(response.status_code, response.headers.get("content-type", [""])[0], response.content, codes)
        # Whether well-formed data is accepted depends on configuration the document cannot know (the
        # providers' currencies, PAYMENTS_MAX_AMOUNT_CENTS, callback hosts) and webhooks need real signatures.
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    check()


# What the document cannot express: JSON nested past the limit, unpaired surrogate
# and NUL escapes in any field, raw bytes of every kind, at every route that reads a body.
BODY_ROUTES = ["/payments", "/payments/1/cancel", "/payments/1/refund", "/webhooks/providers/sandbox/h",
               "/webhooks/providers/stripe/h", "/webhooks/stripe"]
FIELDS = ["request_id", "caller_service", "resource_type", "resource_id", "customer_ref", "amount_cents", "currency",
          "payment_method", "payment_type", "provider", "recurring_interval", "recurring_interval_count",
          "status_callback_url", "success_url", "cancel_url", "metadata", "reason", "payload", "signature"]
hostile_strings = st.one_of(
    st.sampled_from(["\\ud800", "\\udfff", "\\u0000", "\\ud83d", "\\ud83d\\ude00", "\\\\", "\\\""]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20).map(lambda t: json.dumps(t)[1:-1]),
).map(lambda escaped: '"' + escaped + '"')
json_values = st.recursive(
    st.one_of(hostile_strings, st.sampled_from(["null", "true", "1", "-1", "1e999", "9" * 50, "1.5", "[]", "{}"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]"),
                            st.dictionaries(st.sampled_from(FIELDS), inner, max_size=3).map(
                                lambda d: "{" + ",".join(f'"{k}":{v}' for k, v in d.items()) + "}")),
    max_leaves=8)
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6).map(
        lambda d: ("{" + ",".join(f'"{k}":{v}' for k, v in d.items()) + "}").encode()),
    st.integers(60, 3000).flatmap(lambda depth: st.sampled_from([
        b'{"metadata":' + b"[" * depth + b"]" * depth + b"}", b"[" * depth, b'{"a":' * depth])),
    st.binary(max_size=200),
)
# Any bytes a client library lets through (no CR/LF, no leading blank).
header_values = st.one_of(
    st.binary(min_size=1, max_size=30).filter(lambda b: b"\r" not in b and b"\n" not in b and b[:1] not in (b" ", b"\t")),
    st.sampled_from([b"\xff", b"\xed\xa0\x80", "é".encode(), b"a\x00b", b"\x7f"]))


def test_hostile_bodies_and_headers(deployment, seeded):
    codes = served_document(deployment)["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
    session = requests.Session()
    base = deployment.server.http_url

    @FUZZ_SETTINGS
    @given(route=st.sampled_from(BODY_ROUTES), body=bodies,
           content_type=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"]))
    def post(route, body, content_type):
        headers = {"X-Request-ID": new_id("fuzz"), "X-API-Key": deployment.api_key, "Content-Type": content_type,
                   "X-Provider-Signature": "t=1,v1=00", "Stripe-Signature": "t=1,v1=00"}
        response = session.post(base + route, data=body, headers=headers, timeout=30)
        assert_error_shape(response.status_code, response.headers.get("Content-Type", ""), response.content, codes)

    post()

    @FUZZ_SETTINGS
    @given(name=st.sampled_from(["X-Request-ID", "X-API-Key", "X-Provider-Signature", "Content-Type"]),
           value=header_values, path=st.sampled_from(["/health", "/payments", "/webhooks/providers/sandbox/h"]),
           query=st.text(alphabet=string.printable.strip() + "%", max_size=20))
    def header(name, value, path, query):
        headers = {"X-Request-ID": b"fuzz", "X-API-Key": deployment.api_key.encode(), name: value}
        response = session.get(f"{base}{path}?caller_service={query}&limit={query}", headers=headers, timeout=30)
        assert_error_shape(response.status_code, response.headers.get("Content-Type", ""), response.content, codes)

    header()
