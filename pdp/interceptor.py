"""A policy enforcement point for Python gRPC services: a server interceptor.

For each incoming RPC it asks the PDP whether the caller may call that
method: subject = `identify(context)`, action = `call` (configurable),
resource = `grpc:<package.Service>/<Method>`, context = {"method": ...}.
A DENY aborts the RPC with PERMISSION_DENIED and the reasons; a PDP that
cannot answer aborts it with UNAVAILABLE (fail closed). A policy might say:

    allow call on grpc:shop.Orders/Get*
    allow call on grpc:shop.Orders/** when subject.team == "orders"

    server = grpc.server(pool, interceptors=[
        AuthorizationInterceptor(PdpClient("pdp:50051"), subject_from_metadata("x-caller")),
    ])
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc

from pdp.client import PdpClient, make_request

HEALTH_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as the PDP should see it."""

    subject: str  # TYPE:ID
    properties: dict[str, Any] = field(default_factory=dict)
    token: str | None = None


Identify = Callable[[grpc.ServicerContext], Caller | None]


def subject_from_metadata(key: str = "x-pdp-subject") -> Identify:
    """The subject `TYPE:ID` from a request header set by a trusted proxy in front."""

    def identify(context: grpc.ServicerContext) -> Caller | None:
        value = next((v for k, v in context.invocation_metadata() if k == key), None)
        return Caller(value) if isinstance(value, str) and ":" in value else None

    return identify


def subject_from_peer(subject_type: str = "service") -> Identify:
    """The subject from the caller's TLS client certificate (URI SAN such as SPIFFE, or CN)."""

    def identify(context: grpc.ServicerContext) -> Caller | None:
        identities = context.peer_identities()
        return Caller(f"{subject_type}:{identities[0].decode()}") if identities else None

    return identify


class AuthorizationInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        pdp: PdpClient,
        identify: Identify,
        *,
        action: str = "call",
        resource_type: str = "grpc",
        skip: Collection[str] = HEALTH_METHODS,
        timeout: float | None = None,
    ) -> None:
        self._pdp = pdp
        self._identify = identify
        self._action = action
        self._resource_type = resource_type
        self._skip = skip
        self._timeout = timeout

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or details.method in self._skip:
            return handler
        method: str = details.method
        return _guarded(handler, lambda context: self._authorize(method, context))

    def _authorize(self, method: str, context: grpc.ServicerContext) -> None:
        caller = self._identify(context)
        if caller is None:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, "no caller identity")
        request = make_request(
            caller.subject, self._action, f"{self._resource_type}:{method.lstrip('/')}",
            subject_properties=caller.properties, token=caller.token, context={"method": method},
        )
        try:
            answer = self._pdp.check_request(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            _abort(context, grpc.StatusCode.UNAVAILABLE, f"authorization unavailable: {exc.code()}")
        if not answer.allowed:
            why = "; ".join(f"{r.rule}: {r.text}" if r.text else r.rule for r in answer.reasons)
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, f"denied by policy: {why}")


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)  # raises
    raise AssertionError("unreachable")


Check = Callable[[grpc.ServicerContext], None]


def _guarded(handler: Any, check: Check) -> Any:
    """The same handler, with `check` run before its behavior (of any of the four kinds)."""
    if handler.unary_unary:
        make, behavior = grpc.unary_unary_rpc_method_handler, _unary(handler.unary_unary, check)
    elif handler.unary_stream:
        make, behavior = grpc.unary_stream_rpc_method_handler, _stream(handler.unary_stream, check)
    elif handler.stream_unary:
        make, behavior = grpc.stream_unary_rpc_method_handler, _unary(handler.stream_unary, check)
    else:
        make, behavior = grpc.stream_stream_rpc_method_handler, _stream(handler.stream_stream, check)
    return make(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _unary(behavior: Callable[[Any, Any], Any], check: Check) -> Callable[[Any, Any], Any]:
    def guarded(request: Any, context: grpc.ServicerContext) -> Any:
        check(context)
        return behavior(request, context)

    return guarded


def _stream(
    behavior: Callable[[Any, Any], Iterator[Any]], check: Check
) -> Callable[[Any, Any], Iterator[Any]]:
    def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        check(context)
        yield from behavior(request, context)

    return guarded
