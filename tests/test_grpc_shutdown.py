"""Graceful shutdown: stop accepting, finish the calls in flight, exit 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_support import PdpProcess, make_config, request, running_server, stub, write_policies

from pdp.v1 import decision_pb2 as pb

SLOW = "/test.Slow/Wait"


def slow_handler(entered: threading.Semaphore, release: threading.Event) -> grpc.GenericRpcHandler:
    def wait(_request: bytes, _context: grpc.ServicerContext) -> bytes:
        entered.release()
        release.wait(10)
        return b"done"

    return grpc.method_handlers_generic_handler(
        "test.Slow", {"Wait": grpc.unary_unary_rpc_method_handler(wait)}
    )


def refused_soon(port: int) -> grpc.StatusCode:
    """The status of the first new call the stopping server refuses."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        channel, decisions = stub(port)
        try:
            decisions.Check(request(), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
        finally:
            channel.close()
        time.sleep(0.01)
    raise AssertionError("new calls were still accepted")


def test_stop_finishes_the_calls_in_flight_and_refuses_new_ones(tmp_path: Path) -> None:
    entered, release = threading.Semaphore(0), threading.Event()
    config = make_config(write_policies(tmp_path / "p"))
    results: list[bytes | str] = []
    with running_server(config, [slow_handler(entered, release)]) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        wait = channel.unary_unary(SLOW)
        futures = [wait.future(b"", timeout=20) for _ in range(3)]
        for _ in futures:
            assert entered.acquire(timeout=10)
        stopper = threading.Thread(target=server.stop, args=(10.0,))
        stopper.start()
        assert refused_soon(server.port) in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
        assert not any(f.done() for f in futures)
        release.set()
        results = [f.result() for f in futures]
        stopper.join(15)
        channel.close()
    assert results == [b"done"] * 3


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_server_cleanly_under_load(tmp_path: Path, sig: signal.Signals) -> None:
    folder = write_policies(tmp_path / "p")
    calls: list[tuple[float, float, grpc.StatusCode]] = []  # start, end, code
    with PdpProcess(["--policies", str(folder), "--listen", "127.0.0.1:0"]) as server:
        port = server.port
        server.msg("policy loaded")
        started = threading.Event()

        def load() -> None:
            channel, decisions = stub(port)
            entry = request(resource_properties={"owner": "alice", "tags": list("abcdefgh")})
            batch = pb.BatchCheckRequest(requests=[entry] * 1000)
            code = grpc.StatusCode.OK
            while code == grpc.StatusCode.OK:
                begin = time.monotonic()
                try:
                    decisions.BatchCheck(batch, timeout=10)
                    started.set()
                except grpc.RpcError as exc:
                    code = exc.code()
                calls.append((begin, time.monotonic(), code))
            channel.close()

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        assert started.wait(10)
        signalled = time.monotonic()
        assert server.stop(sig) == 0
        for t in threads:
            t.join(20)
    # A call under way when the signal came finishes; later ones may be refused
    # (UNAVAILABLE, or CANCELLED when it reached a connection that is closing).
    in_flight = [c for c in calls if c[0] < signalled - 0.005]
    assert all(code == grpc.StatusCode.OK for _, _, code in in_flight)
    assert {code for _, _, code in calls} <= {
        grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    assert [e["msg"] for e in server.logs][-2:] == ["shutting down", "stopped"]
