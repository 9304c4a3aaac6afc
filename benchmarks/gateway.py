"""Gateway benchmark: what the PDP adds to a request behind Envoy, and AuthZEN HTTP throughput.

Processes, all on 127.0.0.1: a small Python backend (HTTP/1.1 keep-alive), the
PDP (`build_server` with an HS256 token issuer, the gateway example policies
and OpenAPI templates, the AuthZEN HTTP API on), and the real Envoy
(examples/envoy/envoy.yaml, `--concurrency 2`) twice: with the ext_authz filter
and, as the baseline, with that block removed. The load generator is this
process: N threads, each with one keep-alive connection, sending for a fixed
time and timing every request (perf_counter_ns); rows show requests/s, p50
and p99 latency, and the share of answers that were not the expected status.

- backend direct: the backend alone, for reference;
- Envoy, no ext_authz: the baseline;
- Envoy + PDP, ALLOW: a valid token on an allowed route (200 from the backend);
- Envoy + PDP, DENY: a viewer deleting a todo (403 from the PDP via Envoy);
- AuthZEN evaluation: POST /access/v1/evaluation, one decision per request;
- AuthZEN evaluations x25: the 25 gateway cases in one POST /access/v1/evaluations.

The client is Python (no wrk on these machines), so absolute req/s are bounded
by it and by the core count; the difference between the Envoy rows is the
PDP's cost per request.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt

NAME = "gateway"
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "envoy"
POLICIES = ROOT / "examples" / "authzen-gateway"
ISSUER, AUDIENCE, SECRET = "https://issuer.bench", "pdp", b"gateway-benchmark-secret-32-bytes-long!!"
RICK = "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"
BETH = "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"

BACKEND = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    do_POST = do_PUT = do_DELETE = do_GET
    def log_message(self, *a):
        pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
s.daemon_threads = True
print(s.server_address[1], flush=True)
s.serve_forever()
"""

PDP = """
import sys, time
from pdp import config as settings
from pdp.http_server import HttpServer
from pdp.identity import IdentityConfig, IdentityResolver, IssuerConfig
from pdp.server import build_server
issuer = IssuerConfig(issuer=sys.argv[1], audiences=(sys.argv[2],), hmac_secret=sys.argv[3].encode(),
                      algorithms=("HS256",), subject_type="identity")
identity = IdentityResolver(IdentityConfig(issuers=(issuer,)))
config = settings.load(cli={("server", "listen"): "127.0.0.1:0", ("policy", "dir"): sys.argv[4],
                            ("policy", "watch"): "false", ("envoy", "openapi_file"): sys.argv[5],
                            ("http", "listen"): "127.0.0.1:0"})
server = build_server(config, identity=identity)
server.grpc_server.start()
server.reloader.reload("bench")
http = HttpServer(config, server.service, identity)
http.start()
print(server.port, http.port, flush=True)
sys.stdin.read()
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("gateway")
    group.add_argument("--gateway-seconds", type=float, default=None,
                       help="seconds of load per row (default 6; 2 with --quick)")
    group.add_argument("--gateway-connections", type=int, default=8,
                       help="client threads, one keep-alive connection each (default 8)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _token(subject: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@contextlib.contextmanager
def _process(args: list[str]) -> Iterator[list[str]]:
    """A child that prints its ports on its first line; stopped by closing its stdin."""
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None and proc.stdin is not None
    try:
        yield proc.stdout.readline().split()
    finally:
        proc.stdin.close()
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def _envoy(workdir: Path, backend: int, pdp: int, ext_authz: bool) -> Iterator[int]:
    text = (EXAMPLE / "envoy.yaml").read_text()
    if not ext_authz:
        start, end = text.index("# --- ext_authz begin"), text.index("# --- ext_authz end")
        text = text[:start] + text[end:]
    listen, admin = _free_port(), _free_port()
    for old, new in ((10000, listen), (9901, admin), (8080, backend), (50051, pdp)):
        text = text.replace(f"port_value: {old}}}", f"port_value: {new}}}")
    config = workdir / f"envoy-{ext_authz}.yaml"
    config.write_text(text)
    envoy = str(Path(sys.executable).parent / "envoy")
    proc = subprocess.Popen([envoy, "-c", str(config), "--disable-hot-restart", "--log-level", "error",
                             "--concurrency", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(admin, proc)
        yield listen
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_ready(admin: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"envoy exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=1)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("envoy not ready")


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    body: bytes | None
    headers: Mapping[str, str]
    expect: int
    units: int = 1  # decisions per request (a batch counts its entries)


@dataclass(frozen=True, slots=True)
class Result:
    requests: int
    seconds: float
    latencies_us: list[float]
    unexpected: int

    def row(self, label: str, units: int) -> str:
        lat = sorted(self.latencies_us)
        p50 = statistics.median(lat) if lat else 0.0
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0
        rate = self.requests / self.seconds
        bad = 100.0 * self.unexpected / max(1, self.requests)
        unit_rate = f"{rate * units:,.0f}" if units else ""
        return f"| {label} | {rate:,.0f} | {unit_rate} | {p50 / 1000:.2f} | {p99 / 1000:.2f} | {bad:.1f}% |"


def _load(port: int, call: Call, connections: int, seconds: float) -> Result:
    latencies: list[list[float]] = [[] for _ in range(connections)]
    unexpected = [0] * connections
    start = threading.Barrier(connections + 1)
    stop_at: list[float] = []

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.connect()
        # http.client writes headers and body apart: without NODELAY, Nagle adds 40 ms.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start.wait()
        mine, ns = latencies[i], time.perf_counter_ns
        while time.perf_counter() < stop_at[0]:
            t0 = ns()
            conn.request(call.method, call.path, body=call.body, headers=dict(call.headers))
            resp = conn.getresponse()
            resp.read()
            mine.append((ns() - t0) / 1000)
            if resp.status != call.expect:
                unexpected[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    stop_at.append(t0 + seconds)
    start.wait()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    flat = [x for part in latencies for x in part]
    return Result(len(flat), took, flat, sum(unexpected))


def _calls() -> dict[str, Call]:
    rick = {"authorization": "Bearer " + _token(RICK)}
    beth = {"authorization": "Bearer " + _token(BETH)}
    shared = Path(os.environ.get("PDP_SHARED_DIR") or ROOT.parent / "shared") / "authzen"
    cases_file = shared / "gateway-decisions.json"
    single = {"subject": {"type": "identity", "id": RICK}, "action": {"name": "GET"},
              "resource": {"type": "route", "id": "/todos"}}
    entries = ([c["request"] for c in json.loads(cases_file.read_text())["evaluation"]]
               if cases_file.is_file() else [single] * 25)
    batch = {"evaluations": entries}
    json_headers = {"content-type": "application/json"}
    return {
        "allow": Call("GET", "/todos", None, rick, 200),
        "deny": Call("DELETE", "/todos/42", None, beth, 403),
        "evaluation": Call("POST", "/access/v1/evaluation", json.dumps(single).encode(), json_headers, 200),
        "batch": Call("POST", "/access/v1/evaluations", json.dumps(batch).encode(), json_headers, 200,
                      units=len(batch["evaluations"])),
    }


def run(args: argparse.Namespace) -> list[str]:
    seconds = args.gateway_seconds or (2.0 if args.quick else 6.0)
    conns = args.gateway_connections
    calls = _calls()
    results: list[tuple[str, Result, int]] = []

    def measure(label: str, port: int, call: Call, decides: bool = True) -> None:
        """One connection (the latency a request sees), then `conns` (throughput)."""
        for n in (1, conns):
            units = call.units if decides else 0
            results.append((f"{label}, {n} conn", _load(port, call, n, seconds), units))

    with tempfile.TemporaryDirectory() as tmp, \
            _process([sys.executable, "-c", BACKEND]) as (backend,), \
            _process([sys.executable, "-c", PDP, ISSUER, AUDIENCE, SECRET.decode(), str(POLICIES),
                      str(EXAMPLE / "openapi.json")]) as (grpc_port, http_port):
        b, g, h = int(backend), int(grpc_port), int(http_port)
        measure("backend direct", b, calls["allow"], decides=False)
        with _envoy(Path(tmp), b, g, ext_authz=False) as port:
            measure("Envoy, no ext_authz", port, calls["allow"], decides=False)
        with _envoy(Path(tmp), b, g, ext_authz=True) as port:
            measure("Envoy + PDP, ALLOW (200)", port, calls["allow"])
            measure("Envoy + PDP, DENY (403)", port, calls["deny"])
        measure("AuthZEN evaluation", h, calls["evaluation"])
        measure(f"AuthZEN evaluations x{calls['batch'].units}", h, calls["batch"])
    lines = [
        f"## Gateways: Envoy ext_authz and AuthZEN HTTP{' (--quick)' if args.quick else ''}", "",
        f"{seconds:g} s per row, {os.cpu_count()} cores, everything on 127.0.0.1 (client, backend, "
        "PDP, Envoy share the cores); N conn = N client threads with a keep-alive connection each.", "",
        "| path | requests/s | decisions/s | p50 ms | p99 ms | unexpected status |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [result.row(label, units) for label, result, units in results]
    lines.append("")
    for n in (1, conns):
        base = next(r for label, r, _ in results if label == f"Envoy, no ext_authz, {n} conn")
        allow = next(r for label, r, _ in results if label == f"Envoy + PDP, ALLOW (200), {n} conn")
        lines.append(f"- {n} conn: {_cost(base, allow)}")
    return lines


def _cost(base: Result, allow: Result) -> str:
    def p50(r: Result) -> float:
        return statistics.median(r.latencies_us) / 1000 if r.latencies_us else 0.0

    change = 100 * (allow.requests / allow.seconds) / max(1e-9, base.requests / base.seconds) - 100
    return (f"the PDP in the path adds {p50(allow) - p50(base):.2f} ms at the median "
            f"({p50(base):.2f} -> {p50(allow):.2f} ms); throughput changes by {change:+.0f}%.")
