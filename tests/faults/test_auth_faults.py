"""The external Auth service failing under a running `payments-svc serve`: stopped,
hung, back; refusing our own APP_API_KEY; and many requests for one key at once.
Auth is the test double of tests/fakes/auth_server.py, reached through a FaultProxy.

What must hold: callers get 503 / UNAVAILABLE (never 401) while Auth is away or
refuses us, requests work again within about two seconds of Auth coming back however
long it was away, a key is validated once at a time, and no payment is lost or
duplicated by creates caught in the outage."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from payments_svc.gen import payments_pb2 as pb

from ..fakes.auth_server import FakeAuth
from ..support import ServerProcess, base_env, cli, new_database, wait_until
from .proxy import FaultProxy
from .stack import Client, create_body, log_lines, log_size

APP_API_KEY = "app-key-of-payments"
SERVICE = "payments-service"
AUTH_UNAVAILABLE = "authentication service unavailable; retry later"
KEYS = {
    APP_API_KEY: (SERVICE, ["auth-service"]),
    "k-shop": ("shop", [SERVICE]),
    "k-burst": ("burst", [SERVICE]),
}
AUTH_TIMEOUT = 2  # PAYMENTS_AUTH_TIMEOUT_SECONDS of the server under test
BURST_DELAY = 1.2  # Auth's time to answer for k-burst (within the timeout): the other requests arrive meanwhile


def _serve(tmp_path, auth_address: str, **extra) -> tuple[ServerProcess, object]:
    database = new_database("sqlite", tmp_path)
    env = base_env(database.url, AUTH_SERVICE_GRPC_ADDR=auth_address, APP_API_KEY=APP_API_KEY,
                   TEST_LOG_DIR=str(tmp_path), PAYMENTS_AUTH_CACHE_TTL_SECONDS="0", **extra)
    cli(env, "db", "migrate")
    return ServerProcess(env).start(), database


@pytest.fixture(scope="module")
def auth():
    fake = FakeAuth(KEYS, app_keys={APP_API_KEY}, delays={"k-burst": BURST_DELAY})
    proxy = FaultProxy("127.0.0.1", fake.port).start()
    yield fake, proxy
    proxy.stop()
    fake.stop()


@pytest.fixture(scope="module")
def server(auth, tmp_path_factory):
    """Every request asks Auth (cache TTL 0), through the proxy."""
    _, proxy = auth
    server, database = _serve(tmp_path_factory.mktemp("auth-faults"), proxy.address,
                              PAYMENTS_AUTH_TIMEOUT_SECONDS=str(AUTH_TIMEOUT))
    yield server
    proxy.pass_through()
    assert server.stop() == 0, server.logs()
    database.drop()


@pytest.fixture
async def client(auth, server):
    _, proxy = auth
    async with Client(server, "k-shop") as c:
        yield c
    proxy.pass_through()


async def _both_unavailable(client: Client) -> None:
    """One request per transport: UNAVAILABLE, never UNAUTHENTICATED."""
    answer = await client.http("GET", "/health")
    assert (answer.status, answer.body) == (503, {"error": AUTH_UNAVAILABLE, "code": "unavailable"})
    assert await client.rpc("Health", pb.HealthRequest()) == (grpc.StatusCode.UNAVAILABLE, AUTH_UNAVAILABLE)


async def _recovery_seconds(client: Client) -> float:
    """Seconds from now until a request is authenticated again."""
    started = time.monotonic()

    async def works():
        return await client.rpc("Health", pb.HealthRequest()) == (grpc.StatusCode.OK, "")
    await wait_until(works, timeout=60, interval=0.05)
    return time.monotonic() - started


async def test_back_within_two_seconds_of_a_long_outage(auth, client):
    """gRPC's default reconnect backoff grows with the outage (to 6-10 s after 20 s of it);
    the Auth channel's is capped at 1 s."""
    _, proxy = auth
    assert await client.rpc("Health", pb.HealthRequest()) == (grpc.StatusCode.OK, "")
    proxy.refuse()
    outage_ends = time.monotonic() + 20
    while time.monotonic() < outage_ends:
        await _both_unavailable(client)
        await asyncio.sleep(0.5)
    proxy.pass_through()
    assert await _recovery_seconds(client) < 2.5


async def test_hung_auth_is_unavailable_after_the_auth_timeout_and_back_at_once(auth, client):
    _, proxy = auth
    assert await client.rpc("Health", pb.HealthRequest()) == (grpc.StatusCode.OK, "")
    proxy.blackhole()
    await _both_unavailable(client)  # each after PAYMENTS_AUTH_TIMEOUT_SECONDS (2 s), not the client's 20 s
    proxy.pass_through()
    assert await _recovery_seconds(client) < 2.5


@pytest.mark.parametrize("fault", ["refuse", "blackhole"], ids=["stopped", "hung"])
async def test_creates_refused_during_the_outage_and_retried_end_with_one_payment_each(auth, client, fault):
    _, proxy = auth
    getattr(proxy, fault)()
    bodies = [create_body() for _ in range(8)]
    during = await asyncio.gather(*(client.http("POST", "/payments", body) for body in bodies))
    assert {(a.status, a.body["error"]) for a in during} == {(503, AUTH_UNAVAILABLE)}
    proxy.pass_through()
    await _recovery_seconds(client)
    after = await asyncio.gather(*(client.create_until_done(body) for body in bodies))
    assert [a.status for a in after] == [201] * len(bodies)
    for body in bodies:
        listed = await client.http("GET", f"/payments?request_id={body['request_id']}")
        assert [p["request_id"] for p in listed.body["payments"]] == [body["request_id"]]


async def test_concurrent_requests_with_one_key_make_one_auth_call(auth, client):
    """The cache is off (TTL 0): every validation is needed, but one at a time per key."""
    fake, _ = auth
    before = fake.count("k-burst")
    answers = await asyncio.gather(*(client.http("GET", "/health", key="k-burst") for _ in range(50)))
    assert [a.status for a in answers] == [200] * 50
    assert fake.count("k-burst") == before + 1
    codes = await asyncio.gather(*(client.rpc("Health", pb.HealthRequest(), key="k-burst") for _ in range(50)))
    assert set(codes) == {(grpc.StatusCode.OK, "")}
    assert fake.count("k-burst") == before + 2


@pytest.mark.parametrize("refusal", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED])
async def test_auth_refusing_our_own_app_api_key_is_unavailable_and_logged_with_the_cause(tmp_path, refusal):
    """Our APP_API_KEY rotated away at Auth: every caller would get 401 "invalid or expired
    api key" for our misconfiguration. It is UNAVAILABLE, and the log says what to fix."""
    fake = FakeAuth(KEYS, app_keys={"the-new-app-key"}, app_key_refusal=refusal)
    server, database = _serve(tmp_path, fake.address, PAYMENTS_AUTH_TIMEOUT_SECONDS="2")
    try:
        async with Client(server, "k-shop") as client:
            since = log_size(server)
            for _ in range(10):
                await _both_unavailable(client)
                answer = await client.http("POST", "/payments", create_body())
                assert (answer.status, answer.body) == (503, {"error": AUTH_UNAVAILABLE, "code": "unavailable"})
            assert fake.count(APP_API_KEY) <= 2  # our own key is checked now and then, not per request
            logged = [line for line in log_lines(server, since) if line.get("event") == "auth_refuses_app_api_key"]
            assert 1 <= len(logged) <= 2 and logged[0]["level"] == "error" and "APP_API_KEY" in logged[0]["message"]
            assert logged[0]["code"] == refusal.name

            # Fixed at Auth: callers are served again, and bad keys are bad keys again.
            fake.app_keys.add(APP_API_KEY)

            async def served():
                return (await client.http("GET", "/health")).status == 200
            await wait_until(served, timeout=30, interval=0.2)
            assert (await client.http("GET", "/health", key="k-never-issued")).status == 401
    finally:
        assert server.stop() == 0, server.logs()
        fake.stop()
        database.drop()
