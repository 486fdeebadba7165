"""The external Auth client in-process against the fake Auth service: what a key's answer
grants, which refusals are the caller's bad key (401) and which are ours (503: Auth down, slow,
or refusing our own APP_API_KEY), and how long the verdict on our own key is trusted."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from structlog.testing import capture_logs

from payments_svc.auth import authenticators
from payments_svc.auth.authenticators import AUTH_UNAVAILABLE, INVALID_KEY, ExternalAuthenticator
from payments_svc.auth.caller import Caller
from payments_svc.domain.errors import PermissionDeniedError, ServiceUnavailableError, UnauthenticatedError
from tests.fakes.auth_server import FakeAuth

APP_KEY = "app-key-of-payments"
KEYS = {
    APP_KEY: ("payments-svc", ["payments-svc"]),
    "k-shop": ("shop", ["payments-svc", "other-svc:caller:ads"]),
    "k-gateway": ("gateway", ["payments-svc", "payments-svc:caller:billing", "payments-svc:caller:*", "reports"]),
    "k-no-access": ("shop", ["other-svc"]),
    "k-denied": grpc.StatusCode.PERMISSION_DENIED,
    "k-slow": ("shop", ["payments-svc"]),
}


@pytest.fixture
def fake():
    server = FakeAuth(dict(KEYS), app_keys={APP_KEY}, delays={"k-slow": 1.0})
    yield server
    server.stop()


@pytest.fixture
async def auth(fake):
    client = ExternalAuthenticator(fake.address, app_api_key=APP_KEY, service_name="payments-svc", timeout_seconds=0.5)
    yield client
    await client.close()


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(authenticators.time, "monotonic", lambda: now[0])
    return now


def key_id(key: str) -> str:
    """The audit trail's name for an Auth-validated key: a digest prefix, never the key."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


async def test_the_answer_names_the_caller_and_its_grants_for_this_service_only(auth, fake):
    assert await auth.authenticate("k-shop") == Caller("shop", frozenset(), key_id=key_id("k-shop"))
    assert await auth.authenticate("k-gateway") == Caller("gateway", frozenset({"billing", "*"}), key_id=key_id("k-gateway"))
    assert fake.calls[0] == ("k-shop", (APP_KEY,))  # we identify ourselves with APP_API_KEY


async def test_a_key_without_access_to_this_service_is_forbidden(auth):
    with pytest.raises(PermissionDeniedError) as err:
        await auth.authenticate("k-no-access")
    assert err.value.message == "forbidden"


@pytest.mark.parametrize("key", ["k-unknown", "k-denied"])
async def test_a_refused_key_is_unauthenticated_while_auth_accepts_our_own(auth, fake, clock, key):
    for _ in range(3):
        with pytest.raises(UnauthenticatedError) as err:
            await auth.authenticate(key)
        assert err.value.message == INVALID_KEY
    assert fake.count(APP_KEY) == 1  # our own key's acceptance is checked once, then trusted
    clock[0] += ExternalAuthenticator.OWN_KEY_ACCEPTED_TRUST_SECONDS - 0.1
    with pytest.raises(UnauthenticatedError):
        await auth.authenticate(key)
    assert fake.count(APP_KEY) == 1
    clock[0] += 0.1  # the trust ran out: asked again
    with pytest.raises(UnauthenticatedError):
        await auth.authenticate(key)
    assert fake.count(APP_KEY) == 2


async def test_an_answered_key_renews_the_trust_in_our_own_key(auth, fake, clock):
    with pytest.raises(UnauthenticatedError):
        await auth.authenticate("k-unknown")
    clock[0] += ExternalAuthenticator.OWN_KEY_ACCEPTED_TRUST_SECONDS - 1
    await auth.authenticate("k-shop")  # Auth answered: it accepts our key, trusted 30 s from now
    clock[0] += 2
    with pytest.raises(UnauthenticatedError):
        await auth.authenticate("k-unknown")
    assert fake.count(APP_KEY) == 1


async def test_auth_refusing_our_own_key_is_unavailable_and_logged_with_the_fix(auth, fake, clock):
    fake.app_keys = {"the-new-app-key"}
    with capture_logs() as logs:
        for _ in range(2):
            with pytest.raises(ServiceUnavailableError) as err:
                await auth.authenticate("k-shop")
            assert err.value.message == AUTH_UNAVAILABLE
    refused = [e for e in logs if e["event"] == "auth_refuses_app_api_key"]
    assert len(refused) == 1  # the verdict is trusted for a while: logged once, not per request
    assert refused[0]["log_level"] == "error" and refused[0]["code"] == "UNAUTHENTICATED"
    assert refused[0]["auth_service"] == fake.address and refused[0]["details"] == "invalid x-api-key"
    assert refused[0]["message"] == (
        "the Auth service refuses this service's APP_API_KEY: every caller gets UNAVAILABLE (503) "
        "until APP_API_KEY is a key Auth accepts (check the Secret, or the key at Auth)")
    assert fake.count(APP_KEY) == 1

    clock[0] += ExternalAuthenticator.OWN_KEY_REFUSED_TRUST_SECONDS - 0.1
    with pytest.raises(ServiceUnavailableError):
        await auth.authenticate("k-shop")
    assert fake.count(APP_KEY) == 1
    fake.app_keys = {APP_KEY}  # fixed at Auth
    clock[0] += 0.1
    with capture_logs() as logs:
        assert await auth.authenticate("k-shop") == Caller("shop", frozenset(), key_id=key_id("k-shop"))
        with pytest.raises(UnauthenticatedError):
            await auth.authenticate("k-unknown")
    assert [e["event"] for e in logs] == ["auth_accepts_app_api_key_again"]
    assert logs[0]["auth_service"] == fake.address and logs[0]["log_level"] == "warning"


async def test_auth_slow_or_down_is_unavailable_never_a_bad_key(auth, fake):
    with pytest.raises(ServiceUnavailableError) as err:
        await auth.authenticate("k-slow")  # slower than the 0.5 s timeout
    assert err.value.message == AUTH_UNAVAILABLE
    fake.stop()
    for key in ("k-shop", "k-unknown"):
        with pytest.raises(ServiceUnavailableError):
            await auth.authenticate(key)
