"""The reference's external Auth service (auth.AuthService/ValidateInternalAccess),
played in the test process on 127.0.0.1:<free port>, in a thread pool.

Like the real one, it authenticates its own caller first: the `x-api-key` metadata
must be one of `app_keys` (else `app_key_refusal`, UNAUTHENTICATED unless told, whatever
key was asked about), then
answers for the key asked about from `keys`: (service_name, allowed_access), or a
status code to refuse it with; keys it does not know are NOT_FOUND. `delays` holds
keys it is slow to answer. Every call is recorded."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc

from payments_svc.gen import auth_pb2, auth_pb2_grpc

Answer = tuple[str, list[str]] | grpc.StatusCode


class FakeAuth(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, keys: dict[str, Answer], *, app_keys: set[str], delays: dict[str, float] | None = None,
                 app_key_refusal: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED):
        self.keys = keys
        self.app_keys = app_keys
        self.app_key_refusal = app_key_refusal
        self.delays = delays or {}
        self.calls: list[tuple[str, tuple[str, ...]]] = []  # (api_key asked about, x-api-key values sent)
        self._lock = threading.Lock()
        self.server = grpc.server(ThreadPoolExecutor(64))
        auth_pb2_grpc.add_AuthServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ValidateInternalAccess(self, request, context):
        sent = tuple(v for k, v in context.invocation_metadata() if k == "x-api-key")
        with self._lock:
            self.calls.append((request.api_key, sent))
        if len(sent) != 1 or sent[0] not in self.app_keys:
            context.abort(self.app_key_refusal, "invalid x-api-key")
        if request.api_key in self.delays:
            time.sleep(self.delays[request.api_key])
        answer = self.keys.get(request.api_key, grpc.StatusCode.NOT_FOUND)
        if isinstance(answer, grpc.StatusCode):
            context.abort(answer, "api key rejected by the fake")
        service_name, allowed = answer
        return auth_pb2.ValidateInternalAccessResponse(service_name=service_name, allowed_access=allowed)

    def count(self, api_key: str) -> int:
        with self._lock:
            return Counter(key for key, _ in self.calls)[api_key]

    def stop(self) -> None:
        self.server.stop(None).wait(10)
