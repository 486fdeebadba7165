"""Turn an API key into a Caller, with the built-in key table or the external Auth
service. Errors: UnauthenticatedError (bad key), PermissionDeniedError (the key has
no access to this service), ServiceUnavailableError (the auth backend is down, or
refuses our own credentials: never reported as a bad key)."""

from __future__ import annotations

import hashlib
import time
from typing import Protocol

import grpc
import structlog

from ..db.engine import Database
from ..domain.errors import PermissionDeniedError, ServiceUnavailableError, UnauthenticatedError
from ..gen import auth_pb2, auth_pb2_grpc
from .cache import SingleFlight, TTLCache
from .caller import ANY_CALLER, Caller
from .keys import ApiKeyRepository

log = structlog.get_logger("payments.auth")

INVALID_KEY = "invalid or expired api key"
AUTH_UNAVAILABLE = "authentication service unavailable; retry later"

# The Auth channel retries a lost connection after 0.1 s, doubling up to 1 s: requests
# work again within about a second of Auth coming back. (gRPC's defaults grow the wait
# to two minutes, so a ten-second outage kept failing requests for ten more seconds.)
AUTH_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


class Authenticator(Protocol):
    async def authenticate(self, api_key: str) -> Caller: ...

    async def close(self) -> None: ...


class CachingAuthenticator:
    """Remembers the Caller of a key for the TTL, so a key is validated once per TTL,
    not once per request, and validates a key once at a time however many requests
    bring it (their answers, refusals included, are that one validation's). Refusals
    are not remembered."""

    def __init__(self, inner: Authenticator, ttl_seconds: float):
        self._inner = inner
        self._cache: TTLCache[Caller] = TTLCache(ttl_seconds)
        self._flights: SingleFlight[Caller] = SingleFlight()

    async def authenticate(self, api_key: str) -> Caller:
        key = hashlib.sha256(api_key.encode()).hexdigest()  # clear keys are not kept in memory
        caller = self._cache.get(key)
        if caller is None:
            caller = await self._flights.run(key, lambda: self._validate(key, api_key))
        return caller

    async def _validate(self, key: str, api_key: str) -> Caller:
        caller = await self._inner.authenticate(api_key)
        self._cache.put(key, caller)
        return caller

    async def close(self) -> None:
        await self._inner.close()


class GatewayGrants:
    """Callers named in PAYMENTS_GATEWAY_SERVICES act for any caller service: the
    gateways of the replaced service, which created and read payments for others
    (it had no caller scoping), keep working without grants in the key store."""

    def __init__(self, inner: Authenticator, gateway_services: frozenset[str]):
        self._inner = inner
        self._gateways = gateway_services

    async def authenticate(self, api_key: str) -> Caller:
        caller = await self._inner.authenticate(api_key)
        if caller.service_name in self._gateways and ANY_CALLER not in caller.acts_for:
            return Caller(caller.service_name, caller.acts_for | {ANY_CALLER}, key_id=caller.key_id)
        return caller

    async def close(self) -> None:
        await self._inner.close()


class BuiltinKeyAuthenticator:
    def __init__(self, db: Database):
        self._db = db

    async def authenticate(self, api_key: str) -> Caller:
        async with self._db.read() as conn:  # the database away: ServiceUnavailableError, never a bad key
            caller = await ApiKeyRepository(conn).find_active(api_key)
        if caller is None:
            raise UnauthenticatedError(INVALID_KEY)
        return caller

    async def close(self) -> None:
        pass


# What Auth answers for a key it refuses: the caller's, or our own APP_API_KEY.
_REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)


class ExternalAuthenticator:
    """The reference's auth.AuthService/ValidateInternalAccess. A key is granted
    other callers by allowed_access entries "<service>:caller:<name>" (or ":caller:*").

    Auth answers UNAUTHENTICATED (or NOT_FOUND, PERMISSION_DENIED) both for a caller's
    bad key and for our own APP_API_KEY (sent as x-api-key) when it no longer accepts
    it. The second is our
    misconfiguration and must not turn every caller away as if its key were bad: on a
    refusal, whether Auth still accepts APP_API_KEY is checked (by validating it; the
    answer is trusted for a while), and if it does not, callers get UNAVAILABLE and the
    log says why."""

    OWN_KEY_ACCEPTED_TRUST_SECONDS = 30.0
    OWN_KEY_REFUSED_TRUST_SECONDS = 5.0  # so a fix at Auth is noticed quickly (and logged at most this often)

    def __init__(self, address: str, *, app_api_key: str, service_name: str, timeout_seconds: float):
        self._address = address
        self._channel = grpc.aio.insecure_channel(address, options=AUTH_CHANNEL_OPTIONS)
        self._stub = auth_pb2_grpc.AuthServiceStub(self._channel)
        self._app_api_key = app_api_key
        self._service_name = service_name
        self._timeout = timeout_seconds
        self._own_key_accepted: bool | None = None
        self._own_key_checked_until = 0.0
        self._own_key_check: SingleFlight[bool | None] = SingleFlight()

    async def authenticate(self, api_key: str) -> Caller:
        try:
            response = await self._validate(api_key)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _REFUSED and await self._own_key_still_accepted():
                raise UnauthenticatedError(INVALID_KEY) from None
            # Anything else (down, slow, refusing our own APP_API_KEY) is our problem, not the caller's key.
            raise ServiceUnavailableError(AUTH_UNAVAILABLE) from None
        self._own_key_accepted_now()  # Auth answered for a key: it accepts ours
        if self._service_name not in response.allowed_access:
            raise PermissionDeniedError("forbidden")
        prefix = f"{self._service_name}:caller:"
        acts_for = frozenset(a[len(prefix):] for a in response.allowed_access if a.startswith(prefix))
        return Caller(response.service_name, acts_for, key_id="sha256:" + hashlib.sha256(api_key.encode()).hexdigest()[:12])

    async def _validate(self, api_key: str) -> auth_pb2.ValidateInternalAccessResponse:
        return await self._stub.ValidateInternalAccess(
            auth_pb2.ValidateInternalAccessRequest(api_key=api_key),
            metadata=(("x-api-key", self._app_api_key),),
            timeout=self._timeout,
        )

    async def _own_key_still_accepted(self) -> bool:
        """Whether Auth accepts APP_API_KEY (so a refusal was about the caller's key);
        False also when it cannot tell (Auth went away meanwhile)."""
        if time.monotonic() >= self._own_key_checked_until:
            await self._own_key_check.run("app", self._check_own_key)
        return bool(self._own_key_accepted)

    async def _check_own_key(self) -> bool | None:
        try:
            await self._validate(self._app_api_key)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _REFUSED:
                return None  # unavailable now: no verdict, ask again next time
            self._log_own_key_refused(exc)
            self._own_key_accepted = False
            self._own_key_checked_until = time.monotonic() + self.OWN_KEY_REFUSED_TRUST_SECONDS
            return False
        self._own_key_accepted_now()
        return True

    def _own_key_accepted_now(self) -> None:
        if self._own_key_accepted is False:
            log.warning("auth_accepts_app_api_key_again", auth_service=self._address)
        self._own_key_accepted = True
        self._own_key_checked_until = time.monotonic() + self.OWN_KEY_ACCEPTED_TRUST_SECONDS

    def _log_own_key_refused(self, exc: grpc.aio.AioRpcError) -> None:
        log.error("auth_refuses_app_api_key", auth_service=self._address, code=exc.code().name, details=exc.details(),
                  message="the Auth service refuses this service's APP_API_KEY: every caller gets UNAVAILABLE (503) "
                          "until APP_API_KEY is a key Auth accepts (check the Secret, or the key at Auth)")

    async def close(self) -> None:
        await self._channel.close()
