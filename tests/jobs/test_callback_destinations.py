"""Where status callbacks may go (SSRF): the destination policy at create, and the
dispatcher checking every address a callback host resolves to before it connects.

DNS is played by a scripted resolver (the real one cannot be pointed at test
addresses); everything else is real: the service, the database, a receiver on
127.0.0.1, and a `payments-svc serve` process for the wire answers."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import uuid

import aiohttp
import grpc
import pytest

from payments_svc.auth.caller import Caller
from payments_svc.callback_policy import CallbackDestinations, address_kind, ip_literal
from payments_svc.config import ConfigError, load_settings
from payments_svc.domain.enums import DeliveryStatus, ProviderType
from payments_svc.domain.errors import ValidationError
from payments_svc.gen import payments_pb2 as pb
from payments_svc.gen import payments_pb2_grpc
from payments_svc.jobs import dispatch
from payments_svc.jobs.dispatch import CallbackDispatcher
from payments_svc.providers.registry import ProviderRegistry
from payments_svc.service.callbacks import CallbackService

from ..support import ServerProcess, base_env, cli, create_key, new_database
from .helpers import SHOP_SECRET, Receiver, ScriptedProvider, command, delivery_rows, seed_due_callbacks

SHOP = Caller("shop")
PRODUCTION = CallbackDestinations(allow_loopback=False)
DEVELOPMENT = CallbackDestinations(allow_loopback=True)

# Refused in every environment.
ALWAYS_REFUSED = [
    ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "a cloud metadata address"),
    ("http://100.100.100.200/latest/meta-data/", "a cloud metadata address"),
    ("http://168.63.129.16/machine", "a cloud metadata address"),
    ("http://169.254.1.1/", "a link-local address"),
    ("http://0xa9fea9fe/", "a cloud metadata address"),  # 169.254.169.254 spelt as one hex number
    ("http://[::ffff:169.254.169.254]/", "a cloud metadata address"),
    ("http://[64:ff9b::a9fe:a9fe]/", "a cloud metadata address"),  # NAT64 of 169.254.169.254
    ("http://[2002:a9fe:a9fe::1]/", "a cloud metadata address"),  # 6to4 of 169.254.169.254
    ("http://[fe80::1%25eth0]/", "a link-local address"),
    ("http://0.0.0.0:8080/", "an unspecified address"),
    ("http://0/", "an unspecified address"),
    ("http://[::]/", "an unspecified address"),
    ("http://224.0.0.1/", "a multicast address"),
    ("http://[ff02::1]/", "a multicast address"),
    ("http://255.255.255.255/", "a reserved address"),
    ("http://240.0.0.1/", "a reserved address"),
    ("http://192.0.2.10/", "a reserved address"),
    ("http://[2001:db8::1]/", "a reserved address"),
    ("http://[::7f00:1]/", "a reserved address"),
]
# Loopback, in the spellings resolvers accept: refused in production only.
LOOPBACK = [
    "http://127.0.0.1/cb", "http://127.1/cb", "http://0x7f.1/cb", "http://2130706433/cb", "http://0177.0.0.1/cb",
    "http://017700000001/cb", "http://0x7f000001/cb", "http://127.255.255.254/cb", "http://[::1]/cb",
    "http://[::ffff:127.0.0.1]/cb", "http://[0:0:0:0:0:ffff:7f00:1]/cb", "http://localhost/cb",
    "http://LOCALHOST./cb", "http://api.localhost:8443/cb",
]
ALLOWED = [
    "http://10.0.0.1/cb", "http://172.16.5.4:8080/cb", "http://192.168.1.1/cb", "http://100.64.1.2/cb",
    "http://[fd12:3456::1]/cb", "https://8.8.8.8/cb", "https://billing.internal.example/cb", "https://shop.example/cb",
]


@pytest.mark.parametrize("destinations", [PRODUCTION, DEVELOPMENT], ids=["production", "development"])
@pytest.mark.parametrize(("url", "kind"), ALWAYS_REFUSED)
def test_internal_addresses_are_always_refused(destinations, url, kind):
    problem = destinations.url_problem(url)
    assert problem is not None and problem.startswith("status_callback_url host ")
    assert f"is {kind}; status callbacks are never sent there" in problem


@pytest.mark.parametrize("url", LOOPBACK)
def test_loopback_in_any_spelling_is_refused_in_production_only(url):
    problem = PRODUCTION.url_problem(url)
    assert problem is not None and "is a loopback address; refused in production" in problem
    assert DEVELOPMENT.url_problem(url) is None  # the tests' receivers listen on 127.0.0.1


@pytest.mark.parametrize("url", ALLOWED)
def test_private_and_public_addresses_and_names_are_allowed_by_default(url):
    assert PRODUCTION.url_problem(url) is None


def test_the_network_allow_list_narrows_but_never_opens_refused_ranges():
    narrowed = CallbackDestinations(allowed_networks=(ipaddress.ip_network("10.20.0.0/16"),
                                                      ipaddress.ip_network("169.254.0.0/16")))
    assert narrowed.url_problem("http://10.20.3.4/cb") is None
    assert narrowed.url_problem("http://[::ffff:10.20.3.4]/cb") is None
    for url in ("http://10.0.0.1/cb", "https://8.8.8.8/cb", "http://127.0.0.1/cb"):
        assert "is outside PAYMENTS_CALLBACK_ALLOWED_NETWORKS" in narrowed.url_problem(url)
    assert "a cloud metadata address" in narrowed.url_problem("http://169.254.169.254/")
    assert "a link-local address" in narrowed.url_problem("http://169.254.3.3/")
    # Names are checked once resolved (by the dispatcher), not here.
    assert narrowed.url_problem("https://hooks.example/cb") is None


@pytest.mark.parametrize("url", ["http://1.2.3.999/", "http://1.2.3.4.5/", "http://0x1g.1/", "http://08.1/",
                                 "http://[1::2::3]/", "http://evil.example\\@127.0.0.1/", "http:///cb"])
def test_malformed_hosts_are_refused(url):
    problem = DEVELOPMENT.url_problem(url)
    assert problem is not None and problem.startswith("status_callback_url")


def test_ip_literals_and_kinds():
    assert ip_literal("0x7f.1") == ip_literal("2130706433") == ip_literal("127.0.0.1.") == ipaddress.ip_address("127.0.0.1")
    assert ip_literal("10.1") == ipaddress.ip_address("10.0.0.1") and ip_literal("192.168.257") == ipaddress.ip_address("192.168.1.1")
    assert ip_literal("hooks.example") is None and ip_literal("a1.example") is None
    kinds = {a: address_kind(ipaddress.ip_address(a)) for a in ("8.8.8.8", "10.1.1.1", "::1", "fd00::1", "198.18.0.1")}
    assert kinds == {"8.8.8.8": "public", "10.1.1.1": "private", "::1": "loopback", "fd00::1": "private",
                     "198.18.0.1": "reserved"}


def test_settings():
    s = load_settings({"PAYMENTS_CALLBACK_ALLOWED_NETWORKS": "10.20.0.0/16, fd12:3456::/48,192.168.1.7",
                       "PAYMENTS_ENV": "production"})
    assert s.callback_destinations == CallbackDestinations(
        (), tuple(ipaddress.ip_network(n) for n in ("10.20.0.0/16", "fd12:3456::/48", "192.168.1.7/32")), allow_loopback=False)
    assert load_settings({}).callback_destinations == DEVELOPMENT
    for bad in ("10.0.0.1/8", "hooks.example", "10.0.0.0/33"):
        with pytest.raises(ConfigError, match="PAYMENTS_CALLBACK_ALLOWED_NETWORKS"):
            load_settings({"PAYMENTS_CALLBACK_ALLOWED_NETWORKS": bad})


# ---- create and dispatch, in-process -------------------------------------------------------


class ScriptedDNS(aiohttp.abc.AbstractResolver):
    """Answers from `ANSWERS` (name → addresses) and records each question."""

    ANSWERS: dict[str, list[str]] = {}
    asked: list[str] = []

    async def resolve(self, host, port=0, family=socket.AF_INET):
        ScriptedDNS.asked.append(host)
        if host not in self.ANSWERS:
            raise OSError(f"no such host {host}")
        return [{"hostname": host, "host": address, "port": port, "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST} for address in self.ANSWERS[host]]

    async def close(self):
        pass


@pytest.fixture
def dns(monkeypatch):
    monkeypatch.setattr(dispatch.aiohttp, "DefaultResolver", ScriptedDNS)
    monkeypatch.setattr(ScriptedDNS, "ANSWERS", {})
    monkeypatch.setattr(ScriptedDNS, "asked", [])
    return ScriptedDNS


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
async def service_and_dispatcher(make_container):
    opened = []

    async def factory(**env):
        env = {"PAYMENTS_CALLBACK_SIGNING_SECRETS": f"shop={SHOP_SECRET}", "PAYMENTS_SANDBOX_ENABLED": "true", **env}
        container = await make_container(**env)
        provider = ScriptedProvider()
        container.service.providers = ProviderRegistry([provider], ProviderType.SANDBOX)
        dispatcher = CallbackDispatcher(container.db, container.settings)
        opened.append((container, dispatcher))
        return container.service, provider, dispatcher

    yield factory
    for container, dispatcher in opened:
        await dispatcher.close()
        await container.close()


async def _delivery(service, payment_id: int):
    return (await CallbackService(service).get_payment_with_delivery(Caller("shop", frozenset("*")), payment_id))[1]


async def test_create_refuses_internal_destinations_before_anything_is_stored(service_and_dispatcher):
    service, provider, _ = await service_and_dispatcher(PAYMENTS_ENV="production")
    for url in ("http://169.254.169.254/latest/meta-data/", "http://0x7f.1/cb", "http://localhost:8080/cb",
                "http://[::ffff:127.0.0.1]/cb"):
        with pytest.raises(ValidationError, match="^status_callback_url host "):
            await service.create_payment(SHOP, command("r-" + uuid.uuid4().hex[:8], url))
    assert provider.create_keys == []
    payment = (await service.create_payment(SHOP, command("ok", "http://10.1.2.3/cb"))).payment
    assert payment.status_callback_url == "http://10.1.2.3/cb"


async def test_dispatch_refuses_a_stored_url_the_policy_now_refuses(service_and_dispatcher, database, receiver):
    """Payments stored before the policy (or under looser settings) fail for good, unsent."""
    _, _, dispatcher = await service_and_dispatcher(PAYMENTS_ENV="production")
    [metadata, loopback] = [
        (await seed_due_callbacks(database.url, 1, url))[0]
        for url in ("http://169.254.169.254/latest/meta-data/", receiver.url().replace("127.0.0.1", "2130706433"))
    ]
    result = await dispatcher.run_batch(asyncio.Event())
    assert (result.claimed, result.failed) == (2, 2)
    assert receiver.received == []
    rows = await delivery_rows(database.url)
    assert rows[metadata].status == DeliveryStatus.FAILED and rows[loopback].status == DeliveryStatus.FAILED
    assert rows[metadata].last_error == ("status_callback_url host '169.254.169.254' is a cloud metadata address; "
                                         "status callbacks are never sent there; not retried")
    assert "(127.0.0.1) is a loopback address; refused in production; not retried" in rows[loopback].last_error


@pytest.mark.parametrize(("answers", "env", "refusal"), [
    (["169.254.169.254"], {}, "hooks.shop.example' (169.254.169.254) is a cloud metadata address"),
    (["10.9.8.7", "fe80::1"], {}, "hooks.shop.example' (fe80::1) is a link-local address"),
    (["127.0.0.1"], {"PAYMENTS_ENV": "production"}, "hooks.shop.example' (127.0.0.1) is a loopback address"),
    (["127.0.0.1"], {"PAYMENTS_CALLBACK_ALLOWED_NETWORKS": "10.0.0.0/8"}, "is outside PAYMENTS_CALLBACK_ALLOWED_NETWORKS"),
], ids=["metadata", "one-bad-address", "loopback-in-production", "outside-networks"])
async def test_a_name_resolving_to_a_refused_address_fails_for_good_and_never_connects(
        service_and_dispatcher, dns, receiver, answers, env, refusal):
    """A name passes at create (no DNS then); the dispatcher checks what it resolves to."""
    service, _, dispatcher = await service_and_dispatcher(PAYMENTS_CALLBACK_ALLOWED_HOSTS="hooks.shop.example", **env)
    url = f"http://hooks.shop.example:{receiver.port}/callbacks"
    payment = (await service.create_payment(SHOP, command("r-1", url))).payment
    await service.cancel_payment(SHOP, payment.id, "customer left")
    dns.ANSWERS["hooks.shop.example"] = answers

    result = await dispatcher.run_batch(asyncio.Event())
    assert (result.claimed, result.failed) == (1, 1)
    assert dns.asked == ["hooks.shop.example"] and receiver.received == []
    delivery = await _delivery(service, payment.id)
    assert delivery.status == DeliveryStatus.FAILED and delivery.next_attempt_at is None
    assert refusal in delivery.last_error and delivery.last_error.endswith("; not retried")


async def test_a_name_resolving_to_an_allowed_address_is_delivered_there(service_and_dispatcher, dns, receiver):
    service, _, dispatcher = await service_and_dispatcher(PAYMENTS_CALLBACK_ALLOWED_NETWORKS="127.0.0.0/8")
    payment = (await service.create_payment(SHOP, command("r-1", f"http://hooks.shop.example:{receiver.port}/cb"))).payment
    await service.cancel_payment(SHOP, payment.id, "customer left")
    dns.ANSWERS["hooks.shop.example"] = ["127.0.0.1"]
    result = await dispatcher.run_batch(asyncio.Event())
    assert (result.claimed, result.done) == (1, 1)
    assert [r.path for r in receiver.received] == ["/cb"] and dns.asked == ["hooks.shop.example"]


# ---- the wire answers ----------------------------------------------------------------------


async def test_both_transports_answer_invalid_argument_naming_the_field(tmp_path):
    database = new_database("sqlite", tmp_path)
    env = base_env(database.url, PAYMENTS_ENV="production", PAYMENTS_SANDBOX_ENABLED="true", TEST_LOG_DIR=str(tmp_path))
    cli(env, "db", "migrate")
    key = create_key(env, "shop")
    server = ServerProcess(env).start()
    try:
        body = {"request_id": "r-1", "caller_service": "shop", "resource_type": "order", "resource_id": "o-1",
                "amount_cents": 100, "currency": "usd", "payment_method": 1, "payment_type": 1,
                "status_callback_url": "http://169.254.169.254/latest/meta-data/iam/"}
        headers = {"X-Request-ID": "r-1", "X-API-Key": key}
        async with aiohttp.ClientSession() as session:
            async with session.post(server.http_url + "/payments", json=body, headers=headers) as resp:
                assert (resp.status, await resp.json()) == (400, {"error": (
                    "status_callback_url host '169.254.169.254' is a cloud metadata address; "
                    "status callbacks are never sent there"), "code": "invalid_argument", "field": "status_callback_url"})
            body["status_callback_url"] = "http://[::ffff:7f00:1]:8080/cb"
            async with session.post(server.http_url + "/payments", json=body, headers=headers) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"].startswith("status_callback_url host '::ffff:7f00:1' (127.0.0.1)")
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            request = pb.CreatePaymentRequest(**dict(body, status_callback_url="http://localhost/cb"))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await payments_pb2_grpc.PaymentsServiceStub(channel).CreatePayment(
                    request, metadata=[("x-request-id", "r-2"), ("x-api-key", key)], timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == "status_callback_url host 'localhost' is a loopback address; refused in production"
    finally:
        assert server.stop() == 0
        database.drop()
