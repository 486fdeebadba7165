"""Where breaker state and token buckets live. With PAYMENTS_REDIS_URL, in Redis, so that
every process of every replica sees one circuit per provider account and one bucket per
caller (each step is one Lua script: atomic across processes). Without it, in this
process (the embedded default: one `serve` on SQLite needs nothing else). A Redis that
stops answering degrades to this process's state, with a warning, instead of failing
requests: limits and circuits are protection, not correctness."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

import structlog

from .settings import ResilienceSettings

log = structlog.get_logger("payments.resilience")

REDIS_TIMEOUT_SECONDS = 0.25  # a slow Redis must not become the latency of every request
REDIS_RETRY_SECONDS = 5.0  # after a Redis error, this process's own state until then

# Admission outcomes of a circuit.
CALL, PROBE, REJECT = "call", "probe", "reject"
# Transitions record() reports (None: no change).
OPENED, REOPENED, CLOSED = "opened", "reopened", "closed"


@dataclass(frozen=True, slots=True)
class CircuitRules:
    failure_threshold: int
    failure_rate: float
    min_calls: int
    window_seconds: float
    cooldown_seconds: float
    probe_seconds: float  # how long one probe may hold the half-open circuit


class Store(Protocol):
    async def admit(self, key: str, rules: CircuitRules, now: float) -> tuple[str, float]:
        """(CALL | PROBE | REJECT, seconds until the circuit may let a call through)."""

    async def peek(self, key: str, now: float) -> float:
        """0 when a call would be let through now, else the seconds until one may be (no probe is taken)."""

    async def record(self, key: str, rules: CircuitRules, ok: bool, probe: bool, now: float) -> str | None:
        """The outcome of an admitted call; the transition it caused, if any."""

    async def release_probe(self, key: str) -> None:
        """A probe ended without an outcome (cancelled): the next call may probe."""

    async def take(self, key: str, rate: float, burst: int, now: float) -> float:
        """One token from a bucket: 0 when taken, else the seconds until one is there."""


@dataclass(slots=True)
class _Circuit:
    open: bool = False
    opened_until: float = 0.0
    probe_until: float = 0.0
    consecutive: int = 0
    window_start: float = 0.0
    calls: int = 0
    failures: int = 0


class LocalStore:
    """This process's circuits and buckets (the same rules as the Lua scripts below)."""

    def __init__(self) -> None:
        self._circuits: dict[str, _Circuit] = {}
        self._buckets: dict[str, tuple[float, float]] = {}

    async def admit(self, key: str, rules: CircuitRules, now: float) -> tuple[str, float]:
        circuit = self._circuits.get(key)
        if circuit is None or not circuit.open:
            return CALL, 0.0
        if now < circuit.opened_until:
            return REJECT, circuit.opened_until - now
        if now < circuit.probe_until:
            return REJECT, circuit.probe_until - now
        circuit.probe_until = now + rules.probe_seconds
        return PROBE, 0.0

    async def peek(self, key: str, now: float) -> float:
        circuit = self._circuits.get(key)
        if circuit is None or not circuit.open:
            return 0.0
        return max(circuit.opened_until - now, circuit.probe_until - now, 0.0)

    async def record(self, key: str, rules: CircuitRules, ok: bool, probe: bool, now: float) -> str | None:
        circuit = self._circuits.setdefault(key, _Circuit(window_start=now))
        if circuit.open:
            if not probe:
                return None  # a call admitted before the circuit opened: it changes nothing now
            if ok:
                self._circuits[key] = _Circuit(window_start=now)
                return CLOSED
            circuit.opened_until, circuit.probe_until = now + rules.cooldown_seconds, 0.0
            return REOPENED
        if now - circuit.window_start >= rules.window_seconds:
            circuit.window_start, circuit.calls, circuit.failures = now, 0, 0
        circuit.calls += 1
        if ok:
            circuit.consecutive = 0
            return None
        circuit.consecutive += 1
        circuit.failures += 1
        if circuit.consecutive >= rules.failure_threshold or (
                circuit.calls >= rules.min_calls and circuit.failures >= rules.failure_rate * circuit.calls):
            circuit.open, circuit.opened_until, circuit.probe_until = True, now + rules.cooldown_seconds, 0.0
            return OPENED
        return None

    async def release_probe(self, key: str) -> None:
        circuit = self._circuits.get(key)
        if circuit is not None:
            circuit.probe_until = 0.0

    async def take(self, key: str, rate: float, burst: int, now: float) -> float:
        tokens, stamp = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - stamp) * rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / rate


# KEYS[1] the circuit's hash; ARGV: now, probe_seconds.
_ADMIT = """
local c = redis.call('HMGET', KEYS[1], 'open', 'opened_until', 'probe_until')
if c[1] ~= '1' then return {'call', '0'} end
local now = tonumber(ARGV[1])
local opened_until, probe_until = tonumber(c[2]), tonumber(c[3] or '0')
if now < opened_until then return {'reject', tostring(opened_until - now)} end
if now < probe_until then return {'reject', tostring(probe_until - now)} end
redis.call('HSET', KEYS[1], 'probe_until', tostring(now + tonumber(ARGV[2])))
return {'probe', '0'}
"""

# KEYS[1] the circuit's hash; ARGV: now. The seconds until a call may go through ('0': now).
_PEEK = """
local c = redis.call('HMGET', KEYS[1], 'open', 'opened_until', 'probe_until')
if c[1] ~= '1' then return '0' end
local now = tonumber(ARGV[1])
return tostring(math.max(tonumber(c[2]) - now, tonumber(c[3] or '0') - now, 0))
"""

# KEYS[1] the circuit; ARGV: now, ok, probe, threshold, rate, min_calls, window, cooldown.
_RECORD = """
local now, ok, probe = tonumber(ARGV[1]), ARGV[2] == '1', ARGV[3] == '1'
local c = redis.call('HMGET', KEYS[1], 'open', 'consecutive', 'window_start', 'calls', 'failures')
if c[1] == '1' then
  if not probe then return false end
  if ok then
    redis.call('DEL', KEYS[1])
    return 'closed'
  end
  redis.call('HSET', KEYS[1], 'opened_until', tostring(now + tonumber(ARGV[8])), 'probe_until', '0')
  return 'reopened'
end
local consecutive, window_start = tonumber(c[2] or '0'), tonumber(c[3] or ARGV[1])
local calls, failures = tonumber(c[4] or '0'), tonumber(c[5] or '0')
if now - window_start >= tonumber(ARGV[7]) then window_start, calls, failures = now, 0, 0 end
calls = calls + 1
if ok then consecutive = 0 else consecutive, failures = consecutive + 1, failures + 1 end
local opens = (not ok) and (consecutive >= tonumber(ARGV[4]) or
  (calls >= tonumber(ARGV[6]) and failures >= tonumber(ARGV[5]) * calls))
if opens then
  redis.call('HSET', KEYS[1], 'open', '1', 'opened_until', tostring(now + tonumber(ARGV[8])), 'probe_until', '0',
             'consecutive', '0', 'window_start', tostring(now), 'calls', '0', 'failures', '0')
  return 'opened'
end
redis.call('HSET', KEYS[1], 'open', '0', 'consecutive', tostring(consecutive), 'window_start', tostring(window_start),
           'calls', tostring(calls), 'failures', tostring(failures))
return false
"""

# KEYS[1] the bucket; ARGV: now, rate, burst. Returns the wait in seconds ('0': taken).
_TAKE = """
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens, stamp = tonumber(b[1] or ARGV[3]), tonumber(b[2] or ARGV[1])
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local wait = '0'
if tokens >= 1 then tokens = tokens - 1 else wait = tostring((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
"""


class RedisStore:
    """Circuits and buckets in Redis; this process's LocalStore while Redis fails."""

    def __init__(self, url: str, prefix: str):
        import redis.asyncio as redis  # only deployments that set PAYMENTS_REDIS_URL load it

        self._redis = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                           socket_connect_timeout=REDIS_TIMEOUT_SECONDS, decode_responses=True)
        self._admit = self._redis.register_script(_ADMIT)
        self._record = self._redis.register_script(_RECORD)
        self._peek = self._redis.register_script(_PEEK)
        self._take = self._redis.register_script(_TAKE)
        self._prefix = prefix
        self._fallback = LocalStore()
        self._failing_until = 0.0

    async def _run(self, script, key: str, args: list, fallback):
        if time.monotonic() < self._failing_until:
            return await fallback()
        try:
            return await script(keys=[self._prefix + key], args=args)
        except Exception as exc:  # redis errors, timeouts, refused connections: all mean "not now"
            self._failing_until = time.monotonic() + REDIS_RETRY_SECONDS
            log.warning("redis_unavailable", error=f"{type(exc).__name__}: {exc}",
                        message=f"circuits and quotas use this process's own state for {REDIS_RETRY_SECONDS:g} s")
            return await fallback()

    async def admit(self, key: str, rules: CircuitRules, now: float) -> tuple[str, float]:
        result = await self._run(self._admit, key, [now, rules.probe_seconds],
                                 lambda: self._fallback.admit(key, rules, now))
        return result[0], float(result[1])

    async def peek(self, key: str, now: float) -> float:
        return float(await self._run(self._peek, key, [now], lambda: self._fallback.peek(key, now)))

    async def record(self, key: str, rules: CircuitRules, ok: bool, probe: bool, now: float) -> str | None:
        args = [now, int(ok), int(probe), rules.failure_threshold, rules.failure_rate, rules.min_calls,
                rules.window_seconds, rules.cooldown_seconds]
        return await self._run(self._record, key, args, lambda: self._fallback.record(key, rules, ok, probe, now)) or None

    async def release_probe(self, key: str) -> None:
        try:
            await self._redis.hset(self._prefix + key, "probe_until", "0")
        except Exception:  # the probe's lease runs out by itself
            await self._fallback.release_probe(key)

    async def take(self, key: str, rate: float, burst: int, now: float) -> float:
        return float(await self._run(self._take, key, [now, rate, burst], lambda: self._fallback.take(key, rate, burst, now)))

    async def close(self) -> None:
        await self._redis.aclose()


def open_store(settings: ResilienceSettings) -> LocalStore | RedisStore:
    return RedisStore(settings.redis_url, settings.redis_key_prefix) if settings.redis_url else LocalStore()


def retry_after(seconds: float) -> int:
    """Whole seconds for Retry-After and RetryInfo: never 0 while something is refused."""
    return max(1, math.ceil(seconds))
