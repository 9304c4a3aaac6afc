"""The PEP interceptor in a real second gRPC service, asking a real PDP on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import grpc.aio
import pytest
from conftest import free_port
from grpc_support import SERVICES_POLICY, make_config, running_server, write_policies

from pdp.client import AsyncPdpClient, PdpClient
from pdp.interceptor import (
    AsyncAuthorizationInterceptor,
    AuthorizationInterceptor,
    subject_from_metadata,
)


def echo_service() -> grpc.GenericRpcHandler:
    """test.Echo with a unary and a streaming method; bytes in, bytes out."""

    def ping(request: bytes, _context: grpc.ServicerContext) -> bytes:
        return b"pong:" + request

    def repeat(request: bytes, _context: grpc.ServicerContext) -> Iterator[bytes]:
        yield from (request, request)

    return grpc.method_handlers_generic_handler("test.Echo", {
        "Ping": grpc.unary_unary_rpc_method_handler(ping),
        "Secret": grpc.unary_unary_rpc_method_handler(ping),
        "Repeat": grpc.unary_stream_rpc_method_handler(repeat),
    })


def start_echo(pdp_target: str) -> tuple[grpc.Server, int, PdpClient]:
    pdp = PdpClient(pdp_target, timeout=2, attempts=1)
    server = grpc.server(
        futures.ThreadPoolExecutor(4),
        handlers=[echo_service()],
        interceptors=[AuthorizationInterceptor(pdp, subject_from_metadata("x-caller"))],
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port, pdp


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    folder = write_policies(tmp_path_factory.mktemp("p"), {"services.policy": SERVICES_POLICY})
    with running_server(make_config(folder)) as pdp_server:
        server, port, pdp = start_echo(f"127.0.0.1:{pdp_server.port}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
        server.stop(None)
        pdp.close()


def call(channel: grpc.Channel, method: str, caller: str | None) -> bytes:
    metadata = [("x-caller", caller)] if caller else []
    return channel.unary_unary(f"/test.Echo/{method}")(b"hi", metadata=metadata, timeout=5)


def test_allowed_call_goes_through(echo: grpc.Channel) -> None:
    assert call(echo, "Ping", "service:anyone") == b"pong:hi"
    assert call(echo, "Secret", "service:admin") == b"pong:hi"


def test_denied_call_is_permission_denied_with_the_reason(echo: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call(echo, "Secret", "service:anyone")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "no rule allows call on grpc:test.Echo/Secret" in err.value.details()


def test_call_without_identity_is_unauthenticated(echo: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call(echo, "Ping", None)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_streaming_methods_are_guarded_too(echo: grpc.Channel) -> None:
    repeat = echo.unary_stream("/test.Echo/Repeat")
    assert list(repeat(b"x", metadata=[("x-caller", "service:admin")], timeout=5)) == [b"x", b"x"]
    with pytest.raises(grpc.RpcError) as err:
        list(repeat(b"x", metadata=[("x-caller", "service:anyone")], timeout=5))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_pdp_down_fails_closed(tmp_path: Path) -> None:
    server, port, pdp = start_echo(f"127.0.0.1:{free_port()}")  # nothing listens there
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, \
                pytest.raises(grpc.RpcError) as err:
            call(channel, "Ping", "service:anyone")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "authorization unavailable" in err.value.details()
    finally:
        server.stop(None)
        pdp.close()


# ---- grpc.aio ----

def async_echo_service() -> grpc.GenericRpcHandler:
    async def ping(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return b"pong:" + request

    async def repeat(request: bytes, _context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for _ in range(2):
            yield request

    return grpc.method_handlers_generic_handler("test.Echo", {
        "Ping": grpc.unary_unary_rpc_method_handler(ping),
        "Secret": grpc.unary_unary_rpc_method_handler(ping),
        "Repeat": grpc.unary_stream_rpc_method_handler(repeat),
    })


def test_asyncio_interceptor(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p", {"services.policy": SERVICES_POLICY})

    async def scenario(pdp_port: int) -> list[object]:
        pdp = AsyncPdpClient(f"127.0.0.1:{pdp_port}", timeout=2, attempts=1)
        interceptor = AsyncAuthorizationInterceptor(pdp, subject_from_metadata("x-caller"))
        server = grpc.aio.server(handlers=[async_echo_service()], interceptors=[interceptor])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        results: list[object] = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            ping = channel.unary_unary("/test.Echo/Ping")
            secret = channel.unary_unary("/test.Echo/Secret")
            repeat = channel.unary_stream("/test.Echo/Repeat")
            results.append(await ping(b"hi", metadata=[("x-caller", "service:anyone")]))
            for call in (secret(b"hi", metadata=[("x-caller", "service:anyone")]),
                         ping(b"hi")):
                try:
                    await call
                except grpc.aio.AioRpcError as exc:
                    results.append(exc.code())
            admin = [("x-caller", "service:admin")]
            results.append([item async for item in repeat(b"x", metadata=admin)])
        await server.stop(None)
        await pdp.close()
        return results

    with running_server(make_config(folder)) as pdp_server:
        results = asyncio.run(scenario(pdp_server.port))
    assert results == [
        b"pong:hi", grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
        [b"x", b"x"],
    ]
