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

`AsyncAuthorizationInterceptor` (with an AsyncPdpClient) does the same for
`grpc.aio` servers.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
import grpc.aio

from pdp.client import AsyncPdpClient, PdpClient, make_request
from pdp.v1 import decision_pb2

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


@dataclass(frozen=True, slots=True)
class _Rules:
    """What the sync and asyncio interceptors share: the question and the verdict."""

    identify: Identify
    action: str
    resource_type: str
    skip: Collection[str]

    def question(self, method: str, caller: Caller) -> decision_pb2.CheckRequest:
        return make_request(
            caller.subject, self.action, f"{self.resource_type}:{method.lstrip('/')}",
            subject_properties=caller.properties, token=caller.token, context={"method": method},
        )


Refusal = tuple[grpc.StatusCode, str]
NO_CALLER: Refusal = (grpc.StatusCode.UNAUTHENTICATED, "no caller identity")


def _unavailable(exc: grpc.RpcError) -> Refusal:
    return grpc.StatusCode.UNAVAILABLE, f"authorization unavailable: {exc.code()}"


def _verdict(answer: decision_pb2.CheckResponse) -> Refusal | None:
    if answer.allowed:
        return None
    why = "; ".join(f"{r.rule}: {r.text}" if r.text else r.rule for r in answer.reasons)
    return grpc.StatusCode.PERMISSION_DENIED, f"denied by policy: {why}"


class AuthorizationInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """For `grpc.server(...)`; asks the PDP with a blocking PdpClient."""

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
        self._rules = _Rules(identify, action, resource_type, skip)
        self._timeout = timeout

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or details.method in self._rules.skip:
            return handler
        method: str = details.method
        return _guarded(handler, lambda context: self._authorize(method, context))

    def _authorize(self, method: str, context: grpc.ServicerContext) -> None:
        refusal = self._refusal(method, context)
        if refusal is not None:
            _abort(context, *refusal)

    def _refusal(self, method: str, context: grpc.ServicerContext) -> Refusal | None:
        caller = self._rules.identify(context)
        if caller is None:
            return NO_CALLER
        try:
            answer = self._pdp.check_request(self._rules.question(method, caller),
                                             timeout=self._timeout)
        except grpc.RpcError as exc:
            return _unavailable(exc)
        return _verdict(answer)


class AsyncAuthorizationInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """For `grpc.aio.server(...)` with async handlers; asks the PDP with an AsyncPdpClient."""

    def __init__(
        self,
        pdp: AsyncPdpClient,
        identify: Identify,
        *,
        action: str = "call",
        resource_type: str = "grpc",
        skip: Collection[str] = HEALTH_METHODS,
        timeout: float | None = None,
    ) -> None:
        self._pdp = pdp
        self._rules = _Rules(identify, action, resource_type, skip)
        self._timeout = timeout

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or details.method in self._rules.skip:
            return handler
        method: str = details.method
        return _guarded_async(handler, lambda context: self._authorize(method, context))

    async def _authorize(self, method: str, context: grpc.aio.ServicerContext) -> None:
        refusal = await self._refusal(method, context)
        if refusal is not None:
            await context.abort(*refusal)  # raises

    async def _refusal(self, method: str, context: grpc.aio.ServicerContext) -> Refusal | None:
        caller = self._rules.identify(context)
        if caller is None:
            return NO_CALLER
        try:
            answer = await self._pdp.check_request(self._rules.question(method, caller),
                                                   timeout=self._timeout)
        except grpc.RpcError as exc:
            return _unavailable(exc)
        return _verdict(answer)


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


AsyncCheck = Callable[[Any], Awaitable[None]]


def _guarded_async(handler: Any, check: AsyncCheck) -> Any:
    """As _guarded, for grpc.aio handlers (coroutines and async generators)."""
    if handler.unary_unary:
        make, behavior = grpc.unary_unary_rpc_method_handler, _unary_async(handler.unary_unary, check)
    elif handler.unary_stream:
        make, behavior = grpc.unary_stream_rpc_method_handler, _stream_async(handler.unary_stream, check)
    elif handler.stream_unary:
        make, behavior = grpc.stream_unary_rpc_method_handler, _unary_async(handler.stream_unary, check)
    else:
        make, behavior = (grpc.stream_stream_rpc_method_handler,
                          _stream_async(handler.stream_stream, check))
    return make(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _unary_async(behavior: Callable[[Any, Any], Any], check: AsyncCheck) -> Callable[[Any, Any], Any]:
    async def guarded(request: Any, context: Any) -> Any:
        await check(context)
        return await behavior(request, context)

    return guarded


def _stream_async(
    behavior: Callable[[Any, Any], Any], check: AsyncCheck
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def guarded(request: Any, context: Any) -> AsyncIterator[Any]:
        await check(context)
        result = behavior(request, context)
        if inspect.isasyncgen(result):
            async for item in result:
                yield item
        else:  # a coroutine that writes with context.write()
            await result

    return guarded
