"""Circuit breakers, quotas and their stores: in this process, and in Redis (127.0.0.1:6379,
TEST_REDIS_URL to override; skipped loudly without it, except under CI=true)."""

from __future__ import annotations

import os
import uuid

import pytest

from payments_svc.resilience.store import LocalStore, RedisStore

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
KEY_PREFIX = f"payments-svc-test-{uuid.uuid4().hex[:8]}:"  # per test process: parallel runs share one Redis


async def redis_problem() -> str | None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
        return None
    except Exception as exc:  # any failure means "not here"
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()


async def require_redis() -> None:
    problem = await redis_problem()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"Redis is required under CI but is unreachable at {REDIS_URL}: {problem}")
    pytest.skip(f"!!! REDIS TESTS SKIPPED: Redis unreachable at {REDIS_URL} ({problem}) !!!")


async def forget(*keys: str) -> None:
    """Deletes this test's circuits and buckets from the shared Redis."""
    import redis.asyncio as redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        await client.delete(*(KEY_PREFIX + k for k in keys))
    finally:
        await client.aclose()


@pytest.fixture(params=["local", "redis"])
async def store(request):
    if request.param == "local":
        yield LocalStore()
        return
    await require_redis()
    shared = RedisStore(REDIS_URL, KEY_PREFIX)
    yield shared
    await shared.close()


@pytest.fixture
def name() -> str:
    """A provider or caller name of this test's own (Redis is shared between test runs)."""
    return "t" + uuid.uuid4().hex[:10]
