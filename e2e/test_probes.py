"""What an orchestrator and an operator see: the probes, gRPC health, auth at the edge."""

from __future__ import annotations

import aiohttp

from .test_restarts import health


async def test_probes_answer_without_credentials(deployment):
    server = deployment.stack.server
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz"):
            async with session.get(server.http_url + path) as response:
                assert response.status == 200, (path, await response.text())
        async with session.get(server.http_url + "/health") as response:  # the reference's: needs headers
            assert response.status in (400, 401)
    assert await health(server.grpc_target) == "SERVING"
    assert await health(server.grpc_target, "payments.PaymentsService") == "SERVING"


async def test_requests_need_a_valid_key(http):
    status, answer, headers = await http.request("GET", "/payments/1", headers={"X-API-Key": "psk_not_a_key"})
    assert status == 401 and "error" in answer
    assert headers.get("X-Request-ID")  # echoed back
    status, _, _ = await http.request("GET", "/payments?limit=1")
    assert status == 200


def test_every_process_of_the_stack_is_running(deployment):
    stack = deployment.stack
    assert stack.server.running()
    assert {name: w.running() for name, w in stack.workers.items()} == {name: True for name in stack.workers}
    expected = {"dispatcher", "reconcile", "expire"} | ({"stellar-watch"} if "stellar" in deployment.drivers else set())
    assert set(stack.workers) == expected
