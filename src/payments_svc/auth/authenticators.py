"""Turn an API key into a Caller, with the built-in key table or the external Auth
service. Errors: UnauthenticatedError (bad key), PermissionDeniedError (the key has
no access to this service), ServiceUnavailableError (the auth backend is down:
never reported as a bad key)."""

from __future__ import annotations

import hashlib
from typing import Protocol

import grpc

from ..db.engine import Database
from ..domain.errors import PermissionDeniedError, ServiceUnavailableError, UnauthenticatedError
from ..gen import auth_pb2, auth_pb2_grpc
from .cache import TTLCache
from .caller import Caller
from .keys import ApiKeyRepository

INVALID_KEY = "invalid or expired api key"


class Authenticator(Protocol):
    async def authenticate(self, api_key: str) -> Caller: ...

    async def close(self) -> None: ...


class CachingAuthenticator:
    """Remembers the Caller of a key for the TTL, so a key is validated once per TTL,
    not once per request. Refusals are not remembered."""

    def __init__(self, inner: Authenticator, ttl_seconds: float):
        self._inner = inner
        self._cache: TTLCache[Caller] = TTLCache(ttl_seconds)

    async def authenticate(self, api_key: str) -> Caller:
        key = hashlib.sha256(api_key.encode()).hexdigest()  # clear keys are not kept in memory
        caller = self._cache.get(key)
        if caller is None:
            caller = await self._inner.authenticate(api_key)
            self._cache.put(key, caller)
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


class ExternalAuthenticator:
    """The reference's auth.AuthService/ValidateInternalAccess. A key is granted
    other callers by allowed_access entries "<service>:caller:<name>" (or ":caller:*")."""

    def __init__(self, address: str, *, app_api_key: str, service_name: str, timeout_seconds: float):
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = auth_pb2_grpc.AuthServiceStub(self._channel)
        self._app_api_key = app_api_key
        self._service_name = service_name
        self._timeout = timeout_seconds

    async def authenticate(self, api_key: str) -> Caller:
        try:
            response = await self._stub.ValidateInternalAccess(
                auth_pb2.ValidateInternalAccessRequest(api_key=api_key),
                metadata=(("x-api-key", self._app_api_key),),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND):
                raise UnauthenticatedError(INVALID_KEY) from None
            # Anything else (down, slow, or refusing our own APP_API_KEY) is our problem, not the caller's key.
            raise ServiceUnavailableError("authentication service unavailable; retry later") from None
        if self._service_name not in response.allowed_access:
            raise PermissionDeniedError("forbidden")
        prefix = f"{self._service_name}:caller:"
        acts_for = frozenset(a[len(prefix):] for a in response.allowed_access if a.startswith(prefix))
        return Caller(response.service_name, acts_for)

    async def close(self) -> None:
        await self._channel.close()
